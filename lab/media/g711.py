"""G.711 mu-law (PCMU, RTP payload type 0, 8000 Hz, 160 samples per 20 ms), both ways.

For the numbers that ask Meta to offer G.711 too (`audio.additional_codecs`) and for a business
side that speaks PCMU only. numpy rather than the standard library's `audioop`, which Python
3.11 deprecates and 3.13 removes.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PCMU_PT = 0
PCMU_RATE = 8000  # the sample rate and the RTP clock
PCMU_FRAME_SAMPLES = PCMU_RATE * 20 // 1000  # 20 ms: one byte per sample


def mu_law(samples: NDArray[np.int16]) -> bytes:
    """G.711 mu-law of int16 samples (ITU-T G.711, the BIAS/segment form)."""
    values = samples.astype(np.int32)
    sign = (values < 0).astype(np.int32) << 7
    magnitude = np.minimum(np.where(values < 0, -values - 1, values), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    encoded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return encoded


def _decode_table() -> NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    magnitude = (((codes & 0x0F) << 3) + 0x84) << exponent
    values = np.where(codes & 0x80, 0x84 - magnitude, magnitude - 0x84)
    return values.astype(np.int16)


_DECODED = _decode_table()


def mu_law_decode(payload: bytes) -> bytes:
    """PCMU bytes to little-endian int16 PCM at 8000 Hz (one sample per byte)."""
    return _DECODED[np.frombuffer(payload, dtype=np.uint8)].astype("<i2").tobytes()


class PcmuEncoder:
    """The OpusEncoder's interface for PCMU: 20 ms of int16 PCM at 8000 Hz to one payload."""

    def encode(self, pcm: bytes) -> bytes:
        return mu_law(np.frombuffer(pcm, dtype="<i2"))


class PcmuDecoder:
    def decode(self, payload: bytes) -> bytes:
        return mu_law_decode(payload)

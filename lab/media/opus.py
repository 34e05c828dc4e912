"""Opus, as Meta negotiates it: `opus/48000/2` with `useinbandfec=1`, 20 ms frames.

The RTP clock is always 48 kHz and the `/2` only says the decoder may be stereo (RFC 7587);
the peer sends mono and decodes everything to mono, as a WhatsApp client on a phone does.
libopus through opuslib (a ctypes binding to Debian's libopus0, the library FreeSWITCH's
mod_opus uses too).
"""

from __future__ import annotations

from typing import Any

import opuslib  # type: ignore[import-untyped]

SAMPLE_RATE = 48000
CLOCK_RATE = 48000  # RFC 7587: always 48000 in SDP and RTP timestamps
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
MAX_FRAME_SAMPLES = SAMPLE_RATE * 120 // 1000  # the longest Opus packet


class OpusEncoder:
    """Mono 48 kHz VoIP encoder with in-band FEC on, as Meta's `useinbandfec=1` asks."""

    def __init__(self, bitrate: int = 32000) -> None:
        self._encoder: Any = opuslib.Encoder(SAMPLE_RATE, 1, opuslib.APPLICATION_VOIP)
        self._encoder.bitrate = bitrate
        # opuslib 3.0.1's `inband_fec` setter drops its value (TypeError); call the ctl itself
        opuslib.api.encoder.encoder_ctl(self._encoder.encoder_state, opuslib.api.ctl.set_inband_fec, 1)

    def encode(self, pcm: bytes) -> bytes:
        """One 20 ms frame of int16 mono PCM (`FRAME_SAMPLES` samples) to one Opus packet."""
        data: bytes = self._encoder.encode(pcm, FRAME_SAMPLES)
        return data


class OpusDecoder:
    """Decodes mono or stereo Opus packets to int16 mono 48 kHz PCM."""

    def __init__(self) -> None:
        self._decoder: Any = opuslib.Decoder(SAMPLE_RATE, 1)

    def decode(self, packet: bytes) -> bytes:
        """One Opus packet to PCM; raises ValueError for a packet libopus refuses."""
        try:
            pcm: bytes = self._decoder.decode(packet, MAX_FRAME_SAMPLES)
        except opuslib.OpusError as error:
            raise ValueError(f"Opus packet refused: {error}") from None
        return pcm

"""The business side of a call over plain RTP, as a stock FreeSWITCH behind rtpengine plays it.

With [media] anchor = "rtpengine" the business never sees SRTP, ICE or DTLS: it gets a plain
``RTP/AVP`` offer or answer from rtpengine and sends Opus in plain RTP. This party answers (or
offers) such an SDP, and once started sends a tone in 20 ms Opus frames at once (the business's
"maiden" packet that Meta waits for) and names the tone it hears. It is strict about the SDP
only where a plain profile could go wrong: an offer with SRTP, ICE or a fingerprint is refused,
since a FreeSWITCH profile without DTLS settings would not take it either.

Used with lab/media/sip_uas.py (which calls ``answer``, ``start`` and ``on_media_timeout``).

``lean=True`` (bench-rtpengine's load generator) sends one second of the tone encoded once and
looped (lab/media/peer.py's ``lean_frames``) and decodes nothing (no ``heard_hz``): Opus in
Python would cost more CPU than rtpengine's side of the call. Loss and interarrival jitter of
what arrives are counted either way, from the RTP headers (lab/media/receive_stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.media.opus import (
    CLOCK_RATE,
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
)
from lab.media.peer import LEAN_FRAMES, lean_frames
from lab.media.receive_stats import ReceiveStats
from lab.media.rtp import RtpHeader, parse_rtp
from lab.media.sdp import OPUS_PT, TELEPHONE_EVENT_PT, SdpError, parse_sdp
from lab.media.tone import ToneGenerator, dominant_frequency

PLAIN_PROFILE = "RTP/AVP"
FORBIDDEN = ("a=fingerprint", "a=crypto", "a=ice-ufrag", "a=candidate")


@dataclass
class PlainReport:
    packets_sent: int = 0
    packets_received: int = 0
    first_packet_received_ms: float | None = None  # after start()
    heard_hz: float | None = None
    packets_expected: int = 0  # from the sender's RTP sequence numbers (RFC 3550 A.3)
    packets_lost: int = 0
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter of the Opus stream received


class PlainRtpPeer(asyncio.DatagramProtocol):
    def __init__(self, *, tone_hz: float = 600.0, address: str = "127.0.0.1",
                 lean: bool = False) -> None:
        self.address = address
        self.lean = lean
        self._lean_frames = lean_frames(tone_hz) if lean else ()
        self.receive_stats = ReceiveStats(CLOCK_RATE)
        self.port = 0
        self.tone = ToneGenerator(tone_hz, SAMPLE_RATE)
        self.report = PlainReport()
        self.on_media_timeout: Callable[[str], None] | None = None  # SipUas sets it; never fired
        self._encoder = OpusEncoder()
        self._decoder = OpusDecoder()
        self._heard = bytearray()
        self._remote: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._started_at = 0.0

    async def open(self) -> PlainRtpPeer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.address, 0))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    def sdp(self) -> str:
        lines = ["v=0", f"o=lab-business 1 1 IN IP4 {self.address}", "s=lab business",
                 f"c=IN IP4 {self.address}", "t=0 0",
                 f"m=audio {self.port} {PLAIN_PROFILE} {OPUS_PT} {TELEPHONE_EVENT_PT}",
                 f"a=rtpmap:{OPUS_PT} opus/48000/2", f"a=fmtp:{OPUS_PT} useinbandfec=1",
                 f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000", "a=sendrecv"]
        return "\r\n".join(lines) + "\r\n"

    def answer(self, offer: str) -> str:
        """Our plain answer to rtpengine's plain offer; SdpError if it is not plain RTP."""
        self.accept(offer)
        return self.sdp()

    def accept(self, sdp: str) -> None:
        for marker in FORBIDDEN:
            if marker in sdp:
                raise SdpError(f"{marker} in what should be a plain RTP/AVP SDP")
        remote = parse_sdp(sdp)
        if remote.profile != PLAIN_PROFILE:
            raise SdpError(f"profile {remote.profile!r}, not {PLAIN_PROFILE}")
        if remote.payloads.get("opus/48000/2") is None:
            raise SdpError("no opus/48000/2 in the SDP")
        self._remote = (remote.address, remote.port)

    def start(self) -> None:
        if self._sender is None:
            self._started_at = time.monotonic()
            self._sender = asyncio.create_task(self._send())

    async def _send(self) -> None:
        assert self._transport is not None and self._remote is not None
        ssrc = int.from_bytes(os.urandom(4), "big")
        sequence = int.from_bytes(os.urandom(2), "big")
        timestamp = int.from_bytes(os.urandom(4), "big")
        next_at = time.monotonic()
        while True:
            if self.lean:
                payload = self._lean_frames[self.report.packets_sent % LEAN_FRAMES]
            else:
                payload = self._encoder.encode(self.tone.frame(FRAME_SAMPLES))
            header = RtpHeader(OPUS_PT, sequence, timestamp, ssrc, self.report.packets_sent == 0)
            self._transport.sendto(header.pack() + payload, self._remote)
            self.report.packets_sent += 1
            sequence += 1
            timestamp += FRAME_SAMPLES
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            header, payload = parse_rtp(data)
        except ValueError:
            return  # RTCP from rtpengine, or noise
        if header.payload_type != OPUS_PT:
            return
        now = time.monotonic()
        if self.report.packets_received == 0 and self._started_at:
            self.report.first_packet_received_ms = (now - self._started_at) * 1000
        self.report.packets_received += 1
        self.receive_stats.packet(header.ssrc, header.sequence, header.timestamp, now)
        if self.lean:
            return
        with contextlib.suppress(ValueError):
            self._heard += self._decoder.decode(payload)

    def error_received(self, exc: Exception) -> None:  # ICMP on loopback before the far end binds
        pass

    async def close(self) -> PlainReport:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._transport is not None:
            self._transport.close()
        self.report.packets_expected = self.receive_stats.expected
        self.report.packets_lost = self.receive_stats.lost
        self.report.jitter_ms = self.receive_stats.jitter_ms
        if self.lean:
            return self.report
        # the first half second is the codec settling: judge the tone after it
        self.report.heard_hz = dominant_frequency(bytes(self._heard[SAMPLE_RATE:]), SAMPLE_RATE)
        return self.report

"""The business side of a call over plain RTP, as a stock FreeSWITCH behind rtpengine plays it.

With [media] anchor = "rtpengine" the business never sees SRTP, ICE or DTLS: it gets a plain
``RTP/AVP`` offer or answer from rtpengine and sends Opus in plain RTP. This party answers (or
offers) such an SDP, and once started sends a tone in 20 ms Opus frames at once (the business's
"maiden" packet that Meta waits for) and names the tone it hears. It is strict about the SDP
only where a plain profile could go wrong: an offer with SRTP, ICE or a fingerprint is refused,
since a FreeSWITCH profile without DTLS settings would not take it either.

Used with lab/media/sip_uas.py (which calls ``answer``, ``start`` and ``on_media_timeout``).

``codec="PCMU"`` plays a business side on G.711 only (a PBX, or a FreeSWITCH whose codec string
is PCMU): it offers and answers ``PCMU/8000`` and ``telephone-event/8000`` and nothing else, and
refuses an offer without PCMU. DTMF both ways as RFC 4733 events: ``send_dtmf`` queues digits,
``report.dtmf_received`` lists the digits whose events ended.

``lean=True`` (bench-rtpengine's load generator) sends one second of the tone encoded once and
looped (lab/media/peer.py's ``lean_frames``) and decodes nothing (no ``heard_hz``): Opus in
Python would cost more CPU than rtpengine's side of the call. Loss and interarrival jitter of
what arrives are counted either way, from the RTP headers (lab/media/receive_stats.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.media.g711 import PCMU_PT
from lab.media.opus import (
    CLOCK_RATE,
    FRAME_MS,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
)
from lab.media.peer import LEAN_FRAMES, AudioCodec, lean_frames
from lab.media.receive_stats import ReceiveStats
from lab.media.rtp import RtpHeader, parse_rtp, parse_telephone_event, telephone_event
from lab.media.sdp import OPUS_PT, TELEPHONE_EVENT_PT, SdpError, parse_sdp
from lab.media.tone import ToneGenerator, dominant_frequency
from lab.processes import free_port

PLAIN_PROFILE = "RTP/AVP"
DTMF_PACKETS = 5  # as lab/media/peer.py: 100 ms per digit, the end packet sent three times
FORBIDDEN = ("a=fingerprint", "a=crypto", "a=ice-ufrag", "a=candidate")


@dataclass
class PlainReport:
    packets_sent: int = 0
    packets_received: int = 0
    first_packet_received_ms: float | None = None  # after start()
    heard_hz: float | None = None
    packets_expected: int = 0  # from the sender's RTP sequence numbers (RFC 3550 A.3)
    packets_lost: int = 0
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter of the audio stream received
    dtmf_received: str = ""  # digits of the RFC 4733 events that arrived with their end bit


class PlainRtpPeer(asyncio.DatagramProtocol):
    def __init__(self, *, tone_hz: float = 600.0, address: str = "127.0.0.1",
                 lean: bool = False, codec: str = "opus") -> None:
        if codec not in ("opus", "PCMU"):
            raise ValueError(f"codec {codec!r}: opus or PCMU")
        self.address = address
        self.lean = lean
        self.audio = AudioCodec.pcmu() if codec == "PCMU" else AudioCodec(
            "opus", OPUS_PT, SAMPLE_RATE, OpusEncoder(), OpusDecoder())
        self._lean_frames = lean_frames(tone_hz, codec) if lean else ()
        self.receive_stats = ReceiveStats(CLOCK_RATE if codec == "opus" else self.audio.rate)
        self.port = 0
        self.tone = ToneGenerator(tone_hz, self.audio.rate)
        self.report = PlainReport()
        self.on_media_timeout: Callable[[str], None] | None = None  # SipUas sets it; never fired
        self._heard = bytearray()
        self._te_pt = TELEPHONE_EVENT_PT
        self._dtmf: list[str] = []
        self._event_timestamp: int | None = None  # of the event being received
        self._remote: tuple[str, int] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None
        self._started_at = 0.0

    async def open(self) -> PlainRtpPeer:
        loop = asyncio.get_running_loop()
        # a port of free_port()'s, not port 0 (MediaPeer.open says why)
        local = (self.address, free_port(socket.SOCK_DGRAM, self.address))
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=local)
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    def sdp(self) -> str:
        audio = ([f"a=rtpmap:{OPUS_PT} opus/48000/2", f"a=fmtp:{OPUS_PT} useinbandfec=1"]
                 if self.audio.name == "opus" else [f"a=rtpmap:{PCMU_PT} PCMU/8000"])
        lines = ["v=0", f"o=lab-business 1 1 IN IP4 {self.address}", "s=lab business",
                 f"c=IN IP4 {self.address}", "t=0 0",
                 f"m=audio {self.port} {PLAIN_PROFILE} {self.audio.payload_type} {self._te_pt}",
                 *audio, f"a=rtpmap:{self._te_pt} telephone-event/8000", "a=sendrecv"]
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
        if self.audio.name == "opus" and remote.payloads.get("opus/48000/2") is None:
            raise SdpError("no opus/48000/2 in the SDP")
        if self.audio.name == "PCMU" and remote.payload_type("PCMU/8000") is None:
            raise SdpError("no PCMU/8000 in the SDP")
        # answer with the offer's telephone-event payload type, as FreeSWITCH does
        self._te_pt = remote.payload_type("telephone-event/8000") or self._te_pt
        self._remote = (remote.address, remote.port)

    def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 events; they go out in place of audio once the sender runs."""
        for digit in digits:
            telephone_event(digit, end=False)  # refuses a non-digit now, not in the sender
        self._dtmf.extend(digits)

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
        frame = self.audio.frame_samples
        event: tuple[str, int, int] | None = None  # digit, start timestamp, packets sent
        while True:
            if event is None and self._dtmf:
                event = (self._dtmf.pop(0), timestamp, 0)
            if event is not None:
                # 100 ms per digit in 20 ms packets, the end packet three times (RFC 4733)
                digit, start, sent = event
                duration = 8000 * FRAME_MS // 1000 * min(sent + 1, DTMF_PACKETS)
                payload = telephone_event(digit, end=sent >= DTMF_PACKETS - 1, duration=duration)
                header = RtpHeader(self._te_pt, sequence & 0xFFFF, start & 0xFFFFFFFF, ssrc,
                                   sent == 0)
                event = (digit, start, sent + 1) if sent + 1 < DTMF_PACKETS + 2 else None
            else:
                if self.lean:
                    payload = self._lean_frames[self.report.packets_sent % LEAN_FRAMES]
                else:
                    payload = self.audio.encoder.encode(self.tone.frame(frame))
                header = RtpHeader(self.audio.payload_type, sequence & 0xFFFF,
                                   timestamp & 0xFFFFFFFF, ssrc, self.report.packets_sent == 0)
            self._transport.sendto(header.pack() + payload, self._remote)
            self.report.packets_sent += 1
            sequence += 1
            timestamp += frame
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            header, payload = parse_rtp(data)
        except ValueError:
            return  # RTCP from rtpengine, or noise
        if header.payload_type == self._te_pt:
            self._event_received(header.timestamp, payload)
            return
        if header.payload_type != self.audio.payload_type:
            return
        now = time.monotonic()
        if self.report.packets_received == 0 and self._started_at:
            self.report.first_packet_received_ms = (now - self._started_at) * 1000
        self.report.packets_received += 1
        self.receive_stats.packet(header.ssrc, header.sequence, header.timestamp, now)
        if self.lean:
            return
        with contextlib.suppress(ValueError):
            self._heard += self.audio.decoder.decode(payload)

    def _event_received(self, timestamp: int, payload: bytes) -> None:
        """An RFC 4733 event: its digit counts once, at the first packet with the end bit."""
        try:
            digit, end, _ = parse_telephone_event(payload)
        except ValueError:
            return
        if end and self._event_timestamp != timestamp:
            self._event_timestamp = timestamp
            self.report.dtmf_received += digit

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
        rate = self.audio.rate  # int16: `rate` bytes are half a second
        self.report.heard_hz = dominant_frequency(bytes(self._heard[rate:]), rate)
        return self.report

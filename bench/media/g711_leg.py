"""The G.711 side of bench-media's transcoding calls: a SIP user agent server FreeSWITCH bridges
WhatsApp's Opus call to, answering every INVITE with plain RTP PCMU.

FreeSWITCH then decodes WhatsApp's Opus and encodes PCMU toward this leg, and the reverse: the
transcoding a PBX on G.711 behind wa-sip costs. One UDP port takes the signalling of all calls;
each call gets its own RTP port, sends a 440 Hz tone encoded once (mu-law, G.711) on one shared
20 ms clock, and counts what arrives (loss and jitter, as the WhatsApp peer does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from lab.media.g711 import PCMU_FRAME_SAMPLES, PCMU_PT, PCMU_RATE, mu_law
from lab.media.receive_stats import ReceiveStats
from lab.media.rtp import RtpHeader, parse_rtp
from lab.media.sip_uac import SipMessage, parse_message

RATE = PCMU_RATE
FRAME_SAMPLES = PCMU_FRAME_SAMPLES  # 20 ms
TONE_HZ = 440.0


def tone_frames() -> list[bytes]:
    """One second of the tone as 50 PCMU payloads (440 Hz fits a second exactly)."""
    t = np.arange(RATE) / RATE
    pcm = (np.sin(2 * np.pi * TONE_HZ * t) * 8000).astype(np.int16)
    encoded = mu_law(pcm)
    return [encoded[i:i + FRAME_SAMPLES] for i in range(0, RATE, FRAME_SAMPLES)]


@dataclass
class LegStats:
    expected: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    received: int = 0


class _RtpLeg(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.stats = ReceiveStats(RATE)
        self.ssrc = int.from_bytes(os.urandom(4), "big")
        self.sequence = int.from_bytes(os.urandom(2), "big")
        self.timestamp = int.from_bytes(os.urandom(4), "big")
        self.sent = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            header, _ = parse_rtp(data)
        except ValueError:
            return
        if header.payload_type == PCMU_PT:
            self.stats.packet(header.ssrc, header.sequence, header.timestamp, time.monotonic())

    def send(self, payload: bytes) -> None:
        if self.transport is None or self.remote is None or self.transport.is_closing():
            return
        header = RtpHeader(PCMU_PT, self.sequence, self.timestamp, self.ssrc, marker=self.sent == 0)
        self.transport.sendto(header.pack() + payload, self.remote)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + FRAME_SAMPLES) & 0xFFFFFFFF
        self.sent += 1

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable once FreeSWITCH hangs up
        pass


class G711Endpoint(asyncio.DatagramProtocol):
    """Answers FreeSWITCH's INVITEs on `local` with PCMU; `ended` collects each leg's stats."""

    def __init__(self, local_ip: str = "127.0.0.1") -> None:
        self.local_ip = local_ip
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._legs: dict[str, _RtpLeg] = {}
        self._answers: dict[str, str] = {}
        self.ended: list[LegStats] = []
        self.refused = 0
        self._frames = tone_frames()
        self._clock: asyncio.Task[None] | None = None

    async def open(self) -> G711Endpoint:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_ip, 0))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        self._clock = asyncio.create_task(self._send_all())
        return self

    def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
        for call_id in list(self._legs):
            self._end(call_id)
        if self._transport is not None:
            self._transport.close()

    async def _send_all(self) -> None:
        """One 20 ms clock for every leg: far fewer wake-ups than a task per call."""
        loop = asyncio.get_running_loop()
        next_at, index = loop.time(), 0
        while True:
            payload = self._frames[index % len(self._frames)]
            for leg in list(self._legs.values()):
                leg.send(payload)
            index += 1
            next_at += FRAME_SAMPLES / RATE
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if message.status is not None:
            return
        method = message.first_line.split(" ", 1)[0]
        call_id = message.header("Call-ID") or ""
        if method == "INVITE":
            if call_id in self._answers:  # a retransmission: answer again
                self._respond(message, addr, "200 OK", self._answers[call_id])
            else:
                asyncio.get_running_loop().create_task(self._answer(message, addr, call_id))
            return
        if method == "ACK":
            return
        self._respond(message, addr, "200 OK")
        if method in ("BYE", "CANCEL"):
            self._end(call_id)

    async def _answer(self, invite: SipMessage, addr: tuple[str, int], call_id: str) -> None:
        audio = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", invite.body, re.MULTILINE)
        host = re.search(r"^c=IN IP4 (\S+)", invite.body, re.MULTILINE)
        if audio is None or host is None or str(PCMU_PT) not in audio.group(2).split():
            self.refused += 1
            self._respond(invite, addr, "488 Not Acceptable Here")
            return
        loop = asyncio.get_running_loop()
        leg = _RtpLeg()
        transport, _ = await loop.create_datagram_endpoint(lambda: leg, local_addr=(self.local_ip, 0))
        leg.transport, leg.remote = transport, (host.group(1), int(audio.group(1)))
        port = transport.get_extra_info("sockname")[1]
        session = int(time.time())
        sdp = (f"v=0\r\no=g711 {session} {session} IN IP4 {self.local_ip}\r\ns=-\r\n"
               f"c=IN IP4 {self.local_ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {PCMU_PT}\r\n"
               f"a=rtpmap:{PCMU_PT} PCMU/{RATE}\r\na=ptime:20\r\na=sendrecv\r\n")
        self._legs[call_id], self._answers[call_id] = leg, sdp
        self._respond(invite, addr, "200 OK", sdp)

    def _end(self, call_id: str) -> None:
        leg = self._legs.pop(call_id, None)
        self._answers.pop(call_id, None)
        if leg is None:
            return
        stats = leg.stats
        self.ended.append(LegStats(stats.expected, stats.lost, stats.jitter_ms, stats.received))
        if leg.transport is not None:
            leg.transport.close()

    def take_ended(self) -> list[LegStats]:
        ended, self.ended = self.ended, []
        return ended

    def _respond(self, request: SipMessage, addr: tuple[str, int], status: str, body: str = "") -> None:
        assert self._transport is not None
        lines = [f"SIP/2.0 {status}"]
        for key, value in request.headers:
            lower = key.lower()
            if lower == "to" and ";tag=" not in value and not status.startswith("100"):
                tag = (request.header("Call-ID") or "x").encode().hex()[:16]
                lines.append(f"To: {value};tag={tag}")
            elif lower in ("via", "from", "to", "call-id", "cseq", "record-route"):
                lines.append(f"{key}: {value}")
        if request.first_line.startswith("INVITE") and status.startswith("200"):
            lines.append(f"Contact: <sip:g711@{self.local_ip}:{self.port}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        with contextlib.suppress(OSError):
            self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), addr)

"""The media side of a WhatsApp call, as Meta's media servers play it, on one loopback UDP port.

Driven by the SIP party that plays Meta: it asks for an offer (user-initiated calls) or an
answer (business-initiated ones), calls `start()` when the ACK passes (the clock of Meta's
no-media rule), and closes the peer when the call ends, getting a `MediaReport`.

Meta's media rules, kept here:
- nothing is sent before the business's first authenticated SRTP packet arrives (the
  business sends the "maiden" packet), STUN answers and the DTLS server's flights excepted;
- no business media for `timeouts.start_s` (20 s) after the ACK, or for `timeouts.mid_call_s`
  (30 s) once media flowed, ends the call: `on_media_timeout` tells the SIP party, which sends
  BYE (user-initiated) or `408 RTP Timeout` (business-initiated) as Meta does;
- audio is a known tone in 20 ms Opus frames; what arrives is decoded and its dominant
  frequency reported, with SRTCP sender reports every 5 s. A number with G.711 enabled at Meta
  (`g711=("PCMU",)`, as `audio.additional_codecs` makes Meta offer) offers PCMU after Opus, and
  when the business answers PCMU the tone goes both ways in PCMU.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.media.dtls import DtlsCertificate, DtlsEndpoint, make_certificate
from lab.media.g711 import PCMU_FRAME_SAMPLES, PCMU_PT, PCMU_RATE, PcmuDecoder, PcmuEncoder
from lab.media.opus import CLOCK_RATE, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from lab.media.receive_stats import ReceiveStats
from lab.media.rtp import (
    Kind,
    RtpHeader,
    classify,
    parse_rtp,
    parse_telephone_event,
    sender_report,
    telephone_event,
)
from lab.media.sdp import (
    LocalMedia,
    RemoteMedia,
    SdpError,
    SrtpMode,
    build_sdp,
    check_remote,
    parse_sdp,
    sdes_remote_key,
)
from lab.media.srtp import SUITE, SrtpKeys, SrtpSession, new_master_key
from lab.media.stun import Address, IceLiteResponder, ice_credential
from lab.media.tone import ToneGenerator, dominant_frequency
from lab.processes import free_port

log = logging.getLogger(__name__)

TICK_S = 0.05  # DTLS retransmission and no-media checks
RTCP_INTERVAL_S = 5.0
DTMF_PACKETS = 5  # 100 ms per digit in 20 ms packets
DTMF_END_PACKETS = 3  # the end packet is sent three times (RFC 4733 2.5.1.4)
DTMF_GAP_FRAMES = 5  # 100 ms of audio between digits
HEARD_SECONDS = 10  # what the frequency analysis looks at: the most recent audio
LEAN_FRAMES = 50  # a lean peer's tone: one second of Opus frames encoded once, sent in a loop


@dataclass(frozen=True)
class MediaTimeouts:
    """Meta's no-media limits; tests shorten them."""

    start_s: float = 20.0
    mid_call_s: float = 30.0


@dataclass
class ReceivedEvent:
    """One RFC 4733 event the business sent: its packets share the RTP timestamp."""

    digit: str
    timestamp: int
    duration: int = 0  # the largest duration field seen, in the payload type's clock units
    ended: bool = False
    first_at: float = 0.0  # arrival (monotonic) of its first and last packets
    last_at: float = 0.0


@dataclass
class MediaReport:
    mode: str
    suite: str = SUITE
    codec: str = "opus"  # the audio codec the answer chose: "opus" or "PCMU"
    first_packet_after_ack_ms: float | None = None
    dtls_handshake_ms: float | None = None
    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0
    packets_expected: int = 0  # from the business's RTP sequence numbers (RFC 3550 A.3)
    packets_lost: int = 0
    jitter_ms: float = 0.0  # RFC 3550 interarrival jitter of the business's audio
    rtcp_sent: int = 0
    rtcp_received: int = 0
    auth_failures: int = 0
    rtcp_auth_failures: int = 0
    undecodable: int = 0
    heard_hz: float | None = None
    stun_requests: int = 0
    role_conflicts: int = 0
    ended_by: str | None = None  # why the peer ended the call, if it did
    failure: str | None = None  # DTLS failure, fingerprint mismatch...
    dtmf_received: list[ReceivedEvent] = field(default_factory=list)

    def line(self, business_heard_hz: float | None = None) -> str:
        """One line per call: `media: DTLS AES_CM_128_HMAC_SHA1_80, handshake 61 ms, ...`."""
        parts = [f"media: {self.mode} {self.suite}"]
        if self.dtls_handshake_ms is not None:
            parts.append(f"handshake {self.dtls_handshake_ms:.0f} ms")
        if self.first_packet_after_ack_ms is not None:
            # On a business-initiated call the business may send as soon as Meta's 200 is out,
            # so its first packet can beat its own ACK here: say "before", never "-0 ms after".
            ms = round(self.first_packet_after_ack_ms)
            when = f"{ms} ms after ACK" if ms >= 0 else f"{-ms} ms before ACK"
            parts.append(f"first business packet {when}")
        else:
            parts.append("no business packet")
        parts.append(f"{self.packets_received}/{self.packets_sent} packets")
        if self.packets_lost:
            parts.append(f"{self.packets_lost} lost")
        if self.auth_failures:
            parts.append(f"{self.auth_failures} SRTP auth failures")
        heard = f"{self.heard_hz:.0f} Hz" if self.heard_hz is not None else "nothing"
        parts.append(f"tone {heard} heard by WhatsApp")
        if business_heard_hz is not None:
            parts.append(f"{business_heard_hz:.0f} Hz heard by the business")
        if self.failure:
            parts.append(self.failure)
        if self.ended_by:
            parts.append(f"ended by WhatsApp: {self.ended_by}")
        return ", ".join(parts)


@dataclass
class _Stream:
    ssrc: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    sequence: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    timestamp: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))


@functools.lru_cache(maxsize=8)
def lean_frames(tone_hz: float, codec: str = "opus") -> tuple[bytes, ...]:
    """One second of the tone in Opus (or PCMU) frames, encoded once per process for every lean
    peer."""
    if codec == "PCMU":
        pcmu, tone = PcmuEncoder(), ToneGenerator(tone_hz, PCMU_RATE)
        return tuple(pcmu.encode(tone.frame(PCMU_FRAME_SAMPLES)) for _ in range(LEAN_FRAMES))
    encoder, tone = OpusEncoder(), ToneGenerator(tone_hz, SAMPLE_RATE)
    return tuple(encoder.encode(tone.frame(FRAME_SAMPLES)) for _ in range(LEAN_FRAMES))


@dataclass
class AudioCodec:
    """What the sender and receiver need of the codec the answer chose: Opus (48 kHz clock and
    samples) or PCMU (8 kHz); 20 ms frames either way."""

    name: str
    payload_type: int
    rate: int  # the RTP clock, which is also the sample rate of what is encoded and decoded
    encoder: OpusEncoder | PcmuEncoder
    decoder: OpusDecoder | PcmuDecoder

    @property
    def frame_samples(self) -> int:
        return self.rate * FRAME_MS // 1000

    @classmethod
    def opus(cls, payload_type: int) -> AudioCodec:
        return cls("opus", payload_type, SAMPLE_RATE, OpusEncoder(), OpusDecoder())

    @classmethod
    def pcmu(cls) -> AudioCodec:
        return cls("PCMU", PCMU_PT, PCMU_RATE, PcmuEncoder(), PcmuDecoder())


class MediaPeer(asyncio.DatagramProtocol):
    """WhatsApp's media for one call; `await MediaPeer(...).open()` binds its port.

    `lean=True` (bench-media's load generator) sends pre-encoded frames of the tone and does not
    decode what arrives (no `heard_hz`): Opus in Python would cost more CPU than FreeSWITCH's
    side of the call, and the bench measures FreeSWITCH. Loss and jitter are counted either way.
    """

    def __init__(self, mode: SrtpMode, *, tone_hz: float = 1000.0, address: str = "127.0.0.1",
                 timeouts: MediaTimeouts | None = None,
                 certificate: DtlsCertificate | None = None,
                 on_media_timeout: Callable[[str], None] | None = None,
                 lean: bool = False, g711: tuple[str, ...] = ()) -> None:
        if set(g711) - {"PCMU"}:
            raise ValueError(f"the lab's peer plays PCMU only, not {', '.join(g711)}")
        self.mode = mode
        self.lean = lean
        self.g711 = g711
        self.tone_hz = tone_hz
        self._lean_frames = lean_frames(tone_hz) if lean else ()
        self.receive_stats = ReceiveStats(CLOCK_RATE)
        self.address = address
        self.timeouts = timeouts or MediaTimeouts()
        self.on_media_timeout = on_media_timeout
        self.tone = ToneGenerator(tone_hz, SAMPLE_RATE)
        self.report = MediaReport(mode.value)
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._master_key = new_master_key()
        self._ice_ufrag = ice_credential(8)
        self._ice_pwd = ice_credential(24)
        self._certificate = certificate
        self.remote: RemoteMedia | None = None
        self.srtp: SrtpSession | None = None
        self.dtls: DtlsEndpoint | None = None
        self.ice: IceLiteResponder | None = None
        self._remote_address: Address | None = None
        self._opus_pt = 111
        self.audio = AudioCodec.opus(self._opus_pt)
        self._heard: collections.deque[bytes] = collections.deque(
            maxlen=HEARD_SECONDS * 1000 // FRAME_MS)
        self._stream = _Stream()
        self._dtls_started_at: float | None = None
        self.ack_at: float | None = None
        self.first_packet_at: float | None = None
        self.last_packet_at: float | None = None
        self.first_packet = asyncio.Event()
        self.ended = asyncio.Event()
        self._dtmf: collections.deque[str] = collections.deque()
        self._te_pt = 126
        self.dtmf_sent = ""

    # ------------------------------------------------------------------ life cycle
    async def open(self, port: int = 0) -> MediaPeer:
        """Bound to `port`, or to a port of free_port()'s (never one it handed out to another
        party of the lab: a port-0 bind could take the WhatsApp user's SIP port, seen as
        EADDRINUSE when that party bound it next)."""
        loop = asyncio.get_running_loop()
        local = (self.address, port or free_port(socket.SOCK_DGRAM, self.address))
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=local)
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        if self.mode is SrtpMode.DTLS and self._certificate is None:
            self._certificate = make_certificate()
        return self

    def start(self) -> None:
        """The ACK passed: the no-media clock starts, and the sender waits for the business."""
        self.ack_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._watch(), name="media-watch"))
        self._tasks.append(asyncio.create_task(self._send_audio(), name="media-send"))

    async def close(self) -> MediaReport:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()
        return self.finish_report()

    def finish_report(self) -> MediaReport:
        report = self.report
        if self.srtp is not None:
            report.auth_failures = self.srtp.auth_failures
            report.rtcp_auth_failures = self.srtp.rtcp_auth_failures
        if self.ice is not None:
            report.stun_requests = self.ice.counters.requests
            report.role_conflicts = self.ice.counters.role_conflicts
        if self.dtls is not None and self.dtls.failure:
            report.failure = self.dtls.failure
        report.heard_hz = dominant_frequency(b"".join(self._heard), self.audio.rate)
        report.codec = self.audio.name
        report.packets_expected = self.receive_stats.expected
        report.packets_lost = self.receive_stats.lost
        report.jitter_ms = self.receive_stats.jitter_ms
        if self.ack_at is not None and self.first_packet_at is not None:
            report.first_packet_after_ack_ms = (self.first_packet_at - self.ack_at) * 1000
        return report

    # ------------------------------------------------------------------ SDP
    def local_media(self, crypto_tag: int = 1) -> LocalMedia:
        if self.mode is SrtpMode.SDES:
            return LocalMedia(self.mode, self.address, self.port, crypto_tag=crypto_tag,
                              master_key=self._master_key, opus_pt=self._opus_pt)
        assert self._certificate is not None, "open() first"
        return LocalMedia(self.mode, self.address, self.port, ice_ufrag=self._ice_ufrag,
                          ice_pwd=self._ice_pwd, fingerprint=self._certificate.fingerprint,
                          opus_pt=self._opus_pt)

    def offer(self) -> str:
        """Meta's offer on a user-initiated call (with the number's G.711 codecs after Opus)."""
        return build_sdp(dataclasses.replace(self.local_media(), g711=self.g711), offer=True)

    def accept_answer(self, sdp: str) -> None:
        """The business's answer to our offer; raises SdpError where Meta would refuse it."""
        remote = parse_sdp(sdp)
        check_remote(remote, self.mode, offer=False, g711=self.g711)
        self._use_remote(remote)
        if remote.payload_type("opus/48000") is None and remote.payload_type("PCMU/8000") is not None:
            self._use_pcmu()

    def _use_pcmu(self) -> None:
        """The business answered G.711 (PCMU): the tone goes both ways in PCMU at 8 kHz."""
        self.audio = AudioCodec.pcmu()
        self.tone = ToneGenerator(self.tone_hz, PCMU_RATE)
        self.receive_stats = ReceiveStats(PCMU_RATE)
        if self.lean:
            self._lean_frames = lean_frames(self.tone_hz, "PCMU")

    def answer(self, sdp: str) -> str:
        """Meta's answer to the business's offer (business-initiated call)."""
        remote = parse_sdp(sdp)
        check_remote(remote, self.mode, offer=True)
        self._opus_pt = remote.payload_type("opus/48000") or self._opus_pt
        tag = self._use_remote(remote)
        return build_sdp(self.local_media(crypto_tag=tag), offer=False)

    def _use_remote(self, remote: RemoteMedia) -> int:
        self.remote = remote
        self._opus_pt = remote.payload_type("opus/48000") or self._opus_pt
        self.audio.payload_type = self._opus_pt if self.audio.name == "opus" else PCMU_PT
        self._te_pt = remote.payload_type("telephone-event/8000") or self._te_pt
        self._remote_address = (remote.address, remote.port)
        if self.mode is SrtpMode.SDES:
            tag, key = sdes_remote_key(remote)
            self.srtp = SrtpSession(SrtpKeys(local=self._master_key, remote=key))
            return tag
        assert self._certificate is not None and remote.fingerprint is not None
        if remote.candidates:
            self._remote_address = remote.candidates[0]
        self.ice = IceLiteResponder(self._ice_ufrag, self._ice_pwd, remote.ice_ufrag)
        self.dtls = DtlsEndpoint(self._certificate, server=True, remote_fingerprint=remote.fingerprint[1])
        return 1

    # ------------------------------------------------------------------ receiving
    def datagram_received(self, data: bytes, addr: Address) -> None:
        kind = classify(data)
        if kind is Kind.STUN and self.ice is not None:
            reply = self.ice.handle(data, addr)
            if reply is not None:
                self._sendto(reply, addr)
            if self.ice.nominated is not None:
                self._remote_address = self.ice.nominated
        elif kind is Kind.DTLS and self.dtls is not None:
            self._dtls_received(data, addr)
        elif kind is Kind.RTP:
            self._rtp_received(data)
        elif (kind is Kind.RTCP and self.srtp is not None
              and self.srtp.unprotect_rtcp(data) is not None):
            self.report.rtcp_received += 1

    def _dtls_received(self, data: bytes, addr: Address) -> None:
        assert self.dtls is not None
        if self._dtls_started_at is None:
            self._dtls_started_at = time.monotonic()
        had_keys = self.dtls.keys is not None
        for record in self.dtls.feed(data):
            self._sendto(record, addr)
        if self.dtls.keys is not None and not had_keys:
            self.report.dtls_handshake_ms = (time.monotonic() - self._dtls_started_at) * 1000
            self.srtp = SrtpSession(self.dtls.keys)
            log.info("DTLS handshake done in %.0f ms", self.report.dtls_handshake_ms)
        if self.dtls.failure and self.report.failure is None:
            self.report.failure = self.dtls.failure
            log.warning("%s", self.dtls.failure)

    def _rtp_received(self, data: bytes) -> None:
        if self.srtp is None:
            return  # no keys yet (DTLS not done): not media we can take
        packet = self.srtp.unprotect(data)
        if packet is None:
            return
        try:
            header, payload = parse_rtp(packet)
        except ValueError:
            self.report.undecodable += 1
            return
        now = time.monotonic()
        self.report.packets_received += 1
        self.report.bytes_received += len(data)
        self.last_packet_at = now
        if self.first_packet_at is None:
            self.first_packet_at = now
            self.first_packet.set()
        audio = header.payload_type == self.audio.payload_type
        self.receive_stats.packet(header.ssrc, header.sequence, header.timestamp, now,
                                  audio=audio)
        if audio and not self.lean:
            try:
                self._heard.append(self.audio.decoder.decode(payload))
            except ValueError:
                self.report.undecodable += 1
        elif header.payload_type == self._te_pt:
            self._event_received(header, payload, now)

    def _event_received(self, header: RtpHeader, payload: bytes, now: float) -> None:
        try:
            digit, end, duration = parse_telephone_event(payload)
        except ValueError:
            self.report.undecodable += 1
            return
        events = self.report.dtmf_received
        if not events or events[-1].timestamp != header.timestamp:
            events.append(ReceivedEvent(digit, header.timestamp, first_at=now))
        event = events[-1]
        event.duration = max(event.duration, duration)
        event.ended = event.ended or end
        event.last_at = now

    # ------------------------------------------------------------------ sending
    def _sendto(self, data: bytes, addr: Address) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    async def _send_audio(self) -> None:
        """20 ms audio frames on an absolute schedule, once the business's first packet came."""
        await self.first_packet.wait()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        next_rtcp = next_at + RTCP_INTERVAL_S
        stream = self._stream
        while not self.ended.is_set():
            if self._dtmf:
                next_at = await self._send_digit(self._dtmf.popleft(), next_at)
                continue
            if self.lean:
                payload = self._lean_frames[self.report.packets_sent % LEAN_FRAMES]
            else:
                payload = self.audio.encoder.encode(self.tone.frame(self.audio.frame_samples))
            header = RtpHeader(self.audio.payload_type, stream.sequence, stream.timestamp,
                               stream.ssrc, marker=self.report.packets_sent == 0)
            self._send_srtp(header.pack() + payload)
            stream.sequence = (stream.sequence + 1) & 0xFFFF
            stream.timestamp = (stream.timestamp + self.audio.frame_samples) & 0xFFFFFFFF
            if loop.time() >= next_rtcp:
                next_rtcp += RTCP_INTERVAL_S
                self._send_rtcp()
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def send_dtmf(self, digits: str) -> None:
        """Queue DTMF as RFC 4733 telephone-events (Meta: telephone-event/8000 only); they go
        out in place of audio once the sender runs."""
        for digit in digits:
            telephone_event(digit, end=False)  # refuses a non-digit now, not in the sender
        self._dtmf.extend(digits)

    async def _send_digit(self, digit: str, next_at: float) -> float:
        """One event: packets every 20 ms with growing duration (8 kHz units), all with the
        event's start timestamp, the last one marked end and sent three times."""
        loop = asyncio.get_running_loop()
        stream = self._stream
        start = stream.timestamp
        step = 8000 * FRAME_MS // 1000
        for index in range(DTMF_PACKETS + DTMF_END_PACKETS - 1):
            end = index >= DTMF_PACKETS - 1
            duration = step * min(index + 1, DTMF_PACKETS)
            header = RtpHeader(self._te_pt, stream.sequence, start, stream.ssrc, marker=index == 0)
            self._send_srtp(header.pack() + telephone_event(digit, end=end, duration=duration))
            stream.sequence = (stream.sequence + 1) & 0xFFFF
            if index < DTMF_PACKETS:
                stream.timestamp = (stream.timestamp + self.audio.frame_samples) & 0xFFFFFFFF
                next_at += FRAME_MS / 1000
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        self.dtmf_sent += digit
        for _ in range(DTMF_GAP_FRAMES):  # a little tone between digits
            payload = self.audio.encoder.encode(self.tone.frame(self.audio.frame_samples))
            self._send_srtp(RtpHeader(self.audio.payload_type, stream.sequence, stream.timestamp,
                                      stream.ssrc).pack() + payload)
            stream.sequence = (stream.sequence + 1) & 0xFFFF
            stream.timestamp = (stream.timestamp + self.audio.frame_samples) & 0xFFFFFFFF
            next_at += FRAME_MS / 1000
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        return next_at

    def _send_srtp(self, rtp: bytes) -> None:
        if self.srtp is None or self._remote_address is None:
            return
        protected = self.srtp.protect(rtp)
        self._sendto(protected, self._remote_address)
        self.report.packets_sent += 1
        self.report.bytes_sent += len(protected)

    def _send_rtcp(self) -> None:
        if self.srtp is None or self._remote_address is None:
            return
        stream = self._stream
        report = sender_report(stream.ssrc, stream.timestamp, self.report.packets_sent,
                               self.report.bytes_sent)
        self._sendto(self.srtp.protect_rtcp(report), self._remote_address)
        self.report.rtcp_sent += 1

    # ------------------------------------------------------------------ timers
    async def _watch(self) -> None:
        """DTLS retransmissions, and Meta's no-media limits."""
        while not self.ended.is_set():
            await asyncio.sleep(TICK_S)
            if self.dtls is not None:
                destination = self._remote_address
                for record in self.dtls.poll():
                    if destination is not None:
                        self._sendto(record, destination)
            now = time.monotonic()
            assert self.ack_at is not None
            if self.last_packet_at is None:
                if now - self.ack_at > self.timeouts.start_s:
                    self._end(f"no business media {self.timeouts.start_s:g} s after ACK")
            elif now - self.last_packet_at > self.timeouts.mid_call_s:
                self._end(f"no business media for {self.timeouts.mid_call_s:g} s mid-call")

    def _end(self, reason: str) -> None:
        if self.ended.is_set():
            return
        self.report.ended_by = reason
        self.ended.set()
        log.info("media peer ends the call: %s", reason)
        if self.on_media_timeout is not None:
            self.on_media_timeout(reason)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable on loopback
        log.debug("media socket error: %s", exc)


__all__ = ["MediaPeer", "MediaReport", "MediaTimeouts", "SdpError", "SrtpMode"]

"""The business's side of the media (FreeSWITCH's role) for the peer's self-tests: a full ICE
agent that checks as CONTROLLING and nominates, the DTLS client, SDES keys of its own; it sends
a tone first (the business's "maiden" packet) and decodes what comes back."""

from __future__ import annotations

import asyncio
import os

from aioice import stun

from lab.media.dtls import DtlsEndpoint, make_certificate
from lab.media.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from lab.media.rtp import Kind, RtpHeader, classify, parse_rtp
from lab.media.sdp import SrtpMode, parse_sdp, sdes_remote_key
from lab.media.srtp import SUITE, SrtpKeys, SrtpSession, inline_key, new_master_key
from lab.media.stun import binding_request
from lab.media.tone import ToneGenerator, dominant_frequency

Address = tuple[str, int]


class BusinessEnd(asyncio.DatagramProtocol):
    def __init__(self, mode: SrtpMode, tone_hz: float = 440.0) -> None:
        self.mode = mode
        self.tone = ToneGenerator(tone_hz, SAMPLE_RATE)
        self.certificate = make_certificate("business")
        self.key = new_master_key()
        self.ufrag, self.pwd = "bizU", "bizPasswordbizPassword00"
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.peer: Address = ("127.0.0.1", 0)
        self.peer_ufrag = self.peer_pwd = ""
        self.peer_fingerprint = ""
        self.srtp: SrtpSession | None = None
        self.dtls: DtlsEndpoint | None = None
        self.stun_replies: asyncio.Queue[stun.Message] = asyncio.Queue()
        self.datagrams = 0
        self.heard: list[bytes] = []
        self.decoder = OpusDecoder()
        self.encoder = OpusEncoder()
        self.sequence, self.timestamp, self.ssrc = 1, 0, int.from_bytes(os.urandom(4), "big")

    async def open(self) -> BusinessEnd:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _sdp(self, setup: str) -> str:
        lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
        if self.mode is SrtpMode.SDES:
            lines += [f"m=audio {self.port} RTP/SAVP 111 126",
                      f"a=crypto:1 {SUITE} {inline_key(self.key)}"]
        else:
            lines += [f"m=audio {self.port} UDP/TLS/RTP/SAVPF 111 126",
                      f"a=ice-ufrag:{self.ufrag}", f"a=ice-pwd:{self.pwd}",
                      f"a=candidate:1 1 udp 2130706431 127.0.0.1 {self.port} typ host",
                      f"a=fingerprint:sha-256 {self.certificate.fingerprint}", f"a=setup:{setup}"]
        lines += ["a=rtpmap:111 opus/48000/2", "a=rtpmap:126 telephone-event/8000", "a=rtcp-mux"]
        return "\r\n".join(lines) + "\r\n"

    def answer(self, offer: str) -> str:
        self.take(offer)
        return self._sdp("active")

    def offer(self) -> str:
        return self._sdp("actpass")

    def take(self, sdp: str) -> None:
        """The peer's SDP (its offer, or its answer to ours)."""
        remote = parse_sdp(sdp)
        self.peer = (remote.address, remote.port)
        if self.mode is SrtpMode.SDES:
            self.srtp = SrtpSession(SrtpKeys(local=self.key, remote=sdes_remote_key(remote)[1]))
        else:
            assert remote.ice_ufrag and remote.ice_pwd and remote.fingerprint
            self.peer_ufrag, self.peer_pwd = remote.ice_ufrag, remote.ice_pwd
            self.peer_fingerprint = remote.fingerprint[1]

    async def check(self, *, controlling: bool = True, nominate: bool = True) -> stun.Message:
        """One connectivity check to the peer; its answer."""
        assert self.transport is not None
        request = binding_request(f"{self.peer_ufrag}:{self.ufrag}", self.peer_pwd,
                                  controlling=controlling, nominate=nominate)
        self.transport.sendto(bytes(request), self.peer)
        return await asyncio.wait_for(self.stun_replies.get(), 5)

    async def dtls_handshake(self) -> None:
        assert self.transport is not None
        self.dtls = DtlsEndpoint(self.certificate, server=False, remote_fingerprint=self.peer_fingerprint)
        for record in self.dtls.start():
            self.transport.sendto(record, self.peer)
        for _ in range(100):
            if self.dtls.keys is not None or self.dtls.failure is not None:
                break
            await asyncio.sleep(0.05)
        assert self.dtls.keys is not None, self.dtls.failure
        self.srtp = SrtpSession(self.dtls.keys)

    async def send_tone(self, frames: int) -> None:
        assert self.transport is not None and self.srtp is not None
        for _ in range(frames):
            payload = self.encoder.encode(self.tone.frame(FRAME_SAMPLES))
            rtp = RtpHeader(111, self.sequence, self.timestamp, self.ssrc).pack() + payload
            self.transport.sendto(self.srtp.protect(rtp), self.peer)
            self.sequence += 1
            self.timestamp += FRAME_SAMPLES
            await asyncio.sleep(0.02)

    def heard_hz(self) -> float | None:
        return dominant_frequency(b"".join(self.heard), SAMPLE_RATE)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.datagrams += 1
        kind = classify(data)
        if kind is Kind.STUN:
            self.stun_replies.put_nowait(stun.parse_message(data))
        elif kind is Kind.DTLS and self.dtls is not None and self.transport is not None:
            for record in self.dtls.feed(data):
                self.transport.sendto(record, addr)
        elif kind is Kind.RTP and self.srtp is not None:
            packet = self.srtp.unprotect(data)
            if packet is not None:
                self.heard.append(self.decoder.decode(parse_rtp(packet)[1]))

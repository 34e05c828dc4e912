"""Meta's side of a business-initiated call's signalling, as far as the media tests need it: a
UDP user agent server where FreeSWITCH's `wa-edge` gateway sends its INVITEs (the edge's
internal address), answering with the SDP a `MediaPeer` writes.

Like Meta it may send `183 Session Progress` with its SDP first (early media: the no-media clock
starts there) and answer later. When the peer's no-media limit strikes before the answer, the
INVITE gets `408 RTP Timeout`; after the answer the call ends with a BYE carrying
`Reason: SIP;cause=408;text="RTP Timeout"`.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from lab.media.sdp import SdpError
from lab.media.sip_uac import SipMessage, parse_message


class AnsweringPeer(Protocol):
    """The media party behind the UAS: Meta's `MediaPeer`, or a plain-RTP business party."""

    on_media_timeout: Callable[[str], None] | None

    def answer(self, sdp: str) -> str: ...

    def start(self) -> None: ...


Peer = TypeVar("Peer", bound=AnsweringPeer)


class SipUas(asyncio.DatagramProtocol, Generic[Peer]):
    """Answers one INVITE at a time on `local`; the media is `peer`'s."""

    def __init__(self, local: tuple[str, int], peer: Peer, *, answer_after_s: float = 0.0) -> None:
        self.local = local
        self.peer = peer
        self.answer_after_s = answer_after_s
        self._transport: asyncio.DatagramTransport | None = None
        self.invite: SipMessage | None = None
        self.source: tuple[str, int] | None = None
        self.to_tag = os.urandom(4).hex()
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.final_status: int | None = None
        self.refusal: str | None = None
        self.cseq = 1
        self._answer_sdp = ""
        self._answer_task: asyncio.Task[None] | None = None

    async def open(self) -> SipUas[Peer]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=self.local)
        self._transport = transport
        return self

    def attach(self, transport: asyncio.DatagramTransport) -> SipUas[Peer]:
        """Answer on a socket someone else owns (a node taking many calls on one port), which
        hands this UAS the datagrams of its call."""
        self._transport = transport
        return self

    def close(self) -> None:
        if self._answer_task is not None:
            self._answer_task.cancel()
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        method = message.first_line.split(" ", 1)[0]
        if message.status is not None:
            return  # the response to our BYE: nothing more to do
        if method == "INVITE":
            if self.invite is None:
                self._on_invite(message, addr)
            return  # a retransmission: our responses are on their way
        if method == "ACK":
            if self.final_status == 200 and not self.answered.is_set():
                self.answered.set()
                self.peer.start()
            return
        self._respond(message, addr, "200 OK")
        if method in ("BYE", "CANCEL"):
            self.ended.set()

    def _on_invite(self, invite: SipMessage, addr: tuple[str, int]) -> None:
        self.invite, self.source = invite, addr
        self._respond(invite, addr, "100 Trying", tag=False)
        try:
            self._answer_sdp = self.peer.answer(invite.body)
        except SdpError as error:
            self.refusal = str(error)
            self.final_status = 488
            self._respond(invite, addr, "488 Not Acceptable Here")
            return
        if self.answer_after_s > 0:
            self._respond(invite, addr, "183 Session Progress", body=self._answer_sdp)
            self.peer.start()  # early media: Meta's clock runs from here
            self.peer.on_media_timeout = self._media_timeout
            self._answer_task = asyncio.create_task(self._answer_later())
        else:
            self.peer.on_media_timeout = self._media_timeout
            self._answer()

    async def _answer_later(self) -> None:
        await asyncio.sleep(self.answer_after_s)
        if self.final_status is None:
            self._answer()
            self.answered.set()

    def _answer(self) -> None:
        assert self.invite is not None and self.source is not None
        self.final_status = 200
        self._respond(self.invite, self.source, "200 OK", body=self._answer_sdp)

    def _media_timeout(self, reason: str) -> None:
        assert self.invite is not None and self.source is not None
        if self.final_status is None:
            self.final_status = 408
            self._respond(self.invite, self.source, "408 RTP Timeout")
        else:
            self.bye('SIP;cause=408;text="RTP Timeout"')
        self.ended.set()

    def bye(self, reason: str | None = None) -> None:
        """Meta's BYE toward FreeSWITCH (To/From swapped from the INVITE's)."""
        invite, source = self.invite, self.source
        assert invite is not None and source is not None and self._transport is not None
        contact = invite.header("Contact") or ""
        match = re.search(r"<([^>]+)>", contact)
        target = match.group(1) if match else f"sip:{source[0]}:{source[1]}"
        self.cseq += 1
        lines = [f"BYE {target} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch=z9hG4bK{os.urandom(6).hex()}",
                 "Max-Forwards: 69",
                 f"From: {invite.header('To')};tag={self.to_tag}", f"To: {invite.header('From')}",
                 f"Call-ID: {invite.header('Call-ID')}", f"CSeq: {self.cseq} BYE"]
        if reason:
            lines.append(f"Reason: {reason}")
        lines.append("Content-Length: 0")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), source)

    def _respond(self, request: SipMessage, addr: tuple[str, int], status: str, *, body: str = "",
                 tag: bool = True) -> None:
        assert self._transport is not None
        lines = [f"SIP/2.0 {status}"]
        for key, value in request.headers:
            lower = key.lower()
            if lower == "to" and tag and ";tag=" not in value:
                lines.append(f"To: {value};tag={self.to_tag}")
            elif lower in ("via", "from", "to", "call-id", "cseq", "record-route"):
                lines.append(f"{key}: {value}")
        if request.first_line.startswith("INVITE") and status.startswith(("18", "200")):
            lines.append(f"Contact: <sip:wa@{self.local[0]}:{self.local[1]}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), addr)

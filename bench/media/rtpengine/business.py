"""The business side of many concurrent calls: one UDP SIP port at a FreeSWITCH node's address,
a lean plain-RTP party per call (lab/media/plain_peer.py), as a stock FreeSWITCH behind
rtpengine would answer them.

lab/media/sip_uas.py answers one INVITE at a time; a load step needs hundreds at once on the
one address the edge's dispatcher knows, so this keeps its calls by Call-ID. Per call it does
what that UAS does: 100 Trying, the peer's plain answer in a 200 (or 488 when the offer is not
plain RTP), the peer started on the ACK (the business's "maiden" packet goes out at once), 200
to the edge's BYE or CANCEL, after which the peer's report is kept for the step.

What the next calls' parties are is set between steps (`configure`): Opus or PCMU only, lean
(load) or decoding what arrives (the check call), and DTMF digits sent half a second after the
ACK.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field

from lab.media.plain_peer import PlainReport, PlainRtpPeer
from lab.media.sdp import SdpError
from lab.media.sip_uac import SipMessage, parse_message

COPIED = ("via", "from", "to", "call-id", "cseq", "record-route")
DTMF_AFTER_S = 0.5


@dataclass
class BusinessCall:
    call_id: str
    to_tag: str = field(default_factory=lambda: os.urandom(4).hex())
    peer: PlainRtpPeer | None = None
    final: str | None = None  # the final response sent, once the peer is open
    started: bool = False


class BusinessParty(asyncio.DatagramProtocol):
    """Answers every INVITE on `local`; `take_ended()` gives the reports of the calls over."""

    def __init__(self, local: tuple[str, int], tone_hz: float) -> None:
        self.local = local
        self.tone_hz = tone_hz
        self.codec = "opus"
        self.lean = True
        self.dtmf = ""
        self.calls: dict[str, BusinessCall] = {}
        self.refused: list[str] = []  # why an offer was refused (488)
        self._ended: dict[str, PlainReport] = {}  # by Call-ID (the edge proxies it unchanged)
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> BusinessParty:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=self.local)
        self._transport = transport
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for call in list(self.calls.values()):
            await self._end(call)
        if self._transport is not None:
            self._transport.close()

    @property
    def active(self) -> int:
        return len(self.calls)

    def configure(self, *, codec: str = "opus", lean: bool = True, dtmf: str = "") -> None:
        """What the parties of the calls from now on are (see the module's docstring)."""
        self.codec, self.lean, self.dtmf = codec, lean, dtmf

    def take_ended(self) -> dict[str, PlainReport]:
        """The reports of the calls ended since the last take, by Call-ID."""
        ended, self._ended = self._ended, {}
        return ended

    # ---- SIP ------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if message.status is not None:
            return  # nothing of ours needs a response
        method = message.first_line.split(" ", 1)[0]
        call_id = message.header("Call-ID") or ""
        call = self.calls.get(call_id)
        if method == "INVITE":
            if call is None:
                call = self.calls[call_id] = BusinessCall(call_id)
                self._respond(message, addr, "100 Trying", call, tag=False)
                self._spawn(self._answer(call, message, addr))
            elif call.final is not None:
                self._respond(message, addr, call.final, call,
                              body=call.peer.sdp() if call.peer and call.final.startswith("200") else "")
            return
        if method == "ACK":
            if call is not None and call.peer is not None and call.final == "200 OK" and not call.started:
                call.started = True
                call.peer.start()
                if self.dtmf:
                    asyncio.get_running_loop().call_later(DTMF_AFTER_S, call.peer.send_dtmf,
                                                          self.dtmf)
            return
        self._respond(message, addr, "200 OK", call)
        if method in ("BYE", "CANCEL") and call is not None:
            self._spawn(self._end(call))

    async def _answer(self, call: BusinessCall, invite: SipMessage, addr: tuple[str, int]) -> None:
        peer = await PlainRtpPeer(tone_hz=self.tone_hz, lean=self.lean, codec=self.codec).open()
        call.peer = peer
        try:
            answer = peer.answer(invite.body)
        except SdpError as error:
            self.refused.append(str(error))
            call.final = "488 Not Acceptable Here"
            self._respond(invite, addr, call.final, call)
            return
        call.final = "200 OK"
        self._respond(invite, addr, call.final, call, body=answer)

    async def _end(self, call: BusinessCall) -> None:
        if self.calls.pop(call.call_id, None) is None:
            return
        if call.peer is not None:
            self._ended[call.call_id] = await call.peer.close()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _respond(self, request: SipMessage, addr: tuple[str, int], status: str,
                 call: BusinessCall | None, *, body: str = "", tag: bool = True) -> None:
        if self._transport is None:
            return
        lines = [f"SIP/2.0 {status}"]
        for key, value in request.headers:
            lower = key.lower()
            if lower == "to" and tag and call is not None and ";tag=" not in value:
                lines.append(f"To: {value};tag={call.to_tag}")
            elif lower in COPIED:
                lines.append(f"{key}: {value}")
        if request.first_line.startswith("INVITE") and status.startswith("200"):
            lines.append(f"Contact: <sip:business@{self.local[0]}:{self.local[1]}>")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self._transport.sendto(("\r\n".join(lines) + "\r\n\r\n" + body).encode(), addr)

    def error_received(self, exc: Exception) -> None:  # ICMP on loopback
        pass


"""A minimal SIP user agent over UDP that places a call at FreeSWITCH the way the Kamailio edge
forwards Meta's user-initiated calls (bare business number, X-WA-* and x-wa-meta-* headers),
with the SDP a `MediaPeer` writes. The tests use it to put real media through a real FreeSWITCH
without the edge; SIPp cannot carry an SDP made at run time.

It does what a UAC must and no more: INVITE retransmissions until a response, ACK for the
final response, our BYE, and a 200 for FreeSWITCH's BYE.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from dataclasses import dataclass, field

from lab.processes import free_port

RETRANSMIT_S = 0.5


@dataclass
class SipMessage:
    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    @property
    def status(self) -> int | None:
        match = re.match(r"SIP/2\.0 (\d{3})", self.first_line)
        return int(match.group(1)) if match else None


def parse_message(data: bytes) -> SipMessage:
    text = data.decode("utf-8", errors="replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipMessage(lines[0], headers, body)


def _token() -> str:
    return os.urandom(6).hex()


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    to_header: str = ""
    remote_target: str = ""
    cseq: int = 2
    route: list[str] = field(default_factory=list)


class SipUac(asyncio.DatagramProtocol):
    """One call at a time from 127.0.0.1:<port> to FreeSWITCH's profile."""

    def __init__(self, server: tuple[str, int], local_ip: str = "127.0.0.1", local_port: int = 0) -> None:
        self.server = server
        self.local_ip = local_ip
        self.local_port = local_port  # a fixed one: a FreeSWITCH node's address at the edge
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.dialog: Dialog | None = None
        self.remote_bye = asyncio.Event()
        self.remote_bye_headers: SipMessage | None = None
        self._meta_user = ""
        self._from_host = "wa.meta.vc"

    async def open(self) -> SipUac:
        loop = asyncio.get_running_loop()
        # a port of free_port()'s when none is given, not port 0 (MediaPeer.open says why)
        port = self.local_port or free_port(socket.SOCK_DGRAM, self.local_ip)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.local_ip, port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if message.status is not None:
            self._responses.put_nowait(message)
        elif message.first_line.startswith("BYE "):
            self.remote_bye_headers = message
            self._reply(message, "200 OK")
            self.remote_bye.set()
        elif not message.first_line.startswith("ACK "):
            self._reply(message, "200 OK")

    def _reply(self, request: SipMessage, status: str) -> None:
        lines = [f"SIP/2.0 {status}"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            lines += [f"{key}: {value}" for key, value in request.headers if key.lower() == name.lower()]
        lines.append("Content-Length: 0")
        self._send("\r\n".join(lines) + "\r\n\r\n")

    def _send(self, text: str) -> None:
        assert self._transport is not None
        self._transport.sendto(text.encode(), self.server)

    def _request(self, method: str, uri: str, dialog: Dialog, cseq: int, extra: list[str],
                 body: str = "", content_type: str = "application/sdp", branch: str | None = None) -> str:
        via = f"SIP/2.0/UDP {self.local_ip}:{self.port};branch={branch or 'z9hG4bK' + _token()};rport"
        lines = [f"{method} {uri} SIP/2.0", f"Via: {via}", "Max-Forwards: 69",
                 f"From: <sip:{self._meta_user}@{self._from_host}>;tag={dialog.from_tag}",
                 f"To: {dialog.to_header}", f"Call-ID: {dialog.call_id}", f"CSeq: {cseq} {method}"]
        lines += [f"Route: {r}" for r in dialog.route]
        lines += extra
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def invite(self, business_number: str, meta_user: str, wacid: str, sdp: str,
                     timeout: float = 15.0, from_host: str = "wa.meta.vc") -> SipMessage:
        """Send the INVITE, return the final response (ACKed already if it is not a 2xx).

        `from_host`: the From domain (a business-initiated call from FreeSWITCH's gateway
        carries the business number at the edge's address; `meta_user` is then that number).
        """
        self._meta_user = meta_user
        self._from_host = from_host
        host, port = self.server
        uri = f"sip:{business_number}@{host}:{port}"
        dialog = Dialog(call_id=f"{_token()}@wa.meta.vc", from_tag=_token(), to_header=f"<{uri}>")
        self.dialog = dialog
        extra = [f"Contact: <sip:{meta_user}@{self.local_ip}:{self.port}>",
                 "Allow: INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS",
                 "User-Agent: Facebook SipGateway", f"x-wa-meta-wacid: {wacid}",
                 f"X-WA-Business-Number: {business_number}", "X-WA-Tgrp: wacall",
                 "X-WA-Trunk-Context: byoc.example.com", "X-WA-Context: whatsapp"]
        branch = f"z9hG4bK{_token()}"
        invite = self._request("INVITE", uri, dialog, dialog.cseq, extra, sdp, branch=branch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        provisional = False
        self._send(invite)
        while True:
            wait = RETRANSMIT_S if not provisional else deadline - loop.time()
            try:
                response = await asyncio.wait_for(self._responses.get(), max(0.01, wait))
            except TimeoutError:
                if loop.time() > deadline:
                    raise TimeoutError("no final response to the INVITE") from None
                if not provisional:
                    self._send(invite)
                continue
            cseq = response.header("CSeq") or ""
            if not cseq.endswith("INVITE"):
                continue
            status = response.status or 0
            if status < 200:
                provisional = True
                continue
            dialog.to_header = response.header("To") or dialog.to_header
            contact = response.header("Contact") or ""
            match = re.search(r"<([^>]+)>", contact)
            dialog.remote_target = match.group(1) if match else uri
            dialog.route = [value for key, value in reversed(response.headers)
                            if key.lower() == "record-route"] if status < 300 else []
            # RFC 3261 17.1.1.3: the ACK of a non-2xx belongs to the INVITE's transaction
            self.ack(branch if status >= 300 else None, uri if status >= 300 else None)
            return response

    def ack(self, branch: str | None = None, uri: str | None = None) -> None:
        dialog = self.dialog
        assert dialog is not None
        self._send(self._request("ACK", uri or dialog.remote_target, dialog, dialog.cseq, [],
                                 branch=branch))

    async def bye(self, duration_s: int, timeout: float = 10.0) -> int:
        """Meta's BYE (with its call duration header); the response status."""
        dialog = self.dialog
        assert dialog is not None
        dialog.cseq += 1
        bye = self._request("BYE", dialog.remote_target, dialog, dialog.cseq,
                            [f"x-wa-meta-call-duration: {duration_s}"])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._send(bye)
        while loop.time() < deadline:
            try:
                response = await asyncio.wait_for(self._responses.get(), RETRANSMIT_S)
            except TimeoutError:
                self._send(bye)
                continue
            if (response.header("CSeq") or "").endswith("BYE"):
                return response.status or 0
        raise TimeoutError("no response to BYE")

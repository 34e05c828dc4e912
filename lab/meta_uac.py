"""Meta placing a user-initiated call at the edge with an SDP made at run time (a `MediaPeer`'s
offer), which SIPp cannot carry: SIP over one TCP connection into the lab's stunnel client,
which carries it over TLS to the edge, as SIPp's Meta does.

It sends what sipp-scenarios/uic-freeswitch-*/meta.xml sends (Meta's Record-Route entries,
x-wa-meta-* headers), answers the edge's 407 with a digest (qop=auth, the algorithm the
challenge names, digest uri = the request URI), ACKs the 200 along the edge's route, ends the
call with Meta's BYE carrying x-wa-meta-call-duration, and answers 200 to anything the edge sends
it (FreeSWITCH's BYE).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import ssl
import time

from lab.media.sip_uac import SipMessage, parse_message

HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
META_RECORD_ROUTE = ["<sip:onevc-sip-proxy.fbinfra.net:8191;transport=tls;lr>",
                     "<sip:wa.meta.vc;transport=tls;lr>"]


def _token() -> str:
    return os.urandom(6).hex()


def digest_authorization(challenge: str, user: str, password: str, method: str, uri: str,
                         cnonce: str | None = None) -> str:
    """RFC 7616 answer (qop=auth) to one `Digest ...` challenge (MD5 or SHA-256, as it names)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.partition(" ")[2]))
    algorithm = fields.get("algorithm", "MD5")
    digest = HASHES[algorithm]

    def h(text: str) -> str:
        return digest(text.encode()).hexdigest()

    cnonce, nc = cnonce or _token(), "00000001"
    realm, nonce = fields["realm"], fields["nonce"]
    ha1, ha2 = h(f"{user}:{realm}:{password}"), h(f"{method}:{uri}")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    parts = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"',
             f'uri="{uri}"', f'response="{response}"', f"algorithm={algorithm}", "qop=auth",
             f"nc={nc}", f'cnonce="{cnonce}"']
    if "opaque" in fields:
        parts.append(f'opaque="{fields["opaque"]}"')
    return "Digest " + ", ".join(parts)


def edge_route(record_routes: list[str], fallback: str) -> str:
    """Meta's route set through the edge from a 2xx's Record-Route values (RFC 3261 12.1.2:
    reversed), without Meta's own entries (its proxies pop those before the edge sees the
    request): the edge's entries exactly as it recorded them, with their MAC. `fallback` when
    the edge recorded none."""
    entries = [e.strip() for value in record_routes for e in value.split(",") if e.strip()]
    own = [e for e in entries if e not in META_RECORD_ROUTE]
    return ",".join(reversed(own)) or fallback


class MetaUac:
    """One user-initiated call over TCP to `port` (the stunnel client in front of the edge).

    With `hosts` (every address the site's name resolves to) and `tls`, it speaks TLS itself to
    the first of them that takes the connection, trying the next one when an address refuses
    or does not answer within `connect_timeout_s`, as a client of a multi-address name does;
    an in-dialog request after the connection broke (its edge died) opens a new one the same
    way. `refused` lists the addresses passed over, `connected_to` the one in use."""

    def __init__(self, port: int, sip_domain: str, meta_user: str, edge_route: str, *,
                 hosts: list[str] | None = None, tls: ssl.SSLContext | None = None,
                 connect_timeout_s: float = 2.0) -> None:
        self.port = port
        self.hosts = hosts or ["127.0.0.1"]
        self.tls = tls
        self.connect_timeout_s = connect_timeout_s
        self.connected_to = ""
        self.refused: list[str] = []
        self.sip_domain = sip_domain
        self.meta_user = meta_user
        self.edge_route = edge_route
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._reading: asyncio.Task[None] | None = None
        self.local = ("127.0.0.1", 0)
        self.remote_bye = asyncio.Event()
        self.remote_bye_reason = ""  # the Reason header of the site's BYE
        self.remote_bye_at = 0.0  # time.monotonic() when it came
        self.remote_bye_in_dialog = False  # its Call-ID and both tags this call's
        self.call_id = f"{_token()}@wa.meta.vc"
        self.from_tag = _token()
        self.to_header = ""
        self.target = ""
        self.cseq = 1

    async def open(self) -> MetaUac:
        for host in self.hosts:
            try:
                self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                    host, self.port, ssl=self.tls,
                    server_hostname=self.sip_domain if self.tls else None), self.connect_timeout_s)
            except (TimeoutError, OSError):
                self.refused.append(host)
                continue
            self.connected_to = host
            break
        else:
            raise ConnectionRefusedError(f"no address of {self.hosts} took the connection")
        assert self._writer is not None
        self.local = self._writer.get_extra_info("sockname")[:2]
        self._reading = asyncio.create_task(self._read())
        return self

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            try:
                head = await self._reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                return
            head = head.lstrip(b"\r\n")  # keep-alive CRLFs
            length = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            body = await self._reader.readexactly(int(length[1])) if length else b""
            message = parse_message(head + body)
            if message.status is not None:
                self._responses.put_nowait(message)
            elif message.first_line.startswith("BYE "):
                self._reply(message)
                if not self.remote_bye.is_set():
                    self.remote_bye_reason = message.header("Reason") or ""
                    self.remote_bye_at = time.monotonic()
                    self.remote_bye_in_dialog = self._in_this_dialog(message)
                self.remote_bye.set()
            elif not message.first_line.startswith("ACK "):
                self._reply(message)

    def _in_this_dialog(self, request: SipMessage) -> bool:
        """A request of the callee's side of this call: our Call-ID, our tag in its To, the
        answer's To tag in its From."""
        answer_tag = re.search(r";tag=([^;>\s]+)", self.to_header)
        return (request.header("Call-ID") == self.call_id
                and f";tag={self.from_tag}" in (request.header("To") or "")
                and answer_tag is not None
                and f";tag={answer_tag[1]}" in (request.header("From") or ""))

    def _reply(self, request: SipMessage) -> None:
        lines = ["SIP/2.0 200 OK"]
        lines += [f"{key}: {value}" for key, value in request.headers
                  if key.lower() in ("via", "from", "to", "call-id", "cseq", "record-route")]
        self._send("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n")

    def _send(self, text: str) -> None:
        assert self._writer is not None
        self._writer.write(text.encode())

    def _request(self, method: str, uri: str, cseq: int, extra: list[str], body: str = "",
                 branch: str | None = None, route: bool = False) -> str:
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/TLS {self.local[0]}:{self.local[1]};"
                 f"branch={branch or 'z9hG4bK' + _token()};rport"]
        if route:
            lines.append(f"Route: {self.edge_route}")
        lines += ["Max-Forwards: 70",
                  f'From: "15550123456" <sip:{self.meta_user}@wa.meta.vc>;tag={self.from_tag}',
                  f"To: {self.to_header}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                  *extra]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    async def _final(self, method: str, timeout: float) -> SipMessage:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            response = await asyncio.wait_for(self._responses.get(),
                                              max(0.01, deadline - loop.time()))
            if (response.header("CSeq") or "").endswith(method) and (response.status or 0) >= 200:
                return response

    async def invite(self, ruri_user: str, digits: str, password: str, wacid: str,
                     cta_payload: str, sdp: str, timeout: float = 15.0) -> SipMessage:
        """INVITE, the 407 answered, the final response (a 2xx ACKed along the edge's route)."""
        uri = f"sip:{ruri_user}@{self.sip_domain};transport=tls"
        self.to_header = f"<sip:{ruri_user}@{self.sip_domain}>"
        extra = [f"Contact: <sip:{self.meta_user}@{self.local[0]}:{self.local[1]};transport=tls;ob>"
                 ";isfocus",
                 *(f"Record-Route: {rr}" for rr in META_RECORD_ROUTE),
                 "Allow: INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS",
                 "User-Agent: Facebook SipGateway", "X-FB-External-Domain: wa.meta.vc",
                 f"x-wa-meta-wacid: {wacid}", f"x-wa-meta-cta-payload: {cta_payload}"]
        branch = f"z9hG4bK{_token()}"
        self._send(self._request("INVITE", uri, self.cseq, extra, sdp, branch=branch))
        response = await self._final("INVITE", timeout)
        if response.status == 407:
            self._ack_negative(uri, branch, response)
            challenge = response.header("Proxy-Authenticate") or ""
            authorization = digest_authorization(challenge, digits, password, "INVITE", uri)
            self.cseq += 1
            self._send(self._request("INVITE", uri, self.cseq,
                                     [*extra, f"Proxy-Authorization: {authorization}"], sdp))
            response = await self._final("INVITE", timeout)
        self.to_header = response.header("To") or self.to_header
        if (response.status or 0) >= 300:
            return response
        contact = re.search(r"<([^>]+)>", response.header("Contact") or "")
        self.target = contact[1] if contact else uri
        self.edge_route = edge_route([v for k, v in response.headers
                                      if k.lower() == "record-route"], self.edge_route)
        self._send(self._request("ACK", self.target, self.cseq, [], route=True))
        return response

    def _ack_negative(self, uri: str, branch: str, response: SipMessage) -> None:
        """RFC 3261 17.1.1.3: the ACK of a non-2xx is hop-by-hop, the INVITE's branch."""
        to = response.header("To") or self.to_header
        saved, self.to_header = self.to_header, to
        self._send(self._request("ACK", uri, self.cseq, [], branch=branch))
        self.to_header = saved

    async def reconnect_if_broken(self) -> None:
        """A new connection (first address that takes it) when the reader has ended."""
        if self._reading is not None and self._reading.done():
            await self.close()
            await self.open()

    async def bye(self, wacid: str, duration_s: int, timeout: float = 10.0) -> int:
        """Meta's BYE along the edge's route; the response's status."""
        await self.reconnect_if_broken()
        self.cseq += 1
        self._send(self._request("BYE", self.target, self.cseq,
                                 [f"x-wa-meta-wacid: {wacid}",
                                  f"x-wa-meta-call-duration: {duration_s}"], route=True))
        return (await self._final("BYE", timeout)).status or 0

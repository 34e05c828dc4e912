"""Raw SIP for the attack tests: Meta's TLS side as bytes, FreeSWITCH as a bare UDP socket.

SIPp cannot send forged To-tags with a Route of our choosing, invalid UTF-8 or broken
credentials, and cannot listen on a port and report "nothing arrived"; these small peers can.
Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.edge import LAB_PASSWORD, EdgeLab

NUMBER = "+15550100001"
META_USER = "+15550123456"


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def header_values(message: str, name: str) -> list[str]:
    """Values of header `name` (case-insensitive) in one SIP message, in order."""
    head = message.split("\r\n\r\n", 1)[0]
    found = []
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            found.append(value.strip())
    return found


def reply_to(request: str, status: int, reason: str, extra: bytes = b"") -> bytes:
    """A response to `request` (its Via, From, To, Call-ID and CSeq), with `extra` header bytes."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines += [f"{name}: {value}" for value in header_values(request, name)]
    head = "\r\n".join(lines).encode() + b"\r\n" + extra
    return head + b"Content-Length: 0\r\n\r\n"


def split_messages(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete messages at the front of a stream buffer (Content-Length framed), and the rest."""
    messages = []
    while b"\r\n\r\n" in buffer:
        head, _, rest = buffer.partition(b"\r\n\r\n")
        match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
        length = int(match[1]) if match else 0
        if len(rest) < length:
            break
        messages.append(head + b"\r\n\r\n" + rest[:length])
        buffer = rest[length:]
    return messages, buffer


class MetaTls:
    """One TLS connection to the edge's Meta socket: send raw bytes, read answers by Call-ID.
    `host`: the edge's address (another than 127.0.0.1 for edge B of a two-edge site)."""

    def __init__(self, edge: EdgeLab, host: str = "127.0.0.1") -> None:
        context = ssl.create_default_context(cafile=str(edge.ca.certificate))
        raw = socket.create_connection((host, edge.ports.tls), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=edge.config.site.sip_domain)
        self.domain = edge.config.site.sip_domain
        self.port = int(self.sock.getsockname()[1])
        self.buffer = b""
        self.pending: list[str] = []

    def __enter__(self) -> MetaTls:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, message: bytes | str) -> None:
        self.sock.sendall(message.encode() if isinstance(message, str) else message)

    def answer(self, call_id: str, final: bool = True, timeout: float = 5) -> str:
        """The next response (final unless `final` is False) or request carrying `call_id`."""
        deadline = time.monotonic() + timeout
        while True:
            for index, text in enumerate(self.pending):
                if call_id in header_values(text, "Call-ID") and not (
                        final and text.startswith("SIP/2.0 1")):
                    return self.pending.pop(index)
            self.pending = [t for t in self.pending
                            if not (call_id in header_values(t, "Call-ID")
                                    and t.startswith("SIP/2.0 1"))]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no answer for Call-ID {call_id} within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError("the edge closed the TLS connection")
            messages, self.buffer = split_messages(self.buffer + chunk)
            self.pending += [m.decode(errors="replace") for m in messages]


class UdpPeer:
    """A UDP socket on loopback playing FreeSWITCH (or any host the edge must not reach)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.port = port

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> list[str]:
        """Everything that arrives within `timeout` seconds (after the last arrival)."""
        got: list[str] = []
        self.sock.settimeout(timeout)
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                return got
            got.append(data.decode(errors="replace"))

    def answer(self, call_id: str, timeout: float = 5) -> str:
        """The next message carrying `call_id`; fails after `timeout` seconds."""
        return self._next(lambda text: f"Call-ID: {call_id}\r\n" in text, timeout,
                          f"Call-ID {call_id}")

    def request(self, method: str, timeout: float = 10) -> str:
        """The next request with `method`, skipping anything else; fails after `timeout`."""
        return self._next(lambda text: text.startswith(method + " "), timeout, method)

    def _next(self, wanted: Callable[[str], bool], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                break
            text = data.decode(errors="replace")
            if wanted(text):
                return text
        raise AssertionError(f"no {what} reached port {self.port} within {timeout} s")

    def hang_up(self, invite: str, edge_port: int, to_tag: str) -> None:
        """FreeSWITCH's BYE for the call `invite` set up (it answered with `to_tag`): to the
        caller's Contact through the Record-Route set, as a UAS builds it (RFC 3261 12.1.1)."""
        contact = header_values(invite, "Contact")[0].strip("<>")
        lines = [
            f"BYE {contact} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK-bye-{to_tag};rport",
            "Max-Forwards: 70",
            f"From: {header_values(invite, 'To')[0]};tag={to_tag}",
            f"To: {header_values(invite, 'From')[0]}",
            f"Call-ID: {header_values(invite, 'Call-ID')[0]}",
            "CSeq: 1 BYE",
            *(f"Route: {route}" for route in header_values(invite, "Record-Route")),
            "Content-Length: 0", "", "",
        ]
        self.sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", edge_port))

    def reply(self, request: str, status: int, reason: str, to_tag: str = "fs-tag",
              edge_port: int = 0, extra: tuple[str, ...] = ()) -> None:
        """Answer `request` as FreeSWITCH would: Record-Route copied, Contact this socket,
        `extra` header lines after it."""
        lines = [f"SIP/2.0 {status} {reason}"]
        for name in ("Via", "Record-Route", "From", "Call-ID", "CSeq"):
            lines += [f"{name}: {v}" for v in header_values(request, name)]
        to = header_values(request, "To")[0]
        lines.append(f"To: {to}" if ";tag=" in to else f"To: {to};tag={to_tag}")
        lines += [f"Contact: <sip:fs@127.0.0.1:{self.port}>", *extra, "Content-Length: 0", "",
                  ""]
        via = header_values(request, "Via")[0]
        host_port = re.match(r"SIP/2.0/UDP ([^;]+)", via)
        assert host_port, via
        host, _, port = host_port[1].partition(":")
        self.sock.sendto("\r\n".join(lines).encode(), (host, int(port or edge_port or 5060)))


@dataclass(frozen=True)
class DigestParts:
    """What a digest response is computed from; tests change one field to attack the edge."""

    username: str
    realm: str
    nonce: str
    uri: str
    method: str = "INVITE"
    qop: bool = True
    nc: str = "00000001"
    # fresh per response, as a client makes it: a site's replay check ([cluster]) keys nc by
    # nonce and cnonce, and every challenge of one second carries the same nonce
    cnonce: str = field(default_factory=lambda: secrets.token_hex(4))
    opaque: str | None = None


def challenge_params(challenge: str) -> dict[str, str]:
    header = (header_values(challenge, "Proxy-Authenticate")
              or header_values(challenge, "WWW-Authenticate"))[0]
    return dict(re.findall(r'(\w+)="?([^",]*)"?', header))


def digest_header(parts: DigestParts, password: str) -> str:
    ha1 = md5_hex(f"{parts.username}:{parts.realm}:{password}")
    ha2 = md5_hex(f"{parts.method}:{parts.uri}")
    if parts.qop:
        response = md5_hex(f"{ha1}:{parts.nonce}:{parts.nc}:{parts.cnonce}:auth:{ha2}")
        tail = f', cnonce="{parts.cnonce}", qop=auth, nc={parts.nc}'
    else:
        response = md5_hex(f"{ha1}:{parts.nonce}:{ha2}")
        tail = ""
    if parts.opaque is not None:
        tail += f', opaque="{parts.opaque}"'
    return (f'Digest username="{parts.username}", realm="{parts.realm}", '
            f'nonce="{parts.nonce}", uri="{parts.uri}", response="{response}", '
            f"algorithm=MD5{tail}")


def invite(tls: MetaTls, call_id: str, cseq: int = 1, *, number: str = NUMBER,
           authorization: str = "", auth_header: str = "Proxy-Authorization",
           to_tag: str = "", routes: tuple[str, ...] = (), method: str = "INVITE",
           extra: tuple[str, ...] = ()) -> str:
    """An INVITE (or other `method`) from Meta over `tls`; returns the request URI it used."""
    uri = f"sip:{number}@{tls.domain};transport=tls"
    to = f"To: <sip:{number}@{tls.domain}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{tls.port};branch=z9hG4bK-{call_id}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{META_USER}@wa.meta.vc>;tag=from-{call_id}",
        to,
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{META_USER}@127.0.0.1:{tls.port};transport=tls>",
        *(f"Route: {route}" for route in routes),
        *extra,
    ]
    if authorization:
        lines.append(f"{auth_header}: {authorization}")
    lines += ["Content-Length: 0", "", ""]
    tls.send("\r\n".join(lines))
    return uri


def authenticated_invite(tls: MetaTls, call_id: str, password: str, *,
                         number: str = NUMBER, qop: bool = True,
                         digest_uri: str | None = None,
                         extra: tuple[str, ...] = ()) -> str:
    """INVITE, read the challenge, INVITE again with a digest; returns the header it sent.

    The caller reads the answer: a relayed INVITE is answered only when FreeSWITCH answers.
    """
    uri = invite(tls, call_id, 1, number=number)
    challenge = tls.answer(call_id)
    assert challenge.startswith(("SIP/2.0 407", "SIP/2.0 401")), challenge
    params = challenge_params(challenge)
    parts = DigestParts(number.removeprefix("+"), params["realm"], params["nonce"],
                        digest_uri or uri, qop=qop, opaque=params.get("opaque"))
    header = digest_header(parts, password)
    name = "Authorization" if challenge.startswith("SIP/2.0 401") else "Proxy-Authorization"
    invite(tls, call_id, 2, number=number, authorization=header, auth_header=name, extra=extra)
    return header


@dataclass
class Call:
    """A call set up through the edge: what Meta needs to send in-dialog requests."""

    call_id: str
    from_tag: str
    to_tag: str
    routes: tuple[str, ...]
    contact: str
    invite: str  # the INVITE as FreeSWITCH received it


def establish(tls: MetaTls, node: UdpPeer, call_id: str) -> Call:
    """Meta calls, FreeSWITCH (`node`) answers 200; Meta ACKs. Returns Meta's dialog view."""
    authenticated_invite(tls, call_id, LAB_PASSWORD)
    request = node.request("INVITE")
    node.reply(request, 200, "OK", to_tag="fs-" + call_id)
    ok = tls.answer(call_id)
    assert ok.startswith("SIP/2.0 200"), ok
    entries = [e.strip() for v in header_values(ok, "Record-Route") for e in v.split(",")]
    contact = header_values(ok, "Contact")[0].strip("<>")
    call = Call(call_id, f"from-{call_id}", f"fs-{call_id}", tuple(reversed(entries)), contact,
                request)
    in_dialog(tls, call, "ACK", 2)
    assert node.request("ACK")
    return call


def in_dialog(tls: MetaTls, call: Call, method: str, cseq: int,
              routes: tuple[str, ...] | None = None, target: str | None = None,
              extra: tuple[str, ...] = ()) -> None:
    lines = [
        f"{method} {target or call.contact} SIP/2.0",
        f"Via: SIP/2.0/TLS 127.0.0.1:{tls.port};branch=z9hG4bK-{call.call_id}-{method}{cseq}"
        ";rport",
        "Max-Forwards: 70",
        f"From: <sip:{META_USER}@wa.meta.vc>;tag={call.from_tag}",
        f"To: <sip:+15550100001@{tls.domain}>;tag={call.to_tag}",
        f"Call-ID: {call.call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{META_USER}@127.0.0.1:{tls.port};transport=tls>",
        *(f"Route: {r}" for r in (call.routes if routes is None else routes)),
        *extra,
        "Content-Length: 0", "", "",
    ]
    tls.send("\r\n".join(lines))

"""A SIP mutation fuzzer: real requests from Meta's side, broken the ways attackers break them.

Each message starts from one of the requests the edge really sees (Meta's INVITE with its SDP
and x-wa-meta-* headers, ACK, BYE with the call duration, CANCEL, OPTIONS, REGISTER, MESSAGE,
INFO, UPDATE, PRACK, NOTIFY, REFER, SUBSCRIBE, or a stray response) and gets one to three
mutations: invalid UTF-8 in the method, request URI or headers; a forged To-tag with a Route
toward a FreeSWITCH port (the in-dialog relay hole); broken or foreign digest credentials;
dropped, doubled, oversized, truncated or bit-flipped parts; wrong numbers; header injection.
The same seed gives the same messages, so a failure can be replayed.

    python -m lab.attack.sip_fuzz --count 5 --seed 1      # print a few, to read them

`send_udp` and `TlsSender` deliver them from attacker addresses (127.0.0.2 and up), bounded in
count and time; the security tests and `make bench-abuse` share them.
"""

from __future__ import annotations

import argparse
import random
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from lab.attack.targets import Target, connect
from lab.attack.tls_hold import scanner_context

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class FuzzContext:
    """Where the messages point: the edge's domain and number, and the FreeSWITCH host's
    ports that forged Routes aim at (every one of them must stay unreached)."""

    sip_domain: str
    business_number: str
    edge_tls_port: int
    edge_internal_port: int
    freeswitch_ports: tuple[int, ...]
    freeswitch_host: str = "127.0.0.1"


@dataclass
class SipMessage:
    start_line: bytes
    headers: list[Header]
    body: bytes = b""
    content_length: bytes | None = None  # None: the real length; a mutation may set a lie
    raw_tail: bytes | None = None  # set by byte-level mutations: replaces serialization

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        for index, (key, _) in enumerate(self.headers):
            if key.lower() == name.lower():
                self.headers[index] = (key, value)
                return
        self.headers.append((name, value))

    def to_bytes(self) -> bytes:
        if self.raw_tail is not None:
            return self.raw_tail
        length = self.content_length if self.content_length is not None else str(
            len(self.body)).encode()
        lines = [self.start_line, *(k + b": " + v for k, v in self.headers),
                 b"Content-Length: " + length]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


METHODS = (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"MESSAGE", b"INFO",
           b"UPDATE", b"PRACK", b"NOTIFY", b"REFER", b"SUBSCRIBE")
SDP = (b"v=0\r\no=- 1 1 IN IP4 157.240.0.10\r\ns=-\r\nc=IN IP4 157.240.0.10\r\nt=0 0\r\n"
       b"m=audio 40000 UDP/TLS/RTP/SAVPF 111 126\r\na=rtpmap:111 opus/48000/2\r\n"
       b"a=fmtp:111 useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\n"
       b"a=ice-lite\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n"
       b"a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:"
       b"FF:00:11:22:33:44:55:66:77:88:99\r\na=setup:actpass\r\na=rtcp-mux\r\na=sendrecv\r\n")
INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\x80\x80",
                b"\xf8\x88\x80\x80\x80", b"\xc3\x28", b"\xf0\x28\x8c\x28")


def base_message(method: bytes, ctx: FuzzContext, rng: random.Random, serial: int) -> SipMessage:
    """A request as Meta sends it over TLS (or a response, for method b'SIP/2.0')."""
    number = ctx.business_number.encode()
    domain = ctx.sip_domain.encode()
    call_id = b"fuzz-%d-%x@wa.meta.vc" % (serial, rng.getrandbits(32))
    branch = b"z9hG4bK-fuzz-%d" % serial
    cseq_number = rng.choice((1, 1, 2, 3, 101))
    via = b"SIP/2.0/TLS 157.240.0.10:5061;branch=" + branch + b";rport"
    from_ = b'"15550123456" <sip:+15550123456@wa.meta.vc>;tag=fuzzfrom' + str(serial).encode()
    if method == b"SIP/2.0":
        return SipMessage(b"SIP/2.0 200 OK", [
            (b"Via", b"SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-stray" % ctx.edge_internal_port),
            (b"From", from_), (b"To", b"<sip:" + number + b"@" + domain + b">;tag=x"),
            (b"Call-ID", call_id), (b"CSeq", b"1 INVITE")])
    request_uri = b"sip:" + number + b";tgrp=wacall@" + domain + b";transport=tls"
    if method == b"REGISTER":
        request_uri = b"sip:" + domain
    headers: list[Header] = [
        (b"Via", via), (b"Max-Forwards", b"70"), (b"From", from_),
        (b"To", b"<sip:" + number + b"@" + domain + b">"), (b"Call-ID", call_id),
        (b"CSeq", b"%d %s" % (cseq_number, method)),
        (b"Contact", b"<sip:+15550123456@157.240.0.10:5061;transport=tls;ob>;isfocus"),
        (b"User-Agent", b"Facebook SipGateway"),
    ]
    body = b""
    if method == b"INVITE":
        headers += [(b"Record-Route", b"<sip:onevc-sip-proxy.fbinfra.net:8191;transport=tls;lr>"),
                    (b"Record-Route", b"<sip:wa.meta.vc;transport=tls;lr>"),
                    (b"Allow", b"INVITE, ACK, BYE, CANCEL, NOTIFY, OPTIONS"),
                    (b"X-FB-External-Domain", b"wa.meta.vc"),
                    (b"x-wa-meta-wacid", b"wacid.HBgLMTU1NTAxMjM0NTYVAgARGBIyRjE"),
                    (b"Content-Type", b"application/sdp")]
        body = SDP
    elif method == b"BYE":
        headers.append((b"x-wa-meta-call-duration", b"7"))
    elif method in (b"MESSAGE", b"INFO"):
        headers.append((b"Content-Type", b"text/plain"))
        body = b"hello"
    elif method == b"NOTIFY":
        headers += [(b"Event", b"refer"), (b"Subscription-State", b"active")]
    elif method == b"REFER":
        headers.append((b"Refer-To", b"<sip:+15550000000@wa.meta.vc>"))
    elif method == b"REGISTER":
        headers.append((b"Expires", b"3600"))
    return SipMessage(method + b" " + request_uri + b" SIP/2.0", headers, body)


# ---- mutations ------------------------------------------------------------------------------

Mutation = Callable[[SipMessage, random.Random, FuzzContext], None]


def _bad_bytes(rng: random.Random) -> bytes:
    return rng.choice(INVALID_UTF8)


def invalid_utf8_method(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    method, _, rest = msg.start_line.partition(b" ")
    cut = rng.randint(0, len(method))
    msg.start_line = method[:cut] + _bad_bytes(rng) + method[cut:] + b" " + rest


def invalid_utf8_request_uri(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    parts = msg.start_line.split(b" ")
    if len(parts) >= 2:
        uri = parts[1]
        cut = rng.randint(4, max(4, len(uri)))
        parts[1] = uri[:cut] + _bad_bytes(rng) + uri[cut:]
        msg.start_line = b" ".join(parts)


def invalid_utf8_header(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    names = [b"From", b"To", b"Contact", b"Call-ID", b"User-Agent", b"X-WA-Business-Number",
             b"x-wa-meta-cta-payload", b"Subject", b"Proxy-Authorization"]
    name = rng.choice(names)
    value = msg.header(name) or b"x"
    cut = rng.randint(0, len(value))
    msg.set_header(name, value[:cut] + _bad_bytes(rng) + value[cut:])


def forged_in_dialog(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    """A To-tag out of nowhere and a Route toward a FreeSWITCH port; spoofed X-WA-* headers."""
    method = rng.choice((b"INVITE", b"MESSAGE", b"BYE", b"INFO", b"NOTIFY", b"UPDATE",
                         b"REFER", b"ACK", b"OPTIONS"))
    _, _, rest = msg.start_line.partition(b" ")
    port = rng.choice(ctx.freeswitch_ports)
    host = ctx.freeswitch_host.encode()
    target = rng.choice((
        b"sip:%s:%d" % (host, port),
        b"sip:+15550100001@%s:%d" % (host, port),
    ))
    msg.start_line = method + b" " + (target if rng.random() < 0.5 else rest.rsplit(b" ", 1)[0]) \
        + b" SIP/2.0"
    to = msg.header(b"To") or b"<sip:x@y>"
    msg.set_header(b"To", to.split(b";tag=")[0] + b";tag=forged%d" % rng.getrandbits(16))
    cseq = msg.header(b"CSeq") or b"1 INVITE"
    msg.set_header(b"CSeq", cseq.split(b" ")[0] + b" " + method)
    own = (b"<sip:127.0.0.1:%d;transport=tls;r2=on;lr;ftag=x;did=%d.%d>" % (
        ctx.edge_tls_port, rng.getrandbits(12), rng.getrandbits(12)),
        b"<sip:127.0.0.1:%d;r2=on;lr;ftag=x>" % ctx.edge_internal_port)
    routes = [b"<sip:%s:%d;lr>" % (host, port)]
    if rng.random() < 0.5:
        routes = [*own, *routes]
    msg.headers = [h for h in msg.headers if h[0].lower() != b"route"]
    msg.headers[1:1] = [(b"Route", r) for r in routes]
    msg.headers += [(b"X-WA-Auth", b"digest"), (b"X-WA-Business-Number", ctx.business_number.encode())]


def bad_digest(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    user = ctx.business_number.removeprefix("+").encode()
    realm = ctx.sip_domain.encode()
    uri = msg.start_line.split(b" ")[1] if b" " in msg.start_line else b"sip:x"
    nonce = b"%032x" % rng.getrandbits(128)
    response = b"%032x" % rng.getrandbits(128)
    full = (b'Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            b'algorithm=MD5, cnonce="abc", qop=auth, nc=00000001' % (user, realm, nonce, uri, response))
    choices = (
        b"Digest",
        b"Basic dXNlcjpwYXNz",
        b"Digest " + b"a" * rng.randint(100, 5000),
        full.replace(b', cnonce="abc", qop=auth, nc=00000001', b""),  # RFC 2069, no qop
        full.replace(b"qop=auth", b"qop=auth-int"),
        full.replace(b'uri="' + uri + b'"', b'uri="sip:+15559999999@' + realm + b'"'),
        full.replace(b"MD5", b"SHA-256"),
        full.replace(b"nc=00000001", b"nc=ffffffffffffffff"),
        full.replace(b'response="', b'response="' + _bad_bytes(rng)),
        full.replace(b'username="' + user, b'username="' + user + _bad_bytes(rng)),
        full[: rng.randint(7, len(full))],
        full + b", " + full[7:],  # every parameter twice
        full.replace(b'nonce="' + nonce + b'"', b'nonce="' + b"n" * 4000 + b'"'),
        full.replace(b'"', b""),
    )
    name = rng.choice((b"Proxy-Authorization", b"Proxy-Authorization", b"Authorization"))
    msg.headers.append((name, rng.choice(choices)))
    if rng.random() < 0.2:
        msg.headers.append((name, rng.choice(choices)))


def drop_header(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    if rng.random() < 0.3:
        msg.content_length = b""
    if msg.headers:
        del msg.headers[rng.randrange(len(msg.headers))]


def duplicate_header(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    if not msg.headers:
        return
    key, value = rng.choice(msg.headers)
    if rng.random() < 0.5:
        value = value[: len(value) // 2] + b"-other"
    msg.headers.insert(rng.randrange(len(msg.headers) + 1), (key, value))
    if rng.random() < 0.2:
        msg.headers.append((b"Content-Length", b"%d" % rng.randint(0, 99999)))


def oversize(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    choice = rng.random()
    if choice < 0.4:
        msg.headers.append((b"X-Long", b"A" * rng.randint(2000, 60000)))
    elif choice < 0.7:
        msg.headers += [(b"X-Many-%d" % i, b"v") for i in range(rng.randint(100, 1500))]
    else:
        msg.headers += [(b"Via", b"SIP/2.0/TLS 10.0.0.%d:5061;branch=z9hG4bK-%d" % (i % 250, i))
                        for i in range(rng.randint(20, 400))]


def wrong_numbers(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    field_ = rng.choice((b"CSeq", b"Max-Forwards", b"Content-Length", b"Expires"))
    value = rng.choice((b"-1", b"0", b"4294967296", b"99999999999999999999", b"abc", b"",
                        b"1e9", b" 12 ", b"0x10", b"\x00"))
    if field_ == b"Content-Length":
        msg.content_length = rng.choice((value, b"%d" % (len(msg.body) + rng.randint(1, 5000)),
                                         b"%d" % max(0, len(msg.body) - rng.randint(1, 50))))
    elif field_ == b"CSeq":
        method = (msg.header(b"CSeq") or b"1 INVITE").split(b" ")[-1]
        msg.set_header(b"CSeq", value + b" " + method)
    else:
        msg.set_header(field_, value)


def truncate(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    data = msg.to_bytes()
    msg.raw_tail = data[: rng.randint(1, max(1, len(data) - 1))]


def flip_bytes(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    data = bytearray(msg.to_bytes())
    for _ in range(rng.randint(1, 12)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    msg.raw_tail = bytes(data)


def inject(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    """CRLF / bare LF / NUL inside header values: smuggled headers must not appear."""
    payload = rng.choice((b"\r\nX-WA-Auth: digest", b"\nX-WA-Context: admin", b"\x00hidden",
                          b"\rRoute: <sip:127.0.0.1:%d;lr>" % rng.choice(ctx.freeswitch_ports),
                          b"\r\n\r\nINVITE sip:smuggled SIP/2.0"))
    if msg.headers:
        index = rng.randrange(len(msg.headers))
        key, value = msg.headers[index]
        msg.headers[index] = (key, value + payload)


def start_line(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    method, _, rest = msg.start_line.partition(b" ")
    uri, _, version = rest.rpartition(b" ")
    choice = rng.randrange(9)
    if choice == 0:
        version = rng.choice((b"SIP/3.0", b"SIP/2", b"HTTP/1.1", b"", b"sip/2.0"))
    elif choice == 1:
        method = method.lower()
    elif choice == 2:
        uri = b"sip:" + b"9" * rng.randint(100, 3000) + b"@" + ctx.sip_domain.encode()
    elif choice == 3:
        uri = rng.choice((b"tel:+15550100001", b"sips:+15550100001@" + ctx.sip_domain.encode(),
                          b"http://x/", b"sip:+15550100001@127.0.0.1", b"sip:[::1",
                          b"sip:+15550100001@[::1]:5060", b"<sip:x>", b"sip:@", b""))
    elif choice == 4:
        method = rng.choice((b"FOO", b"INVITEX", b"I" * 200, b"PUBLISH", b"", b"-"))
    elif choice == 5:
        msg.start_line = method + b"  " + uri + b"\t" + version
        return
    elif choice == 6:
        msg.start_line = b"SIP/2.0 " + rng.choice((b"200 OK", b"999 X", b"0", b"abc", b"407"))
        return
    elif choice == 7:
        uri = uri.replace(b"@", b";user=phone;maddr=127.0.0.1;lr@")
    else:
        method = rng.choice(METHODS)
    msg.start_line = method + b" " + uri + b" " + version


def mangle_via(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    value = rng.choice((
        b"SIP/2.0/TLS 157.240.0.10:5061;branch=nocookie",
        b"SIP/2.0/SCTP 157.240.0.10;branch=z9hG4bK-x",
        b"SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-x;received=10.0.0.1;rport=1" % rng.choice(
            ctx.freeswitch_ports),
        b"SIP/2.0/TLS [::1:5061;branch=z9hG4bK-x",
        b"SIP/2.0/TLS 157.240.0.10:99999;branch=z9hG4bK-x",
        b"",
        b"garbage",
    ))
    msg.set_header(b"Via", value)


def mangle_body(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    choice = rng.randrange(4)
    if choice == 0:
        msg.body = rng.randbytes(rng.randint(1, 3000))
    elif choice == 1:
        msg.body = SDP.replace(b"opus", b"opus" + _bad_bytes(rng))
    elif choice == 2:
        msg.body = SDP * rng.randint(5, 40)
    else:
        msg.body = SDP.replace(b"\r\n", b"\n")
    if msg.header(b"Content-Type") is None:
        msg.headers.append((b"Content-Type", b"application/sdp"))


def compact_and_case(msg: SipMessage, rng: random.Random, ctx: FuzzContext) -> None:
    compact = {b"via": b"v", b"from": b"f", b"to": b"t", b"call-id": b"i", b"contact": b"m",
               b"content-type": b"c", b"subject": b"s"}
    msg.headers = [(compact.get(k.lower(), k.swapcase()) if rng.random() < 0.5 else k.upper(), v)
                   for k, v in msg.headers]


MUTATIONS: dict[str, Mutation] = {
    "invalid-utf8-method": invalid_utf8_method,
    "invalid-utf8-request-uri": invalid_utf8_request_uri,
    "invalid-utf8-header": invalid_utf8_header,
    "forged-in-dialog": forged_in_dialog,
    "bad-digest": bad_digest,
    "drop-header": drop_header,
    "duplicate-header": duplicate_header,
    "oversize": oversize,
    "wrong-numbers": wrong_numbers,
    "inject": inject,
    "start-line": start_line,
    "mangle-via": mangle_via,
    "mangle-body": mangle_body,
    "compact-and-case": compact_and_case,
    "truncate": truncate,
    "flip-bytes": flip_bytes,
}
# byte-level mutations go last: after them the structure is no longer used
_BYTE_LEVEL = ("truncate", "flip-bytes")


@dataclass
class FuzzCase:
    serial: int
    base: str
    mutations: tuple[str, ...]
    data: bytes


def mutated_messages(ctx: FuzzContext, count: int, seed: int = 10,
                     only: tuple[str, ...] | None = None) -> Iterator[FuzzCase]:
    """`count` fuzz cases, the same for the same seed; `only` limits the mutations used."""
    rng = random.Random(seed)
    structural = [m for m in MUTATIONS if m not in _BYTE_LEVEL and (only is None or m in only)]
    byte_level = [m for m in _BYTE_LEVEL if only is None or m in only]
    for serial in range(count):
        method = rng.choice((*METHODS, b"INVITE", b"INVITE", b"INVITE", b"SIP/2.0"))
        msg = base_message(method, ctx, rng, serial)
        chosen = rng.sample(structural, k=min(len(structural), rng.choice((1, 1, 2, 3))))
        if byte_level and (not chosen or rng.random() < 0.15):
            chosen.append(rng.choice(byte_level))
        for name in chosen:
            MUTATIONS[name](msg, rng, ctx)
        yield FuzzCase(serial, method.decode(), tuple(chosen), msg.to_bytes())


def flood_messages(ctx: FuzzContext, count: int, seed: int = 20) -> Iterator[FuzzCase]:
    """Well-formed requests, as a flood sends them: INVITEs without credentials and OPTIONS,
    each with its own Call-ID (what pike must throttle, not the parser)."""
    rng = random.Random(seed)
    for serial in range(count):
        method = b"INVITE" if serial % 2 == 0 else b"OPTIONS"
        yield FuzzCase(serial, method.decode(), (),
                       base_message(method, ctx, rng, 1_000_000 + serial).to_bytes())


# ---- delivery -------------------------------------------------------------------------------

@dataclass
class SendReport:
    sent: int = 0
    replies: int = 0
    reconnects: int = 0
    failed: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)

    def note_reply(self, data: bytes) -> None:
        self.replies += 1
        status = data[8:11].decode(errors="replace") if data.startswith(b"SIP/2.0 ") else "other"
        self.statuses[status] = self.statuses.get(status, 0) + 1


def paced(cases: Iterator[FuzzCase], time_limit_s: float,
          rate_per_s: float) -> Iterator[tuple[int, FuzzCase]]:
    """(index, case) until the cases or `time_limit_s` run out, `rate_per_s` a second at most
    (0 = unpaced)."""
    start = time.monotonic()
    for index, case in enumerate(cases):
        now = time.monotonic()
        if now - start >= time_limit_s:
            return
        if rate_per_s > 0 and (due := start + index / rate_per_s) > now:
            time.sleep(due - now)
        yield index, case


def send_udp(target: Target, cases: Iterator[FuzzCase], sources: list[str],
             time_limit_s: float, rate_per_s: float = 0.0,
             on_progress: Callable[[SendReport], None] | None = None) -> SendReport:
    """Each case as one datagram, sources in turn; replies are drained without waiting.

    Bounded by the cases given and by `time_limit_s`; `rate_per_s` (0 = as fast as possible)
    paces the sending.
    """
    report = SendReport()
    sockets = []
    for source in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source, 0))
        sock.setblocking(False)
        sockets.append(sock)
    start = time.monotonic()
    try:
        for index, case in paced(cases, time_limit_s, rate_per_s):
            sock = sockets[index % len(sockets)]
            try:
                sock.sendto(case.data[:65000], target.address)
                report.sent += 1
            except OSError:
                report.failed += 1
            _drain_udp(sockets[(index + 1) % len(sockets)], report)
            if on_progress is not None and report.sent % 1000 == 0:
                report.seconds = time.monotonic() - start
                on_progress(report)
        time.sleep(0.2)
        for sock in sockets:
            _drain_udp(sock, report)
    finally:
        for sock in sockets:
            sock.close()
    report.seconds = time.monotonic() - start
    return report


def _drain_udp(sock: socket.socket, report: SendReport) -> None:
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, OSError):
            return
        report.note_reply(data)


class TlsSender:
    """Fuzz cases over TLS connections from attacker sources, as Meta's side would send them.

    One connection per source, used in turn and reopened when the edge closes it (a closed
    connection is what the edge should do with some of these). Replies are read without waiting.
    """

    def __init__(self, target: Target, sources: list[str], timeout_s: float = 3.0) -> None:
        self.target = target
        self.sources = sources
        self.timeout_s = timeout_s
        self.context = scanner_context()
        self.connections: dict[str, ssl.SSLSocket] = {}
        self.report = SendReport()

    def _connection(self, source: str) -> ssl.SSLSocket:
        tls = self.connections.get(source)
        if tls is None:
            raw = connect(self.target, source, self.timeout_s)
            try:
                tls = self.context.wrap_socket(raw, server_hostname="wa.meta.vc")
            except (OSError, ssl.SSLError):
                raw.close()
                raise
            self.connections[source] = tls
            self.report.reconnects += 1
        return tls

    def _drop(self, source: str) -> None:
        tls = self.connections.pop(source, None)
        if tls is not None:
            tls.close()

    def send(self, cases: Iterator[FuzzCase], time_limit_s: float, rate_per_s: float = 0.0,
             on_progress: Callable[[SendReport], None] | None = None) -> SendReport:
        start = time.monotonic()
        report = self.report
        try:
            for index, case in paced(cases, time_limit_s, rate_per_s):
                source = self.sources[index % len(self.sources)]
                try:
                    tls = self._connection(source)
                    tls.settimeout(self.timeout_s)
                    tls.sendall(case.data)
                    report.sent += 1
                    self._drain(source, tls)
                except (OSError, ssl.SSLError):
                    report.failed += 1
                    self._drop(source)
                if on_progress is not None and report.sent and report.sent % 1000 == 0:
                    report.seconds = time.monotonic() - start
                    on_progress(report)
        finally:
            for source in list(self.connections):
                self._drop(source)
        report.seconds = time.monotonic() - start
        return report

    def _drain(self, source: str, tls: ssl.SSLSocket) -> None:
        tls.setblocking(False)
        try:
            while True:
                data = tls.recv(65536)
                if not data:
                    self._drop(source)
                    return
                for chunk in data.split(b"SIP/2.0 ")[1:]:
                    report_data = b"SIP/2.0 " + chunk
                    self.report.note_reply(report_data)
        except (ssl.SSLWantReadError, BlockingIOError):
            pass
        except (OSError, ssl.SSLError):
            self._drop(source)
        finally:
            if source in self.connections:
                tls.setblocking(True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10)
    args = parser.parse_args(argv)
    ctx = FuzzContext("sip.example.com", "+15550100001", 5061, 5060, (5080, 5090))
    for case in mutated_messages(ctx, min(args.count, 1000), args.seed):
        sys.stdout.write(f"--- #{case.serial} {case.base} {'+'.join(case.mutations)}\n")
        sys.stdout.write(case.data[:2000].decode(errors="backslashreplace") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

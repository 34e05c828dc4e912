"""Invalid UTF-8 anywhere in a request: the source checks first, then 400, never a traceback.

Kamailio hands Python every value as text; invalid UTF-8 there used to raise inside the KEMI
script before the allow-list, pike and the internal-source check ran. A bounded fuzz: every
mutation below, from an untrusted UDP source (403) and from Meta's TLS side (400).
"""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest

from lab.edge import EdgeLab
from provisioning.kamailio_rpc import call
from tests.security.sip_wire import MetaTls, UdpPeer, establish, reply_to, split_messages

# Byte sequences that are not UTF-8: a stray continuation byte, an invalid lead byte, a
# truncated pair, an overlong '/', a UTF-16 surrogate, a code point above U+10FFFF.
BAD = [b"\x80", b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]
# Where the bad bytes go (the template's fields); each field keeps the message parseable by
# Kamailio's core, so a route runs and must answer.
FIELDS = ["method", "ruri_user", "ruri_host", "from_display", "from_user", "to_user",
          "contact_user", "header_value", "wacid", "user_agent", "body", "auth_user"]
RANDOM_MUTATIONS = 40
PACE = 0.02  # seconds between requests: under the lab's pike threshold of 100 per second


def request(transport: str, port: int, call_id: str, field: str, bad: bytes) -> bytes:
    """An INVITE-like request with `bad` inserted into `field`."""
    def part(name: str, text: str) -> bytes:
        value = text.encode()
        if name != field:
            return value
        middle = len(value) // 2
        return value[:middle] + bad + value[middle:]

    method = part("method", "INVITE")
    body = part("body", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                        "t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    lines = [
        method + b" sip:" + part("ruri_user", "+15550100001") + b"@"
        + part("ruri_host", "sip.example.com") + b";transport=tls SIP/2.0",
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK-{call_id};rport".encode(),
        b"Max-Forwards: 70",
        b'From: "' + part("from_display", "Meta User") + b'" <sip:'
        + part("from_user", "+15550123456") + b"@wa.meta.vc>;tag=f-" + call_id.encode(),
        b"To: <sip:" + part("to_user", "+15550100001") + b"@sip.example.com>",
        b"Call-ID: " + call_id.encode(),
        b"CSeq: 1 " + method,
        b"Contact: <sip:" + part("contact_user", "+15550123456") + f"@127.0.0.1:{port}>".encode(),
        b"X-Custom: " + part("header_value", "some value"),
        b"x-wa-meta-wacid: " + part("wacid", "wacid.HBgLMTU1NTAx"),
        b"User-Agent: " + part("user_agent", "Meta SIP"),
        b'Proxy-Authorization: Digest username="' + part("auth_user", "15550100001")
        + b'", realm="sip.example.com", nonce="abc", uri="sip:+15550100001@sip.example.com",'
        b' response="00000000000000000000000000000000", qop=auth, nc=00000001, cnonce="x"',
        b"Content-Type: application/sdp",
        f"Content-Length: {len(body)}".encode(),
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def mutations() -> list[tuple[str, bytes]]:
    """Every field with every bad sequence, plus a few seeded random (field, bytes) pairs."""
    fixed = [(f, b) for f in FIELDS for b in BAD]
    rng = random.Random(10)
    extra = [(rng.choice(FIELDS), bytes(rng.randrange(0x80, 0x100)
                                        for _ in range(rng.randrange(1, 5))))
             for _ in range(RANDOM_MUTATIONS)]
    return fixed + [(f, b) for f, b in extra if not _valid_utf8(b)]


def _valid_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


@pytest.fixture
def freeswitch(clean_edge: EdgeLab) -> Iterator[tuple[UdpPeer, UdpPeer]]:
    first, second = clean_edge.ports.freeswitch
    with UdpPeer(first) as node1, UdpPeer(second) as node2:
        yield node1, node2


def status_of(answer: bytes) -> str:
    return answer.split(b" ", 2)[1].decode()


def test_bad_bytes_from_an_untrusted_udp_source_get_403(clean_edge: EdgeLab) -> None:
    log_before = len(clean_edge.kamailio_log())
    statuses: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        for index, (field, bad) in enumerate(mutations()):
            call_id = f"udp-bad-{index}"
            sock.sendto(request("UDP", port, call_id, field, bad),
                        ("127.0.0.1", clean_edge.ports.internal))
            sock.settimeout(5)
            data = sock.recv(65536)
            assert f"Call-ID: {call_id}\r\n".encode() in data, data
            statuses[f"{field} {bad!r}"] = status_of(data)
    assert set(statuses.values()) == {"403"}, statuses
    log = clean_edge.kamailio_log()[log_before:]
    assert "Traceback" not in log and "UnicodeDecodeError" not in log


def test_bad_bytes_from_meta_get_400_and_are_not_relayed(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    log_before = len(clean_edge.kamailio_log())
    statuses: dict[str, str] = {}
    with MetaTls(clean_edge) as tls:
        for index, (field, bad) in enumerate(mutations()):
            call_id = f"tls-bad-{index}"
            tls.send(request("TLS", tls.port, call_id, field, bad))
            statuses[f"{field} {bad!r}"] = tls.answer(call_id).split(" ", 2)[1]
            time.sleep(PACE)
    assert set(statuses.values()) == {"400"}, statuses
    assert freeswitch[0].receive(0.5) == [] and freeswitch[1].receive(0.1) == []
    log = clean_edge.kamailio_log()[log_before:]
    assert "Traceback" not in log and "UnicodeDecodeError" not in log


def test_bad_bytes_from_a_freeswitch_node_get_400(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    """The internal side: a trusted source (a dispatcher node) with bad bytes in a
    business-initiated INVITE gets 400, not a traceback."""
    node1, _ = freeswitch
    log_before = len(clean_edge.kamailio_log())
    statuses: dict[str, str] = {}
    for index, (field, bad) in enumerate(mutations()):
        call_id = f"fs-bad-{index}"
        node1.sock.sendto(request("UDP", node1.port, call_id, field, bad),
                          ("127.0.0.1", clean_edge.ports.internal))
        answer = node1.answer(call_id)
        statuses[f"{field} {bad!r}"] = answer.split(" ", 2)[1]
    assert set(statuses.values()) == {"400"}, statuses
    log = clean_edge.kamailio_log()[log_before:]
    assert "Traceback" not in log and "UnicodeDecodeError" not in log


def test_bad_bytes_in_metas_reply_leave_no_traceback(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    """Meta's answer to FreeSWITCH's BYE (its duration is read in a reply route) with bad
    bytes: relayed as it is, counted, no traceback."""
    node1, _ = freeswitch
    log_before = len(clean_edge.kamailio_log())
    before = bad_bytes_counted(clean_edge)
    with MetaTls(clean_edge) as tls:
        dialog = establish(tls, node1, "bad-reply")
        node1.hang_up(dialog.invite, clean_edge.ports.internal, dialog.to_tag)
        bye = tls.answer("bad-reply")
        assert bye.startswith("BYE "), bye
        tls.send(reply_to(bye, 200, "OK", b"X-WA-Meta-Call-Duration: 7\xff\xfe\r\n"))
        assert any(m.startswith("SIP/2.0 200") for m in node1.receive(1.0))
    assert bad_bytes_counted(clean_edge) == before + 1
    log = clean_edge.kamailio_log()[log_before:]
    assert "Traceback" not in log and "UnicodeDecodeError" not in log


def bad_bytes_counted(edge: EdgeLab) -> int:
    stats = call(edge.rpc_socket, "stats.get_statistics", "wa_bad_bytes")
    return int(str(stats[0]).rpartition(" = ")[2])


def test_split_messages_keeps_bodies_whole() -> None:
    """The TLS reader's framing: two messages in one read, the second with a body."""
    first = b"SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n"
    second = b"SIP/2.0 200 OK\r\nCall-ID: b\r\nContent-Length: 3\r\n\r\nabc"
    messages, rest = split_messages(first + second + b"SIP/2.0")
    assert messages == [first, second] and rest == b"SIP/2.0"

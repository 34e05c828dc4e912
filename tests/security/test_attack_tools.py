"""The attack tools the security tests and `make bench-abuse` share: they must stay on
loopback, be reproducible, and produce what they claim (a fuzzer that silently stopped
forging Routes, or a scanner whose hellos no longer parse, would make every test pass)."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections import Counter

import pytest

from lab.attack.freeswitch_sink import FreeswitchSink
from lab.attack.sip_fuzz import MUTATIONS, FuzzContext, flood_messages, mutated_messages
from lab.attack.targets import NotLoopback, attacker_sources, loopback_target
from lab.attack.tls_scan import TLS10, TLS12, client_hello, sslv2_hello
from lab.processes import free_port

CTX = FuzzContext("sip.example.com", "+15550100001", 5061, 5060, (5080, 5090))


def test_targets_are_loopback_only() -> None:
    assert loopback_target("127.0.0.1", 5061).port == 5061
    for host in ("10.0.0.5", "8.8.8.8", "sip.example.com"):
        with pytest.raises(NotLoopback):
            loopback_target(host, 5061)
    assert attacker_sources(3) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    with pytest.raises(ValueError):
        attacker_sources(1, first=1)  # 127.0.0.1 is Meta's legitimate leg


def test_fuzz_cases_are_reproducible_and_use_every_mutation() -> None:
    first = [c.data for c in mutated_messages(CTX, 3000, seed=7)]
    assert first == [c.data for c in mutated_messages(CTX, 3000, seed=7)]
    assert first != [c.data for c in mutated_messages(CTX, 3000, seed=8)]
    used = Counter(m for c in mutated_messages(CTX, 3000, seed=7) for m in c.mutations)
    assert set(used) == set(MUTATIONS)
    assert min(used.values()) > 100


def test_forged_in_dialog_cases_aim_at_freeswitch_ports() -> None:
    cases = list(mutated_messages(CTX, 300, seed=3, only=("forged-in-dialog",)))
    for case in cases:
        head = case.data.split(b"\r\n\r\n", 1)[0]
        assert b";tag=forged" in head
        assert any(b"Route: <sip:127.0.0.1:%d;lr>" % port in head for port in CTX.freeswitch_ports)
        assert b"X-WA-Auth: digest" in head


def test_invalid_utf8_cases_do_not_decode() -> None:
    for name in ("invalid-utf8-method", "invalid-utf8-request-uri", "invalid-utf8-header"):
        for case in mutated_messages(CTX, 50, seed=5, only=(name,)):
            with pytest.raises(UnicodeDecodeError):
                case.data.decode("utf-8")


def test_flood_messages_are_well_formed_with_own_call_ids() -> None:
    cases = list(flood_messages(CTX, 100))
    assert len({c.data.split(b"Call-ID: ")[1].split(b"\r\n")[0] for c in cases}) == 100
    for case in cases:
        head, body = case.data.split(b"\r\n\r\n", 1)
        assert head.startswith((b"INVITE sip:+15550100001", b"OPTIONS sip:+15550100001"))
        assert f"Content-Length: {len(body)}".encode() in head


def test_client_hello_is_one_well_formed_record() -> None:
    record = client_hello(TLS10, [0x0005])
    kind, version, length = struct.unpack("!BHH", record[:5])
    assert (kind, version, length) == (0x16, TLS10, len(record) - 5)
    assert record[5] == 0x01  # ClientHello
    assert int.from_bytes(record[6:9], "big") == length - 4
    assert struct.unpack("!H", record[9:11])[0] == TLS10
    suites_at = 11 + 32 + 1
    assert record[suites_at:suites_at + 4] == b"\x00\x02\x00\x05"  # exactly one cipher
    assert struct.unpack("!H", client_hello(TLS12, [0xC02F])[9:11])[0] == TLS12


def test_sslv2_hello_has_the_two_byte_header() -> None:
    hello = sslv2_hello(0x0002, random.Random(1))
    assert hello[0] & 0x80
    assert (struct.unpack("!H", hello[:2])[0] & 0x7FFF) == len(hello) - 2
    assert hello[2] == 0x01  # CLIENT-HELLO


def test_sink_records_each_request_once_and_ignores_replies() -> None:
    port = free_port(socket.SOCK_DGRAM)
    invite = (b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nCall-ID: a1\r\nCSeq: 1 INVITE\r\n"
              b"X-WA-Auth: digest\r\n\r\n")
    with FreeswitchSink((port,)) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for data in (invite, invite, b"SIP/2.0 200 OK\r\nCall-ID: a1\r\n\r\n",
                     invite.replace(b"a1", b"a2")):
            sender.sendto(data, ("127.0.0.1", port))
        deadline = time.monotonic() + 5
        while sink.datagrams < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert sink.datagrams == 4
    assert [(r.call_id, r.wa_auth) for r in sink.relayed()] == [("a1", "digest"), ("a2", "digest")]

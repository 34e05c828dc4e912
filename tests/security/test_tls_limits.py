"""Idle TLS connections must not lock Meta out (issue 10, item 6).

Each accepted TLS connection holds about 80 KB of Kamailio's shared memory; ~750 idle ones from
one address filled 64 MB and every later handshake, Meta's included, failed. The edge now
refuses connections past `security.connections.per_source` per address, closes connections
without a complete SIP message after `first_message_timeout` and caps the total at half of
shared memory. Attackers come from 127.0.0.2 and up; Meta's stunnel leg from 127.0.0.1.
On Kamailio 5.6, HAProxy terminates Meta's TLS and the same tests hold by its settings (the
rendered haproxy.cfg); Kamailio's shared memory then holds no attacker's TLS state at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.attack.edge_watch import MB, ShmWatch, shm_total
from lab.attack.targets import Target, attacker_sources, loopback_target
from lab.attack.tls_hold import (
    IdleFlood,
    hold_idle_connections,
    open_raw_connections,
    wait_until_closed,
)
from lab.edge import EdgeLab
from lab.sipp import start_sipp_server
from siteconfig.model import ConnectionLimits
from tests.conftest import edge_overrides

LIMITS = ConnectionLimits()  # the defaults a site gets: the test checks what users run
OPTIONS = (b"OPTIONS sip:sip.example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/TLS 127.0.0.9:5061;branch=z9hG4bK-keepalive\r\n"
           b"From: <sip:+15550123456@wa.meta.vc>;tag=ka\r\nTo: <sip:sip.example.com>\r\n"
           b"Call-ID: keepalive-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
           b"Content-Length: 0\r\n\r\n")


@pytest.fixture(scope="module")
def limits_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("limits-edge"), edge_overrides()) as lab:
        yield lab


@pytest.fixture
def target(limits_edge: EdgeLab) -> Target:
    return loopback_target("127.0.0.1", limits_edge.ports.tls)


def test_limits_are_sized_from_shared_memory() -> None:
    assert LIMITS.tls_max_connections == 409  # 64 MB / 2 / 80 KB
    assert ConnectionLimits(shared_memory_mb=256).tls_max_connections == 1638
    with pytest.raises(ValueError, match="needs about 39 MB of shared memory"):
        ConnectionLimits(max_connections=500)
    with pytest.raises(ValueError, match="per_source 500 is more than max_connections 409"):
        ConnectionLimits(per_source=500)


def test_rendered_config_carries_the_limits(limits_edge: EdgeLab) -> None:
    rendered = (limits_edge.folder / "out" / "kamailio" / "kamailio.cfg").read_text()
    kamailio_lines: tuple[str, ...]
    if limits_edge.haproxy is None:
        kamailio_lines = ("tcp_accept_iplimit=32", "tcp_msg_data_timeout=5",
                          "tcp_msg_read_timeout=5")
    else:
        # Kamailio 5.6: HAProxy faces Meta and applies the limits (the tests below go through
        # it); Kamailio has neither tcp_accept_iplimit nor tcp_msg_*_timeout, and nothing
        # bounds a trickled message after the first one but idle_timeout.
        kamailio_lines = ("tcp_accept_haproxy=yes",)
        front = (limits_edge.folder / "out" / "haproxy" / "haproxy.cfg").read_text()
        front_lines = [line.strip() for line in front.splitlines()]
        for line in ("maxconn 409", "tcp-request connection reject if { sc0_conn_cur gt 32 }",
                     "tcp-request inspect-delay 5s", "timeout client 5s",
                     "timeout tunnel 600s"):
            assert line in front_lines, line
    for line in ("shm_mem_size=64", "tls_max_connections=409", *kamailio_lines,
                 'modparam("tls", "connection_timeout", 600)'):
        assert line in rendered.splitlines(), line
    assert shm_total(limits_edge.rpc_socket) == 64 * MB


def test_connections_past_the_per_source_limit_are_refused(target: Target) -> None:
    extra = 20
    first, second = attacker_sources(2, first=20)
    # each sends an OPTIONS, so first_message_timeout cannot free a slot while the test counts
    with hold_idle_connections(target, [first], LIMITS.per_source + extra, 30,
                               OPTIONS) as flood, \
            hold_idle_connections(target, [second], 1, 10, OPTIONS) as other_source:
        assert flood.attempts == LIMITS.per_source + extra
        assert flood.refused == extra
        assert flood.alive() == LIMITS.per_source
        assert other_source.alive() == 1, "the limit is per source, not global"


@pytest.mark.parametrize("first_bytes", [
    b"",  # idle after the handshake
    bytes(range(1, 256)) * 3,  # garbage, never a complete message
    b"\r\n\r\n",  # keepalive pings only
    b"OPTIONS sip:sip.example.com SIP/2.0\r\nVia: SIP/2.0/TLS x\r\n",  # a message never finished
], ids=["idle", "garbage", "crlf-only", "unfinished"])
def test_connections_without_a_sip_message_are_closed_quickly(
        target: Target, first_bytes: bytes) -> None:
    source, sip_source = attacker_sources(2, first=30)
    with hold_idle_connections(target, [source], 8, 10, first_bytes) as idle, \
            hold_idle_connections(target, [sip_source], 1, 10, OPTIONS) as meta_like:
        assert idle.alive() == 8
        closed_after = wait_until_closed(idle, LIMITS.first_message_timeout + 10)
        assert closed_after < LIMITS.first_message_timeout + 10, "idle connections kept open"
        assert meta_like.alive() == 1, "a connection that sent SIP must stay (Meta's are long-lived)"


def test_tcp_connections_that_never_start_tls_are_closed_quickly(target: Target) -> None:
    sockets = open_raw_connections(target, attacker_sources(1, first=35)[0], 8)
    try:
        assert len(sockets) == 8
        deadline = time.monotonic() + LIMITS.first_message_timeout + 10
        for sock in sockets:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            assert sock.recv(1) == b"", "the edge must close a connection that never spoke"
    finally:
        for sock in sockets:
            sock.close()


def test_meta_call_gets_through_while_idle_connections_flood_the_edge(
        limits_edge: EdgeLab, target: Target, tmp_path: Path) -> None:
    sources = attacker_sources(4, first=40)
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path,
                           limits_edge.ports.freeswitch[0])
    # Without the limits, five rounds (800 handshakes) leave ~5 MB of 64 free and Kamailio
    # refuses every new handshake: Meta's call below then fails.
    with ShmWatch(limits_edge.rpc_socket) as shm, \
            IdleFlood(target, sources, attempt_limit=20000, time_limit_s=90,
                      per_source_attempts=LIMITS.per_source + 8) as flood:
        flood.wait_rounds(5, within_s=45)
        assert flood.rounds >= 5
        meta = limits_edge.meta_call("uic-answered", folder=tmp_path, timeout_s=30)
        held_during_call = flood.held.alive()
        assert flood.running, "the flood ended before the call did: raise its bounds"
    assert meta.passed, meta.errors
    assert fs.wait(15) == 0, fs.log_tail()
    assert 0 < held_during_call <= len(sources) * LIMITS.per_source
    assert flood.held.refused > 0, "the flood never reached the per-source limit"
    assert shm.failed_samples == 0
    assert shm.minimum > 32 * MB, f"shared memory fell to {shm.minimum / MB:.1f} MB free"

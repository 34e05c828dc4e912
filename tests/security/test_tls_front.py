"""Meta's TLS terminated by HAProxy (Kamailio 5.6): the edge still looks like one TLS SIP edge.

Kamailio 5.6.3's tls module dies under a TLS scan, so on 5.6 HAProxy takes Meta's TLS port
and hands each connection to Kamailio's loopback TCP socket with a PROXY header. What must
stay true, and is checked here against the real Kamailio, HAProxy and Meta's stunnel/SIPp leg:

- Record-Route toward Meta names the public TLS address with transport=tls (never the loopback
  TCP socket), and Meta's in-dialog requests that follow it reach FreeSWITCH;
- the source address the KEMI code sees is Meta's, from the PROXY header: the digest lockout
  keys on it, not on HAProxy's 127.0.0.1, and Via gets Meta's address and port;
- the metrics socket still serves scrapes (tcp_accept_haproxy applies to every TCP socket);
- whoever reaches Kamailio's TCP socket behind HAProxy chooses the source address it sees:
  why listen.front_backend must stay unreachable from outside.

The tests that only make sense with HAProxy in front skip with the reason on 6.x renders.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.edge import EdgeLab
from lab.metrics_scrape import names, scrape
from lab.sipp import start_sipp_server
from provisioning.kamailio_rpc import call
from tests.conftest import FAILURE_LIMIT, edge_overrides, sip_header
from tests.security.sip_wire import header_values, split_messages

OTHER_META = "127.0.0.7"  # Meta from a second address, through HAProxy like the first
FS_WAIT = 15


@pytest.fixture(scope="module")
def front_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("front-edge"), edge_overrides()) as lab:
        yield lab


def needs_haproxy(edge: EdgeLab) -> None:
    if edge.haproxy is None:
        pytest.skip("Kamailio's own tls module faces Meta in this render (6.0+): no HAProxy")


def options(call_id: str, via_host: str, via_port: int) -> bytes:
    return (f"OPTIONS sip:sip.example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {via_host}:{via_port};branch=z9hG4bK-{call_id};rport\r\n"
            f"From: <sip:+15550123456@wa.meta.vc>;tag={call_id}\r\nTo: <sip:sip.example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def read_reply(sock: socket.socket, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        messages, buffer = split_messages(buffer)
        if messages:
            return messages[0].decode()
    raise AssertionError(f"no reply within {timeout} s (got {buffer[:200]!r})")


def active_dialogs(edge: EdgeLab) -> int:
    stats = call(edge.rpc_socket, "stats.get_statistics", "active_dialogs")
    return int(str(stats[0]).rsplit("=", 1)[1])


def test_record_route_names_the_public_tls_address_and_metas_bye_follows_it(
        front_edge: EdgeLab, tmp_path: Path) -> None:
    before = active_dialogs(front_edge)
    fs = start_sipp_server("uic-learned-route", "freeswitch", tmp_path,
                           front_edge.ports.freeswitch[0])
    meta = front_edge.meta_call("uic-learned-route", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()
    ok = next(m for m in meta.messages if m.startswith("SIP/2.0 200 OK") and "INVITE" in
              sip_header(m, "CSeq")[0])
    entries = [e.strip() for v in sip_header(ok, "Record-Route") for e in v.split(",")]
    ports = front_edge.ports
    assert [re.sub(r";(ftag|wamac)=[^;>]+", "", e) for e in entries[:2]] == [
        f"<sip:127.0.0.1:{ports.internal};r2=on;lr>",
        f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>"]  # Meta's TLS port: HAProxy's
    # both entries carry the same route MAC (no dialog id: the edge keeps no dialog for it)
    macs = {re.search(r";wamac=([^;>]+)", e)[1] for e in entries[:2]}  # type: ignore[index]
    assert len(macs) == 1 and all(";did=" not in e for e in entries[:2]), entries
    text = ",".join(entries)
    for hidden in (ports.front_backend, ports.outbound_tls):
        assert f":{hidden}" not in text, "Record-Route names a socket Meta cannot reach"
    assert "transport=tcp" not in text
    # Meta's BYE came back along that route, through HAProxy, trusted by its MAC alone.
    assert any(m.text.startswith("BYE ") for m in fs.trace())
    assert active_dialogs(front_edge) == before


def test_lockout_keys_on_metas_address_not_on_haproxys(front_edge: EdgeLab,
                                                       tmp_path: Path) -> None:
    """Kamailio sees every connection come from HAProxy (127.0.0.1); the PROXY header gives
    it Meta's. Wrong digests from one Meta address lock out that address only."""
    other = front_edge.meta_client_from(OTHER_META)
    for _ in range(FAILURE_LIMIT):
        wrong = front_edge.meta_call("uic-wrong-password", password="not-the-password",
                                     folder=tmp_path, client_port=other)
        assert wrong.passed, wrong.errors
    locked = front_edge.meta_call("uic-locked-out", folder=tmp_path, client_port=other)
    assert locked.passed, locked.errors
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, front_edge.ports.freeswitch[0])
    meta = front_edge.meta_call("uic-answered", folder=tmp_path)  # from 127.0.0.1
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()
    log = front_edge.kamailio_log()
    assert f"(user 15550100001) from {OTHER_META}" in log
    assert "(user 15550100001) from 127.0.0.1" not in log


def test_via_gets_metas_address_and_port_from_the_proxy_header(front_edge: EdgeLab) -> None:
    """PROXY v1 on 5.6 (its v2 parser swaps the port bytes): received= and rport= are the
    TLS client's own address and port, so a reply Kamailio routes by Via goes to Meta."""
    needs_haproxy(front_edge)
    context = ssl.create_default_context(cafile=str(front_edge.ca.certificate))
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.bind(("127.0.0.9", 0))
    raw.connect(("127.0.0.1", front_edge.ports.tls))
    port = int(raw.getsockname()[1])
    with context.wrap_socket(raw, server_hostname=front_edge.config.site.sip_domain) as tls:
        tls.sendall(options("front-via-1", "10.9.9.9", 5061))
        reply = read_reply(tls)
    assert reply.startswith("SIP/2.0 200"), reply[:200]
    via = header_values(reply, "Via")[0]
    assert "received=127.0.0.9" in via and f"rport={port}" in via, via


def test_whoever_reaches_the_tcp_socket_behind_haproxy_chooses_the_source(
        front_edge: EdgeLab) -> None:
    """Why listen.front_backend must be loopback or internal: Kamailio believes the PROXY
    header of any connection there (here a forged 203.0.113.9 is taken as the source)."""
    needs_haproxy(front_edge)
    with socket.create_connection(("127.0.0.1", front_edge.ports.front_backend), timeout=10) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 5061\r\n"
                  + options("front-forged-1", "203.0.113.9", 40000))
        reply = read_reply(s)
    via = header_values(reply, "Via")[0]
    assert "rport=40000" in via and "203.0.113.9" in via, via


def test_metrics_are_still_scraped_with_the_proxy_protocol_on(front_edge: EdgeLab) -> None:
    """tcp_accept_haproxy covers every TCP socket; a connection without a PROXY header (an
    HTTP scrape) is taken as it is."""
    needs_haproxy(front_edge)
    samples = scrape(f"http://127.0.0.1:{front_edge.ports.metrics}/metrics")
    assert any(name.startswith("wasip_edge_") for name in names(samples))
    assert "invalid PROXY protocol header" not in front_edge.kamailio_log()

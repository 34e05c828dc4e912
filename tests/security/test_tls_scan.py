"""A TLS scan must not kill the edge (issue 10, item 7).

Kamailio 5.6.3 with OpenSSL 3 crashed within a few thousand attempts of this mix (double free in
tls_init.c, SIGSEGV in tls_accept). On 6.1.4 the edge must keep the same processes, log no BUG or
CRITICAL line, refuse the old protocol versions, and still carry Meta's calls during and after
the scan. On 5.6.3 the same scan killed the edge with today's tls module, so there HAProxy
terminates Meta's TLS (OUT/haproxy/haproxy.cfg) and the test holds it to the same: its
process and Kamailio's the same before and after, no BUG/CRITICAL in either log, Meta's calls
(through HAProxy) during and after. The long version runs in `make bench-abuse`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.attack.edge_watch import MB, ShmWatch, kamailio_pids, log_problems
from lab.attack.targets import loopback_target
from lab.attack.tls_scan import ScanReport, ScanSettings, scan
from lab.edge import EdgeLab
from lab.sipp import SippResult, start_sipp_server
from tests.conftest import edge_overrides

SCAN_SECONDS = 20
REFUSED = {"alert", "closed", "reset"}


@pytest.fixture(scope="module")
def scan_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("scan-edge"), edge_overrides()) as lab:
        yield lab


def legit_call(edge: EdgeLab, folder: Path) -> SippResult:
    folder.mkdir(exist_ok=True)
    fs = start_sipp_server("uic-answered", "freeswitch", folder, edge.ports.freeswitch[0])
    try:
        meta = edge.meta_call("uic-answered", folder=folder, timeout_s=30)
        assert fs.wait(15) == 0, fs.log_tail()
    finally:
        fs.stop()
    return meta


def test_scan_leaves_the_edge_up_and_meta_calls_working(scan_edge: EdgeLab,
                                                        tmp_path: Path) -> None:
    scanner = scan_edge.ca.issue("scanner", ["scanner.invalid"])
    settings = ScanSettings(loopback_target("127.0.0.1", scan_edge.ports.tls),
                            scanner.certificate, scanner.private_key)
    pids = kamailio_pids(scan_edge.rpc_socket)
    front = scan_edge.haproxy  # Kamailio 5.6: HAProxy takes the scan, Kamailio never sees TLS
    front_pid = front.pid if front is not None else None
    reports: list[ScanReport] = []
    scanning = threading.Thread(
        target=lambda: reports.append(scan(settings, clients=8, seconds=SCAN_SECONDS)))
    with ShmWatch(scan_edge.rpc_socket) as shm:
        scanning.start()
        during = legit_call(scan_edge, tmp_path / "during")
        scan_still_running = scanning.is_alive()
        scanning.join(SCAN_SECONDS + 30)
    after = legit_call(scan_edge, tmp_path / "after")

    assert during.passed, during.errors
    assert scan_still_running, "the call must run while the scan does"
    assert after.passed, after.errors
    report = reports[0]
    assert report.attempts > 200, report.summary()
    assert set(report.by_probe()) == {
        "old-version-hello", "one-cipher", "sslv2-hello", "http", "garbage",
        "rst-mid-handshake", "truncated-hello", "idle", "client-certificate",
        "garbage-after-handshake", "renegotiation"}, report.summary()
    for probe in ("old-version-hello", "sslv2-hello"):
        outcomes = {o for (p, o) in report.outcomes if p == probe}
        assert outcomes & REFUSED, f"{probe}: {outcomes}"
        assert "server-hello" not in outcomes, f"{probe}: TLS below 1.2 must be refused"
    assert report.count("one-cipher", "server-hello") > 0, "no cipher was ever accepted"
    assert report.count("one-cipher", "server-hello-weak") == 0, "NULL/EXPORT/RC4/3DES accepted"
    assert report.count("renegotiation", "renegotiation-sent") + report.count(
        "renegotiation", "renegotiation-refused") > 0, report.summary()
    assert kamailio_pids(scan_edge.rpc_socket) == pids, "a Kamailio process died or respawned"
    if front is not None:
        assert front.running() and front.pid == front_pid, "HAProxy died under the scan"
        assert log_problems(scan_edge.haproxy_log()) == []
    assert log_problems(scan_edge.kamailio_log()) == []
    assert shm.minimum > 32 * MB

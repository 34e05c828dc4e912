"""The edge's other modes and guards, each on its own real Kamailio: the 401 challenge, Meta's
unauthenticated mode, the source allow-list, header screening, and the TLS face Meta sees."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.sipp import start_sipp_server
from tests.conftest import INSTALLED_KAMAILIO, edge_overrides, first_request, sip_header

FS_WAIT = 15


def started_edge(folder: Path, **changes: object) -> EdgeLab:
    lab = EdgeLab(folder, edge_overrides(**changes), passwords={"+15550100001": LAB_PASSWORD})
    lab.__enter__()
    return lab


@pytest.fixture
def edge_factory(tmp_path: Path) -> Iterator[list[EdgeLab]]:
    labs: list[EdgeLab] = []
    yield labs
    for lab in labs:
        lab.stop()


@pytest.mark.skipif(not INSTALLED_KAMAILIO.www_challenge,
                    reason=f"Kamailio {INSTALLED_KAMAILIO.text} has no 401 challenges "
                           "(6.0 and later do)")
def test_401_challenge_mode_checks_authorization(edge_factory: list[EdgeLab],
                                                tmp_path: Path) -> None:
    """auth.challenge_code = 401: WWW-Authenticate out, Authorization checked (SIPp's digest),
    and the credentials consumed before FreeSWITCH."""
    edge = started_edge(tmp_path / "edge", auth={"challenge_code": 401})
    edge_factory.append(edge)
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
    meta = edge.meta_call("uic-answered-401", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()
    assert "SIP/2.0 401 Unauthorized" in meta.first_lines()
    invite = first_request([m.text for m in fs.trace()], "INVITE")
    assert sip_header(invite, "Authorization") == []
    assert sip_header(invite, "X-WA-Auth") == ["digest"]


def test_unauthenticated_mode_relays_without_challenge(edge_factory: list[EdgeLab],
                                                       tmp_path: Path) -> None:
    edge = started_edge(tmp_path / "edge", auth={"mode": "none"},
                        security={"allowed_sources": ["127.0.0.0/8"]})
    edge_factory.append(edge)
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
    meta = edge.meta_call("uic-unauthenticated", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0
    assert not any(line.startswith("SIP/2.0 40") for line in meta.first_lines())
    invite = first_request([m.text for m in fs.trace()], "INVITE")
    assert sip_header(invite, "X-WA-Auth") == ["none"]


def test_source_outside_allow_list_gets_no_answer(edge_factory: list[EdgeLab],
                                                  tmp_path: Path) -> None:
    edge = started_edge(tmp_path / "edge", security={"allowed_sources": ["10.0.0.0/8"]})
    edge_factory.append(edge)
    meta = edge.meta_call("options-keepalive", folder=tmp_path, timeout_s=3)
    assert not meta.passed
    assert not any(line.startswith("SIP/2.0") for line in meta.first_lines())
    assert "not in allowed_sources" in edge.kamailio_log()


def test_forged_and_oversized_headers_never_reach_freeswitch(edge: EdgeLab,
                                                             tmp_path: Path) -> None:
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
    meta = edge.meta_call("uic-spoofed-headers", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0
    invite = first_request([m.text for m in fs.trace()], "INVITE")
    assert sip_header(invite, "X-WA-Business-Number") == ["+15550100001"]
    assert sip_header(invite, "X-WA-Auth") == ["digest"]
    assert sip_header(invite, "x-wa-meta-deeplink-payload") == []
    assert sip_header(invite, "x-wa-meta-future-header") == ["kept-as-is"]
    assert sip_header(invite, "x-wa-meta-cta-payload") == ["order-1234"]
    assert "over the 512-byte cap" in edge.kamailio_log()


def _s_client(edge: EdgeLab, host_name: str) -> str:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{edge.ports.tls}",
         "-servername", edge.config.site.sip_domain, "-verify_hostname", host_name,
         "-CAfile", str(edge.ca.certificate), "-msg", "-brief"],
        input=b"", capture_output=True, timeout=20, check=False)
    return (done.stdout + done.stderr).decode(errors="replace")


def test_tls_asks_no_client_certificate_and_verifies_for_the_sip_domain(edge: EdgeLab) -> None:
    output = _s_client(edge, edge.config.site.sip_domain)
    assert "Verification: OK" in output, output
    assert "Verified peername: sip.example.com" in output, output
    assert "CertificateRequest" not in output, output
    assert "Finished" in output, output


def test_tls_certificate_does_not_verify_for_another_name(edge: EdgeLab) -> None:
    output = _s_client(edge, "other.example.org")
    assert "Verification error: hostname mismatch" in output, output

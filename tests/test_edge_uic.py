"""User-initiated calls through a real Kamailio edge: Meta (SIPp behind stunnel, TLS) on one
side, FreeSWITCH (a SIPp UAS on UDP) on the other."""

from __future__ import annotations

import time
from pathlib import Path

from lab.edge import EdgeLab
from lab.sipp import start_sipp_server
from provisioning.kamailio_rpc import call
from tests.conftest import FAILURE_LIMIT, SECOND_NUMBER, first_request, sip_header

FS_WAIT = 15


def test_answered_call_reaches_freeswitch_with_whatsapp_headers(clean_edge: EdgeLab,
                                                                 tmp_path: Path) -> None:
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, clean_edge.ports.freeswitch[0])
    meta = clean_edge.meta_call("uic-answered", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()
    assert meta.first_lines()[:2] == [
        "INVITE sip:+15550100001;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;"
        "transport=tls SIP/2.0",
        "SIP/2.0 407 Proxy Authentication Required"]

    invite = first_request([m.text for m in fs.trace()], "INVITE")
    assert invite.startswith("INVITE sip:+15550100001@sip.example.com")
    assert sip_header(invite, "X-WA-Business-Number") == ["+15550100001"]
    assert sip_header(invite, "X-WA-Auth") == ["digest"]
    assert sip_header(invite, "X-WA-Tgrp") == ["wacall"]
    assert sip_header(invite, "X-WA-Trunk-Context") == ["byoc.example.com"]
    assert sip_header(invite, "x-wa-meta-wacid") == ["wacid.HBgLMTU1NTAxMjM0NTYVAgARGBIyRjE"]
    assert sip_header(invite, "Proxy-Authorization") == []
    record_route = ",".join(sip_header(invite, "Record-Route"))
    assert record_route.index("r2=on") < record_route.index("onevc-sip-proxy.fbinfra.net")

    ok = next(m for m in meta.messages if m.startswith("SIP/2.0 200 OK") and "INVITE" in
              sip_header(m, "CSeq")[0])
    entries = [e.strip() for v in sip_header(ok, "Record-Route") for e in v.split(",")]
    assert entries[-2:] == ["<sip:onevc-sip-proxy.fbinfra.net:8191;transport=tls;lr>",
                            "<sip:wa.meta.vc;transport=tls;lr>"]
    assert "duration=7" in clean_edge.kamailio_log()


def test_failover_to_next_freeswitch_node_on_503(clean_edge: EdgeLab, tmp_path: Path) -> None:
    failing = start_sipp_server("uic-failover", "freeswitch-failing", tmp_path,
                                clean_edge.ports.freeswitch[0])
    healthy = start_sipp_server("uic-answered", "freeswitch", tmp_path,
                                clean_edge.ports.freeswitch[1])
    meta = clean_edge.meta_call("uic-answered", folder=tmp_path)
    assert meta.passed, meta.errors
    assert failing.wait(FS_WAIT) == 0, failing.log_tail()
    assert healthy.wait(FS_WAIT) == 0, healthy.log_tail()
    assert not any(line.startswith("SIP/2.0 503") for line in meta.first_lines())


def test_unknown_business_number_gets_404(clean_edge: EdgeLab, tmp_path: Path) -> None:
    meta = clean_edge.meta_call("uic-unknown-number", business_number="+15559999999",
                                folder=tmp_path)
    assert meta.passed, meta.errors


def test_number_without_credentials_is_refused_not_relayed(clean_edge: EdgeLab,
                                                           tmp_path: Path) -> None:
    meta = clean_edge.meta_call("uic-no-credentials", business_number=SECOND_NUMBER,
                                folder=tmp_path)
    assert meta.passed, meta.errors
    assert "no SIP credentials for +15550100002" in clean_edge.kamailio_log()


def test_ip_literal_request_uri_gets_404(clean_edge: EdgeLab, tmp_path: Path) -> None:
    meta = clean_edge.meta_call("uic-ip-literal", folder=tmp_path)
    assert meta.passed, meta.errors
    assert "IP literal" in meta.first_lines()[-2] or "IP literal" in meta.messages[-2]


def test_wrong_password_is_challenged_again_then_locked_out(clean_edge: EdgeLab,
                                                            tmp_path: Path) -> None:
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, clean_edge.ports.freeswitch[0])
    try:
        for _ in range(FAILURE_LIMIT):
            meta = clean_edge.meta_call("uic-wrong-password", password="not-the-password",
                                        folder=tmp_path)
            assert meta.passed, meta.errors
        locked = clean_edge.meta_call("uic-locked-out", folder=tmp_path)
        assert locked.passed, locked.errors
        assert fs.running(), "FreeSWITCH must never see an unauthenticated INVITE"
    finally:
        fs.stop()
    assert "locked out" in clean_edge.kamailio_log()


def test_new_password_is_used_after_htable_reload(clean_edge: EdgeLab, tmp_path: Path) -> None:
    clean_edge.write_credentials({"+15550100001": "rotated-password-2"})
    clean_edge.reload_credentials()
    try:
        old = clean_edge.meta_call("uic-wrong-password", password="lab-sip-password-1",
                                   folder=tmp_path)
        assert old.passed, old.errors
        fs = start_sipp_server("uic-answered", "freeswitch", tmp_path,
                               clean_edge.ports.freeswitch[0])
        new = clean_edge.meta_call("uic-answered", password="rotated-password-2",
                                   folder=tmp_path)
        assert new.passed, new.errors
        assert fs.wait(FS_WAIT) == 0
    finally:
        clean_edge.write_credentials({"+15550100001": "lab-sip-password-1"})
        clean_edge.reload_credentials()


def test_register_is_refused_with_a_reason(clean_edge: EdgeLab, tmp_path: Path) -> None:
    assert clean_edge.meta_call("register-refused", folder=tmp_path).passed


def test_options_keepalive_gets_200(clean_edge: EdgeLab, tmp_path: Path) -> None:
    assert clean_edge.meta_call("options-keepalive", folder=tmp_path).passed


def test_other_out_of_dialog_methods_get_proper_errors(clean_edge: EdgeLab,
                                                       tmp_path: Path) -> None:
    assert clean_edge.meta_call("method-not-allowed", folder=tmp_path).passed
    assert clean_edge.meta_call("bye-without-dialog", folder=tmp_path).passed


def _active_dialogs(edge: EdgeLab) -> int:
    stats = call(edge.rpc_socket, "stats.get_statistics", "active_dialogs")
    return int(str(stats[0]).rsplit("=", 1)[1])


def test_uic_call_leaves_no_dialog_in_the_edge(clean_edge: EdgeLab, tmp_path: Path) -> None:
    """A user-initiated call keeps no dialog state (its Record-Route MAC is the in-dialog trust,
    tests/security/test_in_dialog_mac.py checks it mid-call too); a leak here would be ~2 KB of
    shared memory per call for dialog.default_timeout (4 h)."""
    before = _active_dialogs(clean_edge)
    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, clean_edge.ports.freeswitch[0])
    meta = clean_edge.meta_call("uic-answered", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()
    deadline = time.monotonic() + 10
    while _active_dialogs(clean_edge) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _active_dialogs(clean_edge) == before

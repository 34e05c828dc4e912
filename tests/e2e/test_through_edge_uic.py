"""User-initiated calls through the whole bundle: Meta -> edge -> real FreeSWITCH -> wa-esl.

What the Event Socket stand-in only imitated, checked on the real switch: the edge's forwarded
headers arrive as the channel variables wa-esl reads (asked of FreeSWITCH itself with
`uuid_dump` while the call is up), routing by number, tgrp, trunk-context and CTA payload picks
the route whose commands FreeSWITCH then runs, the SDP answer fits the number's SRTP mode, and
the CDR carries the wacid and Meta's duration.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from esl.cdr import CallRecord
from lab.bundle import BundleLab, MetaCall
from lab.freeswitch_trace import messages_of_call, read_freeswitch_trace, wait_for_call
from lab.processes import LabError
from tests.e2e.conftest import DTLS_NUMBER, SDES_NUMBER, skip_without_freeswitch

pytestmark = skip_without_freeswitch()


def answer_sdp(call: MetaCall) -> str:
    ok = next(m for m in call.result.trace
              if not m.sent and m.first_line.startswith("SIP/2.0 200") and "INVITE" in m.text)
    return ok.text.split("\r\n\r\n", 1)[1]


@pytest.mark.parametrize(("number", "params", "payload", "route"), [
    (SDES_NUMBER, None, "promo-summer", "by-payload"),
    (SDES_NUMBER, ";tgrp=vip;trunk-context=byoc.example.com", "order-1", "by-tgrp"),
    (SDES_NUMBER, ";tgrp=wacall;trunk-context=support.example.com", "order-1", "by-trunk-context"),
    (DTLS_NUMBER, "", "order-1", "by-number"),
    (SDES_NUMBER, None, "order-1", "catch-all"),
], ids=["cta-payload", "tgrp", "trunk-context", "business-number", "catch-all"])
def test_route_chosen_from_what_the_edge_forwarded(
        bundle: BundleLab, tmp_path: Path, number: str, params: str | None, payload: str,
        route: str) -> None:
    call = bundle.uic(number, payload=payload, ruri_params=params, hold_ms=300, folder=tmp_path)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    record = bundle.cdr(wacid=call.wacid)
    assert record.route == route, record
    assert record.hangup_cause == "NORMAL_CLEARING" and record.meta_duration_s == 2, record
    assert record.cta_payload == payload and record.business_number == number


def test_sdes_number_answered_with_rtp_savp_and_a_crypto_key(bundle: BundleLab,
                                                            tmp_path: Path) -> None:
    call = bundle.uic(SDES_NUMBER, hold_ms=300, folder=tmp_path)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    sdp = answer_sdp(call)
    assert "\r\nm=audio " in sdp and " RTP/SAVP 111" in sdp, sdp
    assert "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in sdp
    assert "a=fingerprint" not in sdp and "telephone-event/8000" in sdp
    assert bundle.cdr(wacid=call.wacid).srtp_mode == "SDES"


def test_dtls_number_answered_active_with_fingerprint_and_candidate(bundle: BundleLab,
                                                                    tmp_path: Path) -> None:
    call = bundle.uic(DTLS_NUMBER, hold_ms=300, folder=tmp_path)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    sdp = answer_sdp(call)
    assert " UDP/TLS/RTP/SAVPF 111" in sdp and "a=setup:active" in sdp, sdp
    assert "a=fingerprint:sha-256 " in sdp and "a=candidate:" in sdp and "a=rtcp-mux" in sdp
    assert "a=crypto" not in sdp
    assert bundle.cdr(wacid=call.wacid).srtp_mode == "DTLS"


def active_record(bundle: BundleLab, wacid: str, deadline: float) -> CallRecord:
    """The CDR wa-esl writes at CHANNEL_DATA (state active), while the call is up."""
    while True:
        found = [r for r in bundle.records() if r.wacid == wacid]
        if found:
            return found[0]
        if time.monotonic() > deadline:
            raise LabError(f"no CDR for {wacid}")
        time.sleep(0.05)


def test_edge_headers_are_channel_variables_on_the_real_switch(bundle: BundleLab,
                                                               tmp_path: Path) -> None:
    """What esl/whatsapp_call.py reads (variable_sip_h_*) is what sofia makes of the edge's
    headers, and the controller's own tags and SRTP settings are set on the live channel."""
    wacid = f"wacid.vars{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(bundle.uic, SDES_NUMBER, payload="order-77", wacid=wacid,
                              ruri_params=";tgrp=wacall;trunk-context=byoc.example.com;region=eu",
                              hold_ms=8000, folder=tmp_path)
        record = active_record(bundle, wacid, time.monotonic() + 20)
        variables = bundle.channel_variables(record.call_uuid)
        call = running.result(timeout=60)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    assert variables["sip_h_X-WA-Business-Number"] == SDES_NUMBER
    assert variables["sip_h_X-WA-Tgrp"] == "wacall"
    assert variables["sip_h_X-WA-Trunk-Context"] == "byoc.example.com"
    assert variables["sip_h_X-WA-Param-region"] == "eu"
    assert variables["sip_h_X-WA-Context"] == "whatsapp"
    assert variables["sip_h_x-wa-meta-wacid"] == call.wacid
    assert variables["sip_h_x-wa-meta-cta-payload"] == "order-77"
    # set by wa-esl's multiset before it answered
    assert variables["wa_direction"] == "uic" and variables["wa_route"] == "catch-all"
    assert variables["wa_wacid"] == call.wacid
    assert variables["rtp_secure_media"] == "mandatory:AES_CM_128_HMAC_SHA1_80"
    assert variables["sofia_session_timeout"] == "0"
    assert variables["absolute_codec_string"].startswith("OPUS")
    ended = bundle.cdr(wacid=call.wacid)
    assert ended.request_uri_params == "region=eu" and ended.tgrp == "wacall"


def test_wrong_password_never_reaches_freeswitch(bundle: BundleLab, tmp_path: Path) -> None:
    start = bundle.freeswitch.log.stat().st_size
    result = bundle.edge.meta_call("uic-wrong-password", password="not-the-password",
                                   business_number=SDES_NUMBER, folder=tmp_path)
    assert result.passed, (result.errors, result.first_lines())  # 407 to both INVITEs
    invite = next(m for m in result.trace if m.first_line.startswith("INVITE"))
    call_id = next(line.split(":", 1)[1].strip() for line in invite.text.split("\r\n")
                   if line.lower().startswith("call-id:"))
    assert not messages_of_call(read_freeswitch_trace(bundle.freeswitch.log, start), call_id)
    # the same look finds a call that does get through (the trace is on and read right)
    good = bundle.uic(SDES_NUMBER, hold_ms=100, folder=tmp_path)
    assert good.result.passed
    good_id = next(line.split(":", 1)[1].strip() for line in good.result.trace[0].text.split("\r\n")
                   if line.lower().startswith("call-id:"))
    assert wait_for_call(bundle.freeswitch.log, start, good_id)

"""Business-initiated calls as users place them: `wa-esl originate` -> FreeSWITCH's gateway ->
edge (answers Meta's 407) -> Meta stand-in -> WhatsApp user, on the real switch.

The refusals check the path the stand-in could only imitate: the edge's `X-WA-Diagnosis` on
Meta's final answer is kept by sofia as `sip_rh_X-WA-Diagnosis` on the refused leg, reaches
wa-esl in the hangup event and becomes the CDR's diagnosis and `originate`'s message, word for
word the edge's (Meta's own table would word it differently).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from esl.cdr import CallRecord
from esl.diagnosis import edge_diagnosis
from esl.meta_errors import diagnose_sip_failure
from lab.bundle import BundleLab
from lab.freeswitch_trace import read_freeswitch_trace, wait_for_call
from lab.meta_standin import BARE_URI_ONLY_NUMBER, META_ANSWERS_BY_FLOW, WHATSAPP_USER
from lab.sipp import TracedMessage
from provisioning.freeswitch_binary import freeswitch_missing
from tests.e2e.conftest import (
    DTLS_NUMBER,
    SDES_NUMBER,
    require_dtls_patch,
    skip_without_freeswitch,
    start_bundle,
)

pytestmark = skip_without_freeswitch()


def invite_leg(bundle: BundleLab, start: int) -> list[TracedMessage]:
    """FreeSWITCH's messages of the one call it originated since log offset `start`."""
    trace = read_freeswitch_trace(bundle.freeswitch.log, start)
    invite = next(m for m in trace if m.sent and m.first_line.startswith("INVITE"))
    call_id = next(line.split(":", 1)[1].strip() for line in invite.text.split("\r\n")
                   if line.lower().startswith("call-id:"))
    return wait_for_call(bundle.freeswitch.log, start, call_id)


def business_hangs_up(bundle: BundleLab, number: str, flow: str,
                      folder: Path) -> tuple[CallRecord, list[TracedMessage], list[TracedMessage]]:
    """`wa-esl originate` to the WhatsApp user (SIPp `flow`), answered, FreeSWITCH hangs up: the
    CDR, FreeSWITCH's leg (one INVITE, ACK, BYE: the edge answered the 407) and the user's
    trace."""
    user = bundle.edge.whatsapp_user(flow, folder=folder)
    start = bundle.freeswitch.log.stat().st_size
    try:
        result = bundle.originate(number, WHATSAPP_USER)
        assert result.exit_code == 0 and result.call_uuid, result.output
        bundle.api(f"uuid_kill {result.call_uuid} NORMAL_CLEARING")
        assert user.wait(20) == 0
    finally:
        user.stop()
    record = bundle.cdr(call_uuid=result.call_uuid)
    assert record.direction == "bic" and record.hangup_cause == "NORMAL_CLEARING", record
    assert record.business_number == number and record.user_number == WHATSAPP_USER
    assert record.diagnosis == "the business side hung up", record
    leg = invite_leg(bundle, start)
    sent = [m.first_line.split(" ", 1)[0] for m in leg if m.sent]
    assert sent == ["INVITE", "ACK", "BYE"], sent
    return record, leg, user.trace()


@pytest.mark.parametrize(("number", "flow", "mode"), [
    (SDES_NUMBER, "bic-answered", "SDES"),
    # the WhatsApp user checks FreeSWITCH's offer: UDP/TLS/RTP/SAVPF, fingerprint, actpass
    (DTLS_NUMBER, "bic-answered-dtls", "DTLS"),
], ids=["sdes", "dtls"])
def test_answered_then_business_hangs_up(bundle: BundleLab, tmp_path: Path, number: str,
                                         flow: str, mode: str) -> None:
    if mode == "DTLS":  # FreeSWITCH's own UDP/TLS/RTP/SAVPF offer (the patch's part 3)
        require_dtls_patch()
    assert bundle.edge.meta is not None
    record, leg, _ = business_hangs_up(bundle, number, flow, tmp_path)
    assert record.srtp_mode == mode, record
    invite = leg[0].text
    assert "X-WA-Business-Number: " + number in invite
    if mode == "SDES":
        assert " RTP/SAVP " in invite and "a=crypto:" in invite
    else:
        assert " UDP/TLS/RTP/SAVPF " in invite and "a=fingerprint:sha-256 " in invite
        assert "a=crypto" not in invite


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory, e2e_dtls_pem: Path) -> Iterator[BundleLab]:
    """The bundle with [media] anchor = "rtpengine": Meta's media on rtpengine, FreeSWITCH on
    plain RTP."""
    missing = freeswitch_missing()
    if missing is not None:
        pytest.skip(missing)
    if shutil.which("rtpengine") is None:
        pytest.skip("no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
    running = start_bundle(tmp_path_factory.mktemp("anchored"), e2e_dtls_pem, anchor="rtpengine")
    try:
        yield running
    finally:
        running.stop()


def test_dtls_number_through_rtpengine_on_any_freeswitch(anchored: BundleLab,
                                                        tmp_path: Path) -> None:
    """A DTLS number with the rtpengine anchor, on a stock FreeSWITCH too: FreeSWITCH offers
    plain RTP, Meta gets rtpengine's UDP/TLS/RTP/SAVPF offer (fingerprint, actpass, a candidate;
    the WhatsApp user's scenario checks them) and the call is answered and hung up."""
    _, leg, user_trace = business_hangs_up(anchored, DTLS_NUMBER, "bic-answered-dtls", tmp_path)
    ours = leg[0].text
    assert " RTP/AVP " in ours, ours
    for absent in ("a=fingerprint", "a=crypto", "a=setup", "SAVP"):
        assert absent not in ours, ours
    to_meta = next(m.text for m in user_trace if not m.sent and m.first_line.startswith("INVITE"))
    assert " UDP/TLS/RTP/SAVPF " in to_meta and "a=fingerprint:sha-256 " in to_meta, to_meta
    assert "a=setup:actpass" in to_meta and "a=candidate:" in to_meta, to_meta
    assert "a=crypto" not in to_meta


def test_answered_then_whatsapp_user_hangs_up(bundle: BundleLab, tmp_path: Path) -> None:
    user = bundle.edge.whatsapp_user("bic-meta-hangup", folder=tmp_path)
    try:
        result = bundle.originate(SDES_NUMBER, WHATSAPP_USER)
        assert result.exit_code == 0 and result.call_uuid, result.output
        assert user.wait(20) == 0
    finally:
        user.stop()
    record = bundle.cdr(call_uuid=result.call_uuid)
    assert record.hangup_cause == "NORMAL_CLEARING" and record.meta_duration_s == 9, record
    assert record.diagnosis == "the WhatsApp side hung up (BYE from Meta)"


@pytest.mark.parametrize(("called", "status", "code"), [
    (META_ANSWERS_BY_FLOW["declined"].called_number, 486, "declined"),
    (BARE_URI_ONLY_NUMBER, 403, "meta_auth_uri_mismatch"),
], ids=["meta-486-declined", "meta-403-auth-uri"])
def test_refusal_reports_the_edges_diagnosis(bundle: BundleLab, called: str, status: int,
                                             code: str) -> None:
    start = bundle.freeswitch.log.stat().st_size
    result = bundle.originate(SDES_NUMBER, called)
    assert result.exit_code == 3, result.output
    refusal = next(m for m in invite_leg(bundle, start)
                   if not m.sent and m.first_line.startswith(f"SIP/2.0 {status} "))
    header = next(line.split(":", 1)[1].strip() for line in refusal.text.split("\r\n")
                  if line.lower().startswith("x-wa-diagnosis:"))
    expected = edge_diagnosis(header)
    assert expected is not None and expected.startswith(f"{code}: ")
    # the edge's words, not what wa-esl's own table would say about this status
    phrase = refusal.first_line.split(" ", 2)[2]
    assert expected != diagnose_sip_failure(status, phrase)
    assert expected in " ".join(result.output.split()), result.output
    records = [r for r in bundle.records() if r.user_number == called]
    assert records and records[0].diagnosis == expected and records[0].sip_status == status

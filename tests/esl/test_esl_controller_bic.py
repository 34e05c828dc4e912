"""Business-initiated calls through the controller's inbound connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from esl.bic import BicRequest, BicRequestError, originate_command
from esl.controller import Controller
from esl.diagnosis import edge_diagnosis
from esl.meta_errors import META_ERRORS_BY_KEY, diagnose_sip_failure
from lab.esl_standin import BicOutcome, FreeSwitchStandin, MetaBehaviour
from tests.esl.controller_fixtures import DTLS_NUMBER, SDES_NUMBER, ended_record, make_settings

USER = "+15550200002"


@pytest.fixture
async def controller(standin: FreeSwitchStandin, tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(make_settings(standin, tmp_path))
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()
        ctl.store.close()


async def test_bic_answered_bridges_agent_and_records_meta_duration(
    standin: FreeSwitchStandin, controller: Controller, meta: MetaBehaviour
) -> None:
    meta.default_bic = BicOutcome(talk_s=0.05, meta_duration="12")
    result = await controller.originate(BicRequest(SDES_NUMBER, USER, agent="user/1000"))
    assert result.answered and result.diagnosis == "answered"
    request = standin.api.originated[-1]
    assert request.endpoint == f"sofia/gateway/wa-edge/{USER}"
    assert (request.app, request.app_arg) == ("bridge", "user/1000")
    assert request.variables["origination_caller_id_number"] == SDES_NUMBER
    assert request.variables["sip_h_X-WA-Business-Number"] == SDES_NUMBER
    assert request.variables["rtp_secure_media_outbound"] == "mandatory:AES_CM_128_HMAC_SHA1_80"
    # the number enables no G.711 at Meta: the offer carries OPUS alone, DTMF at 8000 Hz only
    assert request.variables["absolute_codec_string"] == "OPUS"
    assert request.variables["sdp_telephone_event_rate"] == "8000"
    assert request.variables["ignore_early_media"] == "true"  # answered means Meta's 200
    record = await ended_record(controller, result.call_uuid)
    assert record.direction == "bic"
    assert record.business_number == SDES_NUMBER and record.user_number == USER
    assert record.meta_duration_s == 12
    assert record.srtp_mode == "SDES"


async def test_dtls_bic_asks_for_webrtc_media(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    result = await controller.originate(BicRequest(DTLS_NUMBER, USER))
    assert result.answered
    variables = standin.api.originated[-1].variables
    assert variables["media_webrtc"] == "true" and variables["rtp_use_dtls"] == "true"
    assert "rtp_secure_media_outbound" not in variables
    assert standin.api.originated[-1].app == "park"


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("no_call_permission", "call permission"),
        ("daily_limit", "daily limit"),
        ("sip_server_mismatch", "From domain"),
        ("asset_not_found", "not a registered"),
        ("declined", "declined"),
    ],
)
async def test_refused_bic_comes_back_with_the_meta_diagnosis(
    controller: Controller, meta: MetaBehaviour, key: str, words: str
) -> None:
    meta.bic[USER] = BicOutcome.refused(key)
    result = await controller.originate(BicRequest(SDES_NUMBER, USER))
    assert not result.answered
    assert result.sip_status == META_ERRORS_BY_KEY[key].status
    assert words in result.diagnosis
    assert result.diagnosis.startswith(key + ": ")  # the edge's code, read from sip_rh_
    record = controller.store.get(result.call_uuid)
    assert record is not None and record.diagnosis == result.diagnosis


async def test_refusal_without_edge_header_falls_back_to_metas_status_line(
    controller: Controller, meta: MetaBehaviour
) -> None:
    meta.bic[USER] = BicOutcome(status=486, phrase="Busy Here")
    result = await controller.originate(BicRequest(SDES_NUMBER, USER))
    assert not result.answered and result.sip_status == 486
    assert result.diagnosis == diagnose_sip_failure(486, "Busy Here")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (BicRequest("15550100001", USER), "business number"),
        (BicRequest(SDES_NUMBER, "+1 555"), "user"),
        (BicRequest(SDES_NUMBER, USER, agent="user/1000 &hangup()"), "agent"),
        (BicRequest(SDES_NUMBER, USER, agent="${system(id)}"), "agent"),
        (BicRequest("+15557777777", USER), "not configured"),
    ],
)
def test_bad_bic_requests_are_refused_before_freeswitch(
    standin: FreeSwitchStandin, tmp_path: Path, request_: BicRequest, message: str
) -> None:
    with pytest.raises(BicRequestError, match=message):
        originate_command(request_, make_settings(standin, tmp_path), "u")


async def test_originate_without_freeswitch_fails_clearly(tmp_path: Path) -> None:
    from esl.errors import ConnectionClosed
    from siteconfig.controller import ControllerSettings

    settings = ControllerSettings.model_validate(
        {
            "freeswitch": {"port": 1},
            "listen": {"port": 0},
            "cdr_db": str(tmp_path / "c.sqlite3"),
            "numbers": [{"business_number": SDES_NUMBER}],
        }
    )
    ctl = Controller(settings)
    await ctl.start()
    try:
        with pytest.raises(ConnectionClosed, match="no inbound ESL connection"):
            # force: pre-flight would refuse first (no permission), without needing FreeSWITCH
            await ctl.originate(BicRequest(SDES_NUMBER, USER), ready_timeout=0.2, force=True)
    finally:
        await ctl.stop()
        ctl.store.close()
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('daily_limit; cause="cap reached"; fix="wait"', "daily_limit: cap reached; fix: wait"),
        ("sip_5xx", "sip_5xx"),
        ('Bad Code; cause="x"', None),
        ("", None),
        (None, None),
    ],
)
def test_edge_diagnosis_header_is_parsed_strictly(header: str | None, expected: str | None) -> None:
    assert edge_diagnosis(header) == expected


def test_meta_digest_uri_refusal_is_not_taken_for_a_from_domain_mismatch() -> None:
    """Both of Meta's 403 phrases hold "does not match"; without the edge's X-WA-Diagnosis the
    fallback table must still tell Meta's refusal of our digest uri from a From-domain error."""
    diagnosis = diagnose_sip_failure(403, 'Proxy auth uri does not match SIP "to" uri')
    assert diagnosis == META_ERRORS_BY_KEY["meta_auth_uri_mismatch"].diagnosis
    assert diagnose_sip_failure(403, META_ERRORS_BY_KEY["sip_server_mismatch"].phrase) == \
        META_ERRORS_BY_KEY["sip_server_mismatch"].diagnosis

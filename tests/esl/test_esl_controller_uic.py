"""The controller against the stand-in: user-initiated calls end to end."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from esl.controller import Controller
from lab.esl_standin import FreeSwitchStandin, UicCall
from tests.esl.controller_fixtures import (
    DTLS_NUMBER,
    SDES_NUMBER,
    ended_record,
    make_settings,
    place,
)


@pytest.fixture
async def controller(standin: FreeSwitchStandin, tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(make_settings(standin, tmp_path))
    await ctl.start()
    await asyncio.wait_for(ctl.inbound_ready.wait(), 5)
    try:
        yield ctl
    finally:
        await ctl.stop()
        ctl.store.close()


def apps_of(handle_apps: list[tuple[str, str]]) -> list[str]:
    return [app for app, _ in handle_apps]


async def test_sdes_call_is_answered_with_media_first_and_cdr_written(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    call = UicCall(business_number=SDES_NUMBER, talk_s=0.05, meta_duration="7")
    handle = await place(standin, controller, call)
    await handle.finished()
    executed = [(q.app, q.arg) for q in handle.runtime.executed]
    # park: nothing after the playback (the async socket keeps the call parked; FreeSWITCH
    # refuses a park under socket control)
    assert apps_of(executed) == ["multiset", "answer", "playback"]
    assert executed[2][1] == "silence_stream://200,1400"
    variables = handle.runtime.channel.variables
    assert variables["rtp_secure_media"] == "mandatory:AES_CM_128_HMAC_SHA1_80"
    assert variables["rtp_secure_media_inbound"] == "mandatory:AES_CM_128_HMAC_SHA1_80"
    assert variables["absolute_codec_string"] == "OPUS,PCMU,PCMA"
    assert variables["sofia_session_timeout"] == "0"
    assert variables["sip_require_timer"] == "false"
    assert variables["rtp_disable_hold"] == "true"
    assert variables["media_timeout"] == "15000"
    assert variables["send_silence_when_idle"] == "400"
    commands = [line for _, line in handle.listener.commands]
    assert commands[:6] == [
        "connect",
        "myevents json",
        "filter Event-Name CHANNEL_ANSWER",
        "filter Event-Name CHANNEL_HANGUP_COMPLETE",
        "filter Application playback",
        "linger 5",
    ]
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.direction == "uic"
    assert record.wacid == call.wacid
    assert record.business_number == SDES_NUMBER
    assert record.user_number == call.consumer_number
    assert record.srtp_mode == "SDES"
    assert record.route == "catch-all"
    assert record.meta_duration_s == 7
    assert record.fs_duration_s is not None and record.fs_duration_s >= 0.04
    assert record.hangup_cause == "NORMAL_CLEARING"
    assert record.diagnosis == "the WhatsApp side hung up (BYE from Meta)"
    assert record.first_media_ms is not None and record.first_media_ms >= 0
    assert record.media_timeout is False
    assert record.invite_at and record.answer_at and record.end_at


async def test_dtls_number_sets_no_sdes_and_runs_ivr_route(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    handle = await place(standin, controller,
                         UicCall(business_number=DTLS_NUMBER, srtp_offer="DTLS", talk_s=0.05))
    await handle.finished()
    variables = handle.runtime.channel.variables
    assert "rtp_secure_media" not in variables
    assert variables["wa_srtp_mode"] == "DTLS"
    assert [(q.app, q.arg) for q in handle.runtime.executed][-1] == ("ivr", "main_menu")
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.srtp_mode == "DTLS" and record.route == "menu"


async def test_cta_payload_routes_to_bridge_and_headers_match_any_case(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    call = UicCall(
        business_number=SDES_NUMBER,
        forwarded_headers={"x-wa-meta-cta-payload": "promo-summer\x07", "X-WA-PARAM-foo": "bar"},
        talk_s=0.05,
    )
    handle = await place(standin, controller, call)
    await handle.finished()
    assert handle.runtime.executed[-1].app == "bridge"
    assert handle.runtime.executed[-1].arg == "user/2000"
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.route == "promo"
    assert record.cta_payload == "promo-summer"  # control character dropped
    assert record.request_uri_params == "foo=bar"


async def test_unknown_business_number_is_refused_with_a_diagnosis(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    handle = await place(standin, controller, UicCall(business_number="+15559999999"))
    await handle.finished()
    assert handle.runtime.channel.answered_us == 0
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.hangup_cause == "UNALLOCATED_NUMBER"
    assert record.diagnosis is not None and "not configured" in record.diagnosis


async def test_abandoned_call_is_recorded(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    call = UicCall(business_number=SDES_NUMBER, abandon_after_s=0.0)
    handle = await place(standin, controller, call)
    await handle.finished()
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.hangup_cause == "ORIGINATOR_CANCEL"
    assert record.sip_status == 487
    assert record.answer_at is None
    assert record.diagnosis == "the caller hung up before the call was answered"


async def test_media_timeout_is_flagged(standin: FreeSwitchStandin, controller: Controller) -> None:
    handle = await place(standin, controller, UicCall(business_number=SDES_NUMBER, talk_s=None))
    await asyncio.wait_for(handle.runtime.answered.wait(), 5)
    await standin.switch.hangup(handle.runtime, "MEDIA_TIMEOUT", disposition="send_bye")
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.media_timeout is True
    assert record.diagnosis is not None and "media timeout" in record.diagnosis


async def test_non_full_socket_still_answers_and_says_why_linger_is_missing(
    standin: FreeSwitchStandin, controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    call = UicCall(business_number=SDES_NUMBER, talk_s=0.05)
    handle = await place(standin, controller, call, full=False)
    await handle.finished()
    assert handle.runtime.channel.answered_us > 0
    assert "linger 5" not in [line for _, line in handle.listener.commands]
    assert "async full" in caplog.text
    record = await ended_record(controller, handle.runtime.channel.uuid)
    assert record.meta_duration_s is not None  # written by the inbound connection


async def test_garbage_on_the_socket_does_not_stop_other_calls(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", controller.listen_port)
    writer.write(b"Content-Type: nonsense\nContent-Length: abc\n\n")
    await writer.drain()
    await asyncio.wait_for(reader.read(), 5)  # the controller closes that socket
    writer.close()
    calls = [UicCall(business_number=SDES_NUMBER, talk_s=0.02) for _ in range(20)]
    handles = await asyncio.gather(*(place(standin, controller, c) for c in calls))
    await asyncio.gather(*(h.finished() for h in handles))
    records = [await ended_record(controller, h.runtime.channel.uuid) for h in handles]
    assert {r.wacid for r in records} == {c.wacid for c in calls}
    assert all(r.diagnosis == "the WhatsApp side hung up (BYE from Meta)" for r in records)

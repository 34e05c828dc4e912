"""Reconnects, a controller crash mid-call, and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from esl.controller import Controller
from lab.esl_standin import FreeSwitchStandin, MetaBehaviour, UicCall
from tests.esl.conftest import PASSWORD
from tests.esl.controller_fixtures import SDES_NUMBER, ended_record, make_settings, place


async def test_cdr_survives_a_controller_crash_mid_call(
    standin: FreeSwitchStandin, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path)
    crashed = Controller(settings)
    await crashed.start()
    await asyncio.wait_for(crashed.inbound_ready.wait(), 5)
    call = UicCall(
        business_number=SDES_NUMBER,
        forwarded_headers={"X-WA-Meta-Cta-Payload": "promo-1"},  # bridged: outlives the socket
        talk_s=None,
    )
    handle = await place(standin, crashed, call)
    await asyncio.wait_for(handle.runtime.answered.wait(), 5)
    started = crashed.store.get(handle.runtime.channel.uuid)
    assert started is not None and started.state == "active" and started.route == "promo"
    await crashed.stop()  # the process dies: sockets gone, no goodbye
    crashed.store.close()
    assert handle.runtime.channel.is_up

    restarted = Controller(settings)
    await restarted.start()
    try:
        await asyncio.wait_for(restarted.inbound_ready.wait(), 5)
        from lab.esl_standin.scenarios import meta_bye

        await meta_bye(standin.switch, handle.runtime, 0.0, "42")
        record = await ended_record(restarted, handle.runtime.channel.uuid)
        assert record.meta_duration_s == 42
        assert record.route == "promo"  # merged with what the first controller wrote
        assert record.cta_payload == "promo-1"
    finally:
        await restarted.stop()
        restarted.store.close()


async def test_call_that_ends_while_the_controller_is_down_is_marked_missed(
    standin: FreeSwitchStandin, tmp_path: Path
) -> None:
    settings = make_settings(standin, tmp_path)
    crashed = Controller(settings)
    await crashed.start()
    await asyncio.wait_for(crashed.inbound_ready.wait(), 5)
    gone = await place(standin, crashed, UicCall(
        business_number=SDES_NUMBER, forwarded_headers={"X-WA-Meta-Cta-Payload": "promo-1"},
        talk_s=None))
    alive = await place(standin, crashed, UicCall(
        business_number=SDES_NUMBER, forwarded_headers={"X-WA-Meta-Cta-Payload": "promo-2"},
        talk_s=None))
    await asyncio.wait_for(gone.runtime.answered.wait(), 5)
    await asyncio.wait_for(alive.runtime.answered.wait(), 5)
    await crashed.stop()
    crashed.store.close()
    from lab.esl_standin.scenarios import meta_bye

    await meta_bye(standin.switch, gone.runtime, 0.0, "7")  # nobody of ours is listening

    restarted = Controller(settings)
    await restarted.start()
    try:
        await asyncio.wait_for(restarted.inbound_ready.wait(), 5)
        missed = restarted.store.get(gone.runtime.channel.uuid)
        assert missed is not None and missed.state == "missed"
        assert missed.diagnosis is not None and missed.diagnosis.startswith("controller-missed-hangup")
        still = restarted.store.get(alive.runtime.channel.uuid)
        assert still is not None and still.state == "active"
        await meta_bye(standin.switch, alive.runtime, 0.0, "9")
        record = await ended_record(restarted, alive.runtime.channel.uuid)
        assert record.meta_duration_s == 9
    finally:
        await restarted.stop()
        restarted.store.close()


async def test_wrong_password_is_reported_without_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    standin = FreeSwitchStandin(password="the-real-one", meta=MetaBehaviour())
    await standin.start()
    settings = make_settings(standin, tmp_path)  # carries tests' PASSWORD: wrong here
    ctl = Controller(settings)
    caplog.set_level(logging.DEBUG)
    await ctl.start()
    try:
        await asyncio.sleep(0.2)
        assert not ctl.inbound_ready.is_set()
        assert "refused the ESL password" in caplog.text
        assert PASSWORD not in caplog.text
        assert PASSWORD not in repr(settings)
    finally:
        await ctl.stop()
        await standin.stop()
        ctl.store.close()

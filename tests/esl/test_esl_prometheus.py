"""wa-esl's Prometheus endpoint, scraped over HTTP while calls go through the stand-in."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from esl.bic import BicRequest, place_bic
from esl.call_outcome import KNOWN_CODES
from esl.cdr import CallRecord
from esl.client import connect_inbound
from esl.controller import Controller
from lab.esl_standin import BicOutcome, FreeSwitchStandin, MetaBehaviour, UicCall
from siteconfig.controller import ControllerSettings, SettingsError, load_settings
from tests.esl.conftest import PASSWORD
from tests.esl.controller_fixtures import SDES_NUMBER, ended_record, make_settings, place

USER = "+15550200002"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def with_metrics(settings: ControllerSettings) -> ControllerSettings:
    return settings.model_copy(update={"metrics_listen": "127.0.0.1:0"})


@pytest.fixture
async def controller(standin: FreeSwitchStandin, tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(with_metrics(make_settings(standin, tmp_path)))
    await ctl.start()
    await asyncio.wait_for(ctl.inbound_ready.wait(), 5)
    try:
        yield ctl
    finally:
        await ctl.stop()
        ctl.store.close()


async def scrape_text(controller: Controller, path: str = "/metrics") -> str:
    assert controller.metrics_endpoint is not None
    url = f"http://127.0.0.1:{controller.metrics_endpoint.port}{path}"
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def scrape(controller: Controller) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(await scrape_text(controller)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def until(check: object, timeout: float = 5.0) -> None:
    """Poll ``check()`` (a callable returning an awaitable bool) until true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("metrics never reached the expected values")
        await asyncio.sleep(0.02)


async def test_answered_and_refused_uic_move_their_counters(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    before = await scrape(controller)
    assert value(before, "wasip_esl_connected") == 1
    assert value(before, "wasip_esl_calls_active", direction="uic") == 0

    answered = await place(standin, controller, UicCall(business_number=SDES_NUMBER, talk_s=0.05))
    await answered.finished()
    refused = await place(standin, controller, UicCall(business_number="+15559999999"))
    await refused.finished()
    await ended_record(controller, answered.runtime.channel.uuid)

    async def settled() -> bool:
        samples = await scrape(controller)
        return value(samples, "wasip_esl_calls_total", direction="uic",
                     outcome="unknown_business_number") == 1 and value(
            samples, "wasip_esl_calls_total", direction="uic", outcome="answered") == 1

    await until(settled)
    samples = await scrape(controller)
    assert value(samples, "wasip_esl_calls_active", direction="uic") == 0
    assert value(samples, "wasip_esl_uic_setup_seconds_count") == 1  # only the answered call
    assert 0 < value(samples, "wasip_esl_uic_setup_seconds_sum") < 5
    assert value(samples, "wasip_esl_first_media_seconds_count", direction="uic") == 1
    assert value(samples, "wasip_esl_cdr_writes_total") >= 4  # start + end of each call
    assert value(samples, "wasip_esl_cdr_write_failures_total") == 0


async def test_active_gauge_counts_a_call_while_it_lasts(
    standin: FreeSwitchStandin, controller: Controller
) -> None:
    handle = await place(standin, controller, UicCall(business_number=SDES_NUMBER, talk_s=0.5))
    await asyncio.wait_for(handle.runtime.answered.wait(), 5)

    async def one_active() -> bool:
        return value(await scrape(controller), "wasip_esl_calls_active", direction="uic") == 1

    await until(one_active)
    await handle.finished()

    async def none_active() -> bool:
        return value(await scrape(controller), "wasip_esl_calls_active", direction="uic") == 0

    await until(none_active)


async def test_bic_results_are_counted_by_diagnosis_code(
    controller: Controller, meta: MetaBehaviour
) -> None:
    meta.default_bic = BicOutcome(talk_s=0.05)
    meta.bic[USER] = BicOutcome.refused("no_call_permission")
    refused = await controller.originate(BicRequest(SDES_NUMBER, USER))
    assert not refused.answered
    other_user = "+15550200003"
    meta.bic[other_user] = BicOutcome(status=486, phrase="Busy Here")  # no edge header
    busy = await controller.originate(BicRequest(SDES_NUMBER, other_user))
    assert not busy.answered
    answered = await controller.originate(BicRequest(SDES_NUMBER, "+15550200004"))
    assert answered.answered
    await ended_record(controller, answered.call_uuid)

    async def settled() -> bool:
        return value(await scrape(controller), "wasip_esl_calls_active", direction="bic") == 0

    await until(settled)
    samples = await scrape(controller)
    assert value(samples, "wasip_esl_originate_total", diagnosis="no_call_permission") == 1
    assert value(samples, "wasip_esl_originate_total", diagnosis="declined") == 1
    assert value(samples, "wasip_esl_originate_total", diagnosis="answered") == 1
    assert value(samples, "wasip_esl_calls_total", direction="bic", outcome="answered") == 1


async def test_labels_never_carry_numbers_or_call_ids(
    standin: FreeSwitchStandin, controller: Controller, meta: MetaBehaviour
) -> None:
    meta.bic[USER] = BicOutcome(status=403, phrase="Nope",
                                edge_diagnosis='made_up_code_123; cause="x"; fix="y"')
    result = await controller.originate(BicRequest(SDES_NUMBER, USER))
    handle = await place(standin, controller, UicCall(business_number=SDES_NUMBER, talk_s=0.05))
    await handle.finished()
    await ended_record(controller, handle.runtime.channel.uuid)
    text = await scrape_text(controller)
    for secret in (SDES_NUMBER, USER, result.call_uuid, handle.runtime.channel.uuid,
                   "made_up_code_123"):
        assert secret not in text
    samples = await scrape(controller)
    assert value(samples, "wasip_esl_originate_total", diagnosis="other") == 1
    for (_, labels) in samples:
        for name, label in labels:
            if name in ("outcome", "diagnosis"):
                assert label in KNOWN_CODES


async def test_reconnects_and_connection_state_are_exported(tmp_path: Path) -> None:
    first = FreeSwitchStandin(password=PASSWORD)
    await first.start()
    port = first.port
    ctl = Controller(with_metrics(make_settings(first, tmp_path)))
    await ctl.start()
    second = FreeSwitchStandin(password=PASSWORD)
    try:
        await asyncio.wait_for(ctl.inbound_ready.wait(), 5)
        await first.stop()

        async def down() -> bool:
            return value(await scrape(ctl), "wasip_esl_connected") == 0

        await until(down)
        await second.start("127.0.0.1", port)
        await asyncio.wait_for(ctl.inbound_ready.wait(), 5)
        samples = await scrape(ctl)
        assert value(samples, "wasip_esl_connected") == 1
        assert value(samples, "wasip_esl_reconnects_total") == 1
    finally:
        await ctl.stop()
        await second.stop()
        ctl.store.close()


async def test_failed_cdr_writes_are_counted(controller: Controller) -> None:
    controller.store._db.close()  # the database went away under the controller
    with pytest.raises(sqlite3.ProgrammingError):
        controller.store.upsert(CallRecord(call_uuid="0b5e6f1c-call"))
    samples = await scrape(controller)
    assert value(samples, "wasip_esl_cdr_write_failures_total") == 1
    assert value(samples, "wasip_esl_cdr_writes_total") == 0


async def test_endpoint_is_off_unless_configured(
    standin: FreeSwitchStandin, tmp_path: Path
) -> None:
    ctl = Controller(make_settings(standin, tmp_path))
    await ctl.start(inbound=False)
    try:
        assert ctl.metrics_endpoint is None
    finally:
        await ctl.stop()
        ctl.store.close()


@pytest.mark.parametrize("address", ["localhost:9094", "127.0.0.1", "::1:9094", "10.0.0.1:99999"])
def test_bad_metrics_address_is_refused_with_the_key(tmp_path: Path, address: str) -> None:
    path = tmp_path / "esl.toml"
    path.write_text(f'metrics_listen = "{address}"\n', encoding="utf-8")
    with pytest.raises(SettingsError, match="metrics_listen"):
        load_settings(path)


async def test_bic_placed_by_wa_esl_originate_is_counted_by_the_running_controller(
    standin: FreeSwitchStandin, controller: Controller, meta: MetaBehaviour
) -> None:
    """`wa-esl originate` is its own process with its own connection: the running controller
    still sees the leg's hangup on its inbound connection and counts the call."""
    meta.bic[USER] = BicOutcome.refused("daily_limit")
    connection = await connect_inbound(standin.host, standin.port, PASSWORD, timeout=5)
    try:
        await connection.command("event json CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
        result = await place_bic(connection, BicRequest(SDES_NUMBER, USER), controller.settings)
    finally:
        await connection.close()
    assert not result.answered

    async def counted() -> bool:
        return value(await scrape(controller), "wasip_esl_calls_total", direction="bic",
                     outcome="daily_limit") == 1

    await until(counted)
    samples = await scrape(controller)
    assert value(samples, "wasip_esl_originate_total", diagnosis="daily_limit") == 0  # not ours


async def test_a_taken_metrics_port_is_a_clear_error(
    standin: FreeSwitchStandin, tmp_path: Path
) -> None:
    import socket

    from esl.prometheus import MetricsListenError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(standin, tmp_path).model_copy(
            update={"metrics_listen": f"127.0.0.1:{port}"})
        ctl = Controller(settings)
        try:
            with pytest.raises(MetricsListenError, match=f"127.0.0.1:{port}"):
                await ctl.start(inbound=False)
        finally:
            await ctl.stop()
            ctl.store.close()

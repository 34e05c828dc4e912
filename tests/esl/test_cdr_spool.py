"""CDR writes made while the PostgreSQL CDR database is down: spooled on the node, replayed.

Against a real PostgreSQL server that each test stops and starts again (the same data): the
calls go on while it is down with no exception out of a handler, their CDR writes wait in the
node's spool (one WARNING when spooling starts, one when it drains) and reach the database in
order once it is back, at the next start of wa-esl too; a full spool drops and counts; a
hangup replayed late still wins over another node's 'lost' and this node's 'missed'. The URL
carries a password throughout, and no log line may show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from esl import database
from esl.cdr import FIELDS, LOST_CODE, CallRecord, CdrStore
from esl.cdr_spool import CdrSpool
from esl.controller import MISSED_DIAGNOSIS, Controller
from esl.database import DatabaseError, DatabaseUnreachable
from lab.esl_standin import FreeSwitchStandin, UicCall
from siteconfig.controller import ControllerSettings
from siteconfig.database_url import PostgresUrl
from tests.esl.controller_fixtures import SDES_NUMBER, ended_record, make_settings, place
from tests.esl.test_cdr_postgres import backdate_heartbeat, until
from tests.provisioning.pg_cluster import DB_USER, PgCluster, restartable_postgres_cluster, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server not installed "
                                "(scripts/install-system-deps installs it)")
SECRET = "hunter2-spool"


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    """A cluster of this test's own: the test stops it."""
    with restartable_postgres_cluster() as cluster:
        yield cluster


def secret_url(cluster: PgCluster) -> str:
    return cluster.url.replace(f"{DB_USER}@", f"{DB_USER}:{SECRET}@")


def spool_settings(standin: FreeSwitchStandin, tmp_path: Path, cluster: PgCluster,
                   **update: object) -> ControllerSettings:
    settings = make_settings(standin, tmp_path)
    return settings.model_copy(update={"cdr_db": PostgresUrl(secret_url(cluster)),
                                       "node": "media1", "node_lost_after_s": 3,
                                       "cdr_spool": tmp_path / "cdr-spool.sqlite3", **update})


@contextlib.asynccontextmanager
async def running(settings: ControllerSettings) -> AsyncIterator[Controller]:
    """A controller started, its Event Socket connection up; stopped and closed after."""
    controller = Controller(settings)
    await controller.start()
    try:
        await asyncio.wait_for(controller.inbound_ready.wait(), 5)
        yield controller
    finally:
        await controller.stop()
        controller.store.close()


def sample(controller: Controller, name: str) -> float:
    return controller.metrics.registry.get_sample_value(name) or 0.0


def messages(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


def handler_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """esl/client.py logs these with a traceback when a call or event handler raises."""
    return [r.getMessage() for r in caplog.records if "handler failed" in r.getMessage()]


def read(cluster: PgCluster, call_uuid: str) -> CallRecord | None:
    store = CdrStore(PostgresUrl(cluster.url))
    try:
        return store.get(call_uuid)
    finally:
        store.close()


async def test_calls_while_postgres_is_stopped_go_on_and_their_cdrs_arrive_after_it_is_back(
    standin: FreeSwitchStandin, tmp_path: Path, pg: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(spool_settings(standin, tmp_path, pg)) as controller:
        # a call up before the stop (start and answer written), ended while it is down
        first = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                         talk_s=None))
        await asyncio.wait_for(first.runtime.answered.wait(), 5)
        first_uuid = first.runtime.channel.uuid
        await until(lambda: (read(pg, first_uuid) or CallRecord("")).answer_at, "answer_at")
        pg.stop()
        await standin.switch.hangup(first.runtime, "NORMAL_CLEARING", sip_status=200,
                                    bye_headers={"X-WA-Meta-Call-Duration": "1"})
        await first.finished()
        await until(lambda: controller.store.spooled >= 2, "first's end spooled (twice)")
        # a call placed and ended while it is down: start, answer and end all spooled
        second = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                          talk_s=0.1))
        await second.finished()
        second_uuid = second.runtime.channel.uuid
        assert second.runtime.answered.is_set()  # the call went on as with the database up
        assert handler_failures(caplog) == []
        await until(lambda: controller.store.spooled >= 6, "both calls' writes spooled")
        spool = controller.store.spool
        assert spool is not None
        order = [(w.call_uuid, w.params["state"], w.params["answer_at"] is not None)
                 for w in spool.oldest(100)]
        # first's end from its socket and from the inbound connection; then second's start,
        # its answer, its end twice: the order they were made
        assert order[:2] == [(first_uuid, "ended", True)] * 2, order
        assert order[2] == (second_uuid, None, False), order
        assert order[3] == (second_uuid, None, True), order
        assert [o[1] for o in order[4:]] == ["ended", "ended"], order
        spooled = sample(controller, "wasip_esl_cdr_spooled_total")
        assert spooled == len(order) and sample(controller, "wasip_esl_cdr_spool_records") == \
            len(order)

        pg.start()
        await until(lambda: controller.store.spooled == 0, "the spool drained", timeout=20)
        for call_uuid in (first_uuid, second_uuid):
            record = read(pg, call_uuid)
            assert record is not None and record.state == "ended", record
            assert record.invite_at and record.answer_at and record.end_at, record
            assert record.node == "media1" and record.route == "catch-all"
            assert record.hangup_cause == "NORMAL_CLEARING" and record.wacid
            assert record.invite_at <= record.answer_at <= record.end_at
        assert (read(pg, first_uuid) or CallRecord("")).meta_duration_s == 1
        assert sample(controller, "wasip_esl_cdr_replayed_total") == spooled
        assert sample(controller, "wasip_esl_cdr_spool_records") == 0
        assert sample(controller, "wasip_esl_cdr_spool_dropped_total") == 0
        assert len(messages(caplog, "CDR writes go to the spool")) == 1  # not one per call
        (drained,) = messages(caplog, "drained")
        assert f"{int(spooled)} spooled write(s) replayed in order" in drained
        # and after the outage the writes go straight to the database again
        third = await place(standin, controller, UicCall(business_number=SDES_NUMBER))
        await ended_record(controller, third.runtime.channel.uuid)
        assert controller.store.spooled == 0
        assert handler_failures(caplog) == []
        assert SECRET not in caplog.text
        assert f"postgresql://{DB_USER}:***@127.0.0.1" in drained


async def test_writes_spooled_before_a_restart_are_replayed_at_start(
    standin: FreeSwitchStandin, tmp_path: Path, pg: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = spool_settings(standin, tmp_path, pg)
    async with running(settings) as controller:
        pg.stop()
        call = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                        talk_s=0.1))
        await call.finished()
        await until(lambda: controller.store.spooled >= 3, "the call's writes spooled")
    left = CdrSpool(settings.cdr_spool, max_records=10)
    kept = len(left)
    left.close()
    assert kept >= 3  # on disk across the restart
    assert settings.cdr_spool.stat().st_mode & 0o777 == 0o600  # CDRs hold phone numbers
    pg.start()
    caplog.clear()
    async with running(settings) as restarted:
        (holds,) = messages(caplog, "from before wa-esl restarted")
        assert f"holds {kept} write(s)" in holds
        await until(lambda: restarted.store.spooled == 0, "the spool replayed at start", 10)
        record = read(pg, call.runtime.channel.uuid)
        assert record is not None and record.state == "ended" and record.answer_at
        assert sample(restarted, "wasip_esl_cdr_replayed_total") == kept
        assert len(messages(caplog, "drained")) == 1
        assert SECRET not in caplog.text


async def test_a_full_spool_drops_counts_and_warns_once(
    standin: FreeSwitchStandin, tmp_path: Path, pg: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with running(spool_settings(standin, tmp_path, pg, cdr_spool_max_records=3)) as controller:
        pg.stop()
        outcomes = [controller.store.upsert(CallRecord(call_uuid=f"c{i}", direction="uic"))
                    for i in range(5)]
        assert outcomes == ["spooled"] * 3 + ["dropped"] * 2
        assert sample(controller, "wasip_esl_cdr_spool_dropped_total") == 2
        assert sample(controller, "wasip_esl_cdr_spooled_total") == 3
        assert sample(controller, "wasip_esl_cdr_write_failures_total") == 5
        (full,) = messages(caplog, "are dropped")  # once, not per write
        assert "full (3 writes, [esl] cdr_spool_max_records)" in full and "call c3" in full
        assert "wasip_esl_cdr_spool_dropped_total" in full
        pg.start()
        await until(lambda: controller.store.spooled == 0, "the spool drained", timeout=20)
        assert [read(pg, f"c{i}") is not None for i in range(5)] == [True] * 3 + [False] * 2
        (drained,) = messages(caplog, "drained")
        assert "2 write(s) dropped while the spool was full" in drained
        assert SECRET not in caplog.text


def test_replay_keeps_the_order_and_a_late_hangup_wins_over_lost_and_missed(
    tmp_path: Path, pg: PgCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Store level, the replay driven by hand: media1 cut off while media2 closes its call."""
    monkeypatch.setattr(database, "PG_RETRY_AFTER_S", 0.0)  # no 5 s wait once it is back
    url = PostgresUrl(secret_url(pg))
    media1 = CdrStore(url, node="media1",
                      spool=CdrSpool(tmp_path / "spool.sqlite3", max_records=100))
    media1.upsert(CallRecord(call_uuid="lost-1", wacid="wacid.L", direction="uic"))
    media1.upsert(CallRecord(call_uuid="missed-1", wacid="wacid.M", direction="uic"))
    media1.heartbeat(esl_up=True)
    pg.stop()
    try:
        # the same field written twice: the later value must be the one left
        assert media1.upsert(CallRecord(call_uuid="order-1", route="first")) == "spooled"
        assert media1.upsert(CallRecord(call_uuid="order-1", route="second")) == "spooled"
        for call_uuid in ("lost-1", "missed-1"):
            media1.upsert(CallRecord(call_uuid=call_uuid, state="ended",
                                     hangup_cause="NORMAL_CLEARING",
                                     end_at="2026-12-08T00:00:09.000+00:00",
                                     diagnosis="the WhatsApp side hung up (BYE from Meta)"))
        with pytest.raises(DatabaseUnreachable):
            media1.replay_spool()
        assert media1.spooled == 4  # nothing forgotten
        pg.start()
        # meanwhile media2 closed media1's call as lost, and media1's reconnect marked the
        # other missed, both before the spool reached the database
        media2 = CdrStore(url, node="media2")
        try:
            media2.mark_missed("missed-1", MISSED_DIAGNOSIS)  # as media1's reconcile would
            backdate_heartbeat(secret_url(pg), "media1", 60)
            (closed,) = media2.close_lost_calls(30)
            assert closed.call_uuid == "lost-1" and (closed.diagnosis or "").startswith(LOST_CODE)
            assert (media2.get("missed-1") or closed).state == "missed"
            while media1.replay_spool(batch=3):
                pass
            assert media1.spooled == 0
            assert (media2.get("order-1") or closed).route == "second"
            for call_uuid in ("lost-1", "missed-1"):
                record = media2.get(call_uuid)
                assert record is not None and record.state == "ended", record
                assert record.diagnosis == "the WhatsApp side hung up (BYE from Meta)"
                assert record.end_at == "2026-12-08T00:00:09.000+00:00"
                assert record.node == "media1"
            # replayed once more (a crash between commit and delete): the same rows
            before = [media2.get(u) for u in ("order-1", "lost-1", "missed-1")]
            for params in ({"call_uuid": "order-1", "route": "first"},
                           {"call_uuid": "order-1", "route": "second"}):
                assert media1.spool is not None
                media1.spool.append({**{n: None for n in FIELDS}, "node": "media1",
                                     **params}, 0.0)
            while media1.replay_spool():
                pass
            assert [media2.get(u) for u in ("order-1", "lost-1", "missed-1")] == before
        finally:
            media2.close()
    finally:
        media1.close()


def test_a_write_the_database_refuses_is_raised_not_spooled(tmp_path: Path,
                                                            pg: PgCluster) -> None:
    """Only an unreachable database spools: a refused statement is a bug and says so."""
    store = CdrStore(PostgresUrl(secret_url(pg)), node="media1",
                     spool=CdrSpool(tmp_path / "spool.sqlite3", max_records=100))
    try:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute("ALTER TABLE cdr ADD CONSTRAINT no_x CHECK (call_uuid <> 'x')")
        with pytest.raises(DatabaseError) as raised:
            store.upsert(CallRecord(call_uuid="x"))
        assert not isinstance(raised.value, DatabaseUnreachable)
        assert store.spooled == 0 and SECRET not in str(raised.value)
    finally:
        store.close()


async def test_a_sqlite_cdr_database_has_no_spool(standin: FreeSwitchStandin,
                                                  tmp_path: Path) -> None:
    """One node's own file: nothing to be cut off from, the writes as before."""
    settings = make_settings(standin, tmp_path).model_copy(
        update={"cdr_spool": tmp_path / "spool.sqlite3"})
    controller = Controller(settings)
    try:
        assert controller.store.spool is None
        assert controller.store.upsert(CallRecord(call_uuid="s")) == "written"
        assert not settings.cdr_spool.exists()
    finally:
        controller.store.close()


def test_the_spool_setting_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        ControllerSettings.model_validate({"cdr_spool": str(tmp_path)})
    with pytest.raises(ValueError, match="a file of its own"):
        ControllerSettings.model_validate({"cdr_db": str(tmp_path / "c.sqlite3"),
                                           "cdr_spool": str(tmp_path / "c.sqlite3")})
    with pytest.raises(ValueError, match="cdr_spool_max_records"):
        ControllerSettings.model_validate({"cdr_spool_max_records": 0})
    assert ControllerSettings().cdr_spool_max_records == 200_000

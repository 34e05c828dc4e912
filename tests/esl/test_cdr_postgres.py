"""CDRs of several media nodes in one PostgreSQL database (issue 20), against a real server.

Two controllers, each with its own FreeSWITCH stand-in, are two media nodes writing one
database: `wa-esl call show` from either answers for a call of the other and names the node;
a node that dies whole (FreeSWITCH and wa-esl) stops its heartbeat and the other node closes
its call as 'lost', saying why; Meta's terminate webhook gives such a call its end. The URL
carries a password throughout (the test server trusts 127.0.0.1, so it is never checked), and
no log line, message or output may show it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.call_report import build_report, report_lines
from esl.cdr import LOST_CODE, CallRecord, CdrStore
from esl.cli import app
from esl.controller import Controller
from esl.database import DatabaseError, open_database, postgres_sql
from esl.meta_call_events import MetaCallEventStore
from esl.permission_requests import PermissionRequestLog, permission_counts
from esl.webhook import WebhookConfig, WebhookReceiver, bound_port
from esl.webhook import serve as serve_webhook
from esl.webhook_events import CallEvent
from esl.webhook_signature import HEADER, sign
from lab.esl_standin import FreeSwitchStandin, MetaBehaviour, UicCall
from lab.graph_standin.webhook_post import calls_terminate
from lab.processes import free_port
from siteconfig.controller import ControllerSettings
from siteconfig.database_url import PostgresUrl
from tests.esl.conftest import PASSWORD as ESL_PASSWORD
from tests.esl.controller_fixtures import SDES_NUMBER, ended_record, make_settings, place
from tests.provisioning.pg_cluster import DB_USER, postgres_cluster, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server not installed "
                                "(scripts/install-system-deps installs it)")
SECRET = "hunter2-cdr"


@pytest.fixture(scope="module")
def pg_server() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def db_url(pg_server: str) -> str:
    """A fresh database of its own for each test, its URL with a password in it."""
    name = f"cdr_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    base = pg_server.rsplit("/", 1)[0].replace(f"{DB_USER}@", f"{DB_USER}:{SECRET}@")
    return f"{base}/{name}"


def node_settings(standin: FreeSwitchStandin, tmp_path: Path, url: str, node: str,
                  lost_after_s: int = 3) -> ControllerSettings:
    settings = make_settings(standin, tmp_path)
    return settings.model_copy(update={"cdr_db": PostgresUrl(url), "node": node,
                                       "node_lost_after_s": lost_after_s,
                                       "cdr_spool": tmp_path / "cdr-spool.sqlite3"})


@pytest.fixture
async def second_standin() -> AsyncIterator[FreeSwitchStandin]:
    server = FreeSwitchStandin(password=ESL_PASSWORD, meta=MetaBehaviour())
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


async def until(condition, what: str, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Poll `condition()` (bounded) until it returns something truthy; return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def show(url: str, call: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["call", "show", call, "--db", url])
    return result.exit_code, result.output


# ---- the store: two nodes, one database -------------------------------------------------------


def test_two_nodes_write_one_table_and_each_record_names_its_node(db_url: str) -> None:
    media1 = CdrStore(PostgresUrl(db_url), node="media1")
    media2 = CdrStore(PostgresUrl(db_url), node="media2")
    reader = CdrStore(PostgresUrl(db_url))
    try:
        media1.upsert(CallRecord(call_uuid="a", wacid="wacid.A", direction="uic",
                                 invite_at="2026-12-07T10:00:00.000+00:00", route="promo"))
        media2.upsert(CallRecord(call_uuid="b", wacid="wacid.B", direction="bic",
                                 invite_at="2026-12-07T10:00:01.000+00:00"))
        # what another writer knew is kept; the node stays the one that had the call
        media2.upsert(CallRecord(call_uuid="a", first_media_ms=21.5, media_timeout=False))
        media1.upsert(CallRecord(call_uuid="a", state="ended", hangup_cause="NORMAL_CLEARING",
                                 media_timeout=True))
        a = reader.get("a")
        assert a is not None and a.node == "media1" and a.route == "promo"
        assert a.first_media_ms == 21.5 and a.media_timeout is True and a.state == "ended"
        media1.upsert(CallRecord(call_uuid="a"))  # an 'active' write never reopens an end
        assert (reader.get("a") or a).state == "ended"
        assert [(r.call_uuid, r.node) for r in reader.recent()] == [("b", "media2"),
                                                                     ("a", "media1")]
        assert [r.call_uuid for r in reader.recent(node="media2")] == ["b"]
        assert [r.node for r in reader.find("wacid.B")] == ["media2"]
        # each controller reconciles only its own node's calls with its FreeSWITCH
        assert media2.active_calls() == ["b"] and media1.active_calls() == []
    finally:
        for store in (media1, media2, reader):
            store.close()


def test_nodes_starting_at_once_create_the_schema_once(db_url: str) -> None:
    """Four stores opening a new database together: no CREATE TABLE race (advisory lock)."""
    problems: list[BaseException] = []
    stores: list[CdrStore] = []
    barrier = threading.Barrier(4)

    def open_one(index: int) -> None:
        barrier.wait(timeout=10)
        try:
            stores.append(CdrStore(PostgresUrl(db_url), node=f"media{index}"))
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert problems == [] and len(stores) == 4
        stores[0].upsert(CallRecord(call_uuid="x"))
        assert stores[3].get("x") is not None
    finally:
        for store in stores:
            store.close()


def test_the_other_tables_of_the_cdr_database_work_on_postgres(db_url: str) -> None:
    """Permissions, permission requests and Meta's call events: the same stores, same rules."""
    location = PostgresUrl(db_url)
    permissions = CallPermissionStore(location)
    requests = PermissionRequestLog(location)
    events = MetaCallEventStore(location)
    try:
        granted = CallPermission("+15550100001", "15551230000", "granted", None, True,
                                 "user_action", "webhook", 1_800_000_000)
        older = CallPermission("+15550100001", "15551230000", "rejected", None, False, None,
                               "graph", 1_700_000_000)
        assert permissions.record(granted, event_id="wamid.1") is True
        assert permissions.record(granted, event_id="wamid.1") is False  # Meta's retry
        assert permissions.record(older) is True
        assert permissions.current("+15550100001", "15551230000") == granted  # newest kept
        assert requests.record("wamid.r", "+15550100001", "15551230000", 5) is True
        assert requests.record("wamid.r", "+15550100001", "15551230000", 5) is False
        assert requests.last_sent("+15550100001", "15551230000") == 5
        assert permission_counts(location) == (1, 1)
        terminate = CallEvent("wacid.T", "terminate", "pnid", "USER_INITIATED", "COMPLETED",
                              30, 1_800_000_000, 1_800_000_030, 1_800_000_031)
        assert events.record(terminate, 1_800_000_032) is True
        assert events.record(terminate, 1_800_000_033) is False
        assert events.for_wacid("wacid.T") == [terminate]
    finally:
        permissions.close()
        requests.close()
        events.close()


def test_placeholders_are_rewritten_outside_literals_and_casts() -> None:
    assert postgres_sql("SELECT ?, :name, 'a:b ?', x::text, 5 % 2 WHERE y = ?") == \
        "SELECT %s, %(name)s, 'a:b ?', x::text, 5 %% 2 WHERE y = %s"


def test_a_connection_postgres_dropped_is_reopened_for_the_next_write(db_url: str) -> None:
    store = CdrStore(PostgresUrl(db_url), node="media1")
    try:
        store.upsert(CallRecord(call_uuid="before"))
        with psycopg.connect(db_url.replace(f":{SECRET}@", "@"), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'wa-esl media1'").fetchall()
        assert killed == [(True,)]
        store.upsert(CallRecord(call_uuid="after"))  # reopened once, the upsert run again
        assert store.get("after") is not None and store.get("before") is not None
    finally:
        store.close()


# ---- node loss --------------------------------------------------------------------------------


def backdate_heartbeat(url: str, node: str, seconds: float) -> None:
    with psycopg.connect(url.replace(f":{SECRET}@", "@"), autocommit=True) as db:
        db.execute("UPDATE esl_node SET heartbeat_at = heartbeat_at - %s WHERE node = %s",
                   (seconds, node))


def test_call_show_says_a_node_is_lost_before_anyone_closed_its_call(db_url: str) -> None:
    media1 = CdrStore(PostgresUrl(db_url), node="media1")
    try:
        media1.upsert(CallRecord(call_uuid="up", wacid="wacid.UP", direction="uic"))
        media1.heartbeat(esl_up=True)
        report = build_report("wacid.UP", media1, ())
        assert report.node_notes == {}  # alive: nothing to say
        backdate_heartbeat(db_url, "media1", 60)
        code, output = show(db_url, "wacid.UP")
        assert code == 0
        assert "state active node media1" in output
        assert "node: media node media1 lost (no heartbeat since" in output
        media1.heartbeat(esl_up=False)  # alive again, but its FreeSWITCH is not connected
        lines = "\n".join(report_lines(build_report("wacid.UP", media1, ())))
        assert "wa-esl is up but not connected to FreeSWITCH since" in lines
        assert SECRET not in output
    finally:
        media1.close()


async def test_a_node_killed_mid_call_is_closed_lost_by_the_other_and_shown_from_it(
    standin: FreeSwitchStandin, second_standin: FreeSwitchStandin, tmp_path: Path,
    db_url: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "media1").mkdir()
    (tmp_path / "media2").mkdir()
    media1 = Controller(node_settings(standin, tmp_path / "media1", db_url, "media1"))
    media2 = Controller(node_settings(second_standin, tmp_path / "media2", db_url, "media2"))
    events = MetaCallEventStore(PostgresUrl(db_url))
    await media1.start()
    await media2.start()
    try:
        await asyncio.wait_for(media1.inbound_ready.wait(), 5)
        await asyncio.wait_for(media2.inbound_ready.wait(), 5)
        # a call that ends normally on media1, looked up from media2's side
        done = await place(standin, media1, UicCall(business_number=SDES_NUMBER, talk_s=0.05))
        ended = await ended_record(media1, done.runtime.channel.uuid)
        seen = media2.store.get(ended.call_uuid)
        assert seen is not None and seen.node == "media1" and seen.state == "ended"
        code, output = show(db_url, ended.wacid or "")
        assert code == 0 and f"uuid {ended.call_uuid} uic state ended node media1" in output

        # two calls up on media1 (bridged: they outlive the socket), then the node dies whole
        calls = [await place(standin, media1, UicCall(
            business_number=SDES_NUMBER, forwarded_headers={"X-WA-Meta-Cta-Payload": "promo-1"},
            talk_s=None)) for _ in range(2)]
        for call in calls:
            await asyncio.wait_for(call.runtime.answered.wait(), 5)
        uuids = [c.runtime.channel.uuid for c in calls]
        wacids = [(media2.store.get(u) or ended).wacid or "" for u in uuids]
        assert all(w and w != ended.wacid for w in wacids)
        # Meta's terminate for the first call arrives before anyone closes it (the edge's BYE)
        assert events.record(CallEvent(wacids[0], "terminate", "pnid", "USER_INITIATED",
                                       "COMPLETED", 12, 1_800_000_000, 1_800_000_012,
                                       1_800_000_013), 1_800_000_014)
        await media1.stop()  # wa-esl gone: no hangup will ever be written by media1
        await standin.stop()  # and its FreeSWITCH with it
        media1.store.close()
        backdate_heartbeat(db_url, "media1", 60)  # instead of waiting node_lost_after_s

        def lost() -> list[CallRecord]:
            records = [media2.store.get(u) for u in uuids]
            return [r for r in records if r is not None and r.state == "lost"]

        closed = await until(lambda: len(lost()) == 2 and lost(), "media2 to close both calls")
        for record in closed:
            assert record.node == "media1"
            assert (record.diagnosis or "").startswith(
                f"{LOST_CODE}: media node media1 lost (no heartbeat since ")
            assert "cause=502" in (record.diagnosis or "")
        by_uuid = {r.call_uuid: r for r in closed}
        assert by_uuid[uuids[0]].end_at == "2027-01-15T08:00:12+00:00"  # Meta's end_time
        assert by_uuid[uuids[1]].end_at is None
        # the second call's terminate comes after: the webhook gives the lost call its end
        assert events.record(CallEvent(wacids[1], "terminate", "pnid", "USER_INITIATED",
                                       "COMPLETED", 20, 1_800_000_000, 1_800_000_020,
                                       1_800_000_021), 1_800_000_022)
        assert (media2.store.get(uuids[1]) or ended).end_at == "2027-01-15T08:00:20+00:00"

        code, output = show(db_url, wacids[1])
        assert code == 0, output
        assert f"uuid {uuids[1]} uic state lost node media1" in output
        assert "diagnosis: media-node-lost: media node media1 lost" in output
        assert "agrees with our CDR" in output  # Meta's COMPLETED vs our answered call
        result = CliRunner().invoke(app, ["cdr", "list", "--db", db_url, "--node", "media1"],
                                    env={"COLUMNS": "400"})
        assert result.exit_code == 0 and result.output.count("│ media1 │") == 3, result.output
        exported = CliRunner().invoke(app, ["cdr", "export", "--db", db_url, "--format", "json"])
        rows = json.loads(exported.output)
        assert {(r["call_uuid"], r["node"], r["state"]) for r in rows} == {
            (ended.call_uuid, "media1", "ended"), *((u, "media1", "lost") for u in uuids)}
        assert any("closed as lost" in r.getMessage() for r in caplog.records)
        assert media2.metrics.registry.get_sample_value("wasip_esl_calls_closed_lost_total") == 2
        assert SECRET not in output + result.output + caplog.text
    finally:
        events.close()
        await media2.stop()
        media2.store.close()


async def test_wa_esl_without_freeswitch_is_not_a_lost_node(
    standin: FreeSwitchStandin, tmp_path: Path, db_url: str,
) -> None:
    """wa-esl alive, ESL down: the heartbeat goes on (esl_up false), the call stays active for
    the node's own reconnect to mark 'missed'; nobody closes it as lost."""
    (tmp_path / "media1").mkdir()
    media1 = Controller(node_settings(standin, tmp_path / "media1", db_url, "media1"))
    observer = CdrStore(PostgresUrl(db_url), node="media2")
    await media1.start()
    try:
        await asyncio.wait_for(media1.inbound_ready.wait(), 5)
        call = await place(standin, media1, UicCall(
            business_number=SDES_NUMBER, forwarded_headers={"X-WA-Meta-Cta-Payload": "promo-1"},
            talk_s=None))
        await asyncio.wait_for(call.runtime.answered.wait(), 5)
        await standin.stop()
        await until(lambda: not observer.nodes()["media1"].esl_up, "the heartbeat's esl_up false")
        assert observer.close_lost_calls(3) == []
        record = observer.get(call.runtime.channel.uuid)
        assert record is not None and record.state == "active"
        report = build_report(call.runtime.channel.uuid, observer, ())
        assert "not connected to FreeSWITCH" in report.node_notes[record.call_uuid]
    finally:
        observer.close()
        await media1.stop()
        media1.store.close()


def test_a_hangup_written_late_by_a_node_cut_off_from_the_database_still_wins(
        db_url: str) -> None:
    """Closed 'lost' while its node only lost the database: the node's own end replaces it."""
    media1 = CdrStore(PostgresUrl(db_url), node="media1")
    media2 = CdrStore(PostgresUrl(db_url), node="media2")
    try:
        media1.upsert(CallRecord(call_uuid="c", wacid="wacid.C", direction="uic"))
        media1.heartbeat(esl_up=True)
        backdate_heartbeat(db_url, "media1", 60)
        assert media2.close_lost_calls(120) == []  # not yet: 60 s old, the limit is 120 s
        (closed,) = media2.close_lost_calls(30)
        assert closed.state == "lost" and closed.node == "media1"
        assert media2.close_lost_calls(30) == []  # closed once
        media1.upsert(CallRecord(call_uuid="c", state="ended", hangup_cause="NORMAL_CLEARING",
                                 end_at="2026-12-07T10:00:09.000+00:00",
                                 diagnosis="the WhatsApp side hung up (BYE from Meta)"))
        record = media2.get("c")
        assert record is not None and record.state == "ended" and record.node == "media1"
        assert record.diagnosis == "the WhatsApp side hung up (BYE from Meta)"
    finally:
        media1.close()
        media2.close()


async def test_the_webhook_receiver_on_any_node_gives_a_lost_call_meta_s_end(
        db_url: str) -> None:
    """`wa-esl webhook` with the shared database: Meta's signed terminate post is stored there,
    a call already closed 'lost' gets Meta's end, and call show reconciles it from any node."""
    location = PostgresUrl(db_url)
    media1 = CdrStore(location, node="media1")
    media2 = CdrStore(location, node="media2")
    config = WebhookConfig(app_secret="lab-app-secret-0123456789", verify_token="token",
                           database=location, numbers_by_id={"106540352242922": "+15550100001"})
    receiver = WebhookReceiver(config)
    runner = await serve_webhook(receiver, "127.0.0.1", 0)
    try:
        media1.upsert(CallRecord(call_uuid="w", wacid="wacid.W", direction="uic",
                                 answer_at="2027-01-15T08:00:00.100+00:00"))
        media1.heartbeat(esl_up=True)
        backdate_heartbeat(db_url, "media1", 60)
        (closed,) = media2.close_lost_calls(15)
        assert closed.end_at is None  # Meta has not said yet
        body = calls_terminate(wacid="wacid.W", phone_number_id="106540352242922",
                               business_number="+15550100001", user_wa_id="15551234567",
                               direction="USER_INITIATED", start_time=1_800_000_000,
                               duration_s=12)
        async with httpx.AsyncClient(timeout=20) as client:
            response = await client.post(
                f"http://127.0.0.1:{bound_port(runner)}/webhook", content=body,
                headers={"Content-Type": "application/json",
                         HEADER: sign(body, "lab-app-secret-0123456789")})
        assert response.status_code == 200
        record = media2.get("w")
        assert record is not None and record.state == "lost"
        assert record.end_at == "2027-01-15T08:00:12+00:00"
        lines = report_lines(build_report("wacid.W", media2, ()))
        assert "  wacid.W terminate COMPLETED, duration 12 s" in lines
        assert "  agrees with our CDR" in lines
    finally:
        await runner.cleanup()
        media1.close()
        media2.close()


# ---- the password -----------------------------------------------------------------------------


def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = f"postgresql://wasip:{SECRET}@127.0.0.1:{free_port()}/wa"
    with pytest.raises(DatabaseError) as raised:
        open_database(PostgresUrl(url))
    assert SECRET not in str(raised.value) and "wasip:***@127.0.0.1" in str(raised.value)
    result = CliRunner().invoke(app, ["cdr", "list", "--db", url])
    assert result.exit_code == 2 and "wasip:***@" in result.output
    assert SECRET not in result.output


async def test_postgres_stopped_under_a_running_controller_is_logged_without_its_password(
    standin: FreeSwitchStandin, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The database goes away: heartbeats and CDR writes fail (counted, logged once, the URL
    without its password), the controller keeps running and fails fast instead of waiting out
    a connect timeout per write; the write is spooled (tests/esl/test_cdr_spool.py)."""
    caplog.set_level(logging.INFO)
    server = contextlib.ExitStack()
    url = server.enter_context(postgres_cluster()).replace(f"{DB_USER}@",
                                                          f"{DB_USER}:{SECRET}@")
    controller = Controller(node_settings(standin, tmp_path, url, "media1"))
    try:
        await controller.start()
        await asyncio.wait_for(controller.inbound_ready.wait(), 5)
        server.close()  # PostgreSQL stopped and its files removed
        failures = "wasip_esl_heartbeat_failures_total"
        await until(lambda: (controller.metrics.registry.get_sample_value(failures) or 0) >= 2,
                    "two failed heartbeats")
        started = asyncio.get_running_loop().time()
        assert controller.store.upsert(CallRecord(call_uuid="while-down")) == "spooled"
        assert asyncio.get_running_loop().time() - started < 1  # failed fast, no 5 s wait
        (spooling,) = [r.getMessage() for r in caplog.records if "go to the spool" in
                       r.getMessage()]
        assert "unreachable" in spooling and "next try within 5 s" in spooling
        warnings = [r.getMessage() for r in caplog.records if "heartbeat" in r.getMessage()]
        assert len([w for w in warnings if "cannot write" in w]) == 1, warnings  # once
        assert f"postgresql://{DB_USER}:***@127.0.0.1" in warnings[0]
        assert SECRET not in caplog.text
    finally:
        await controller.stop()
        controller.store.close()
        server.close()

"""wa-esl started while its PostgreSQL CDR database is down: up, taking calls, CDRs spooled.

Against a real PostgreSQL server stopped before the controller starts (its database created,
no table in it yet): the controller listens and takes calls, one WARNING at start names the
URL without its password, the calls' CDR writes wait in the node's spool, reads degrade (a
BIC's diagnosis read back from the spool, pre-flight refusing as ``cdr_db_unreachable``,
``call show`` from the edge log alone), and once the server is back the tables are created
first and the spool replayed into them. A database that answers and refuses this
configuration (wrong or no password, no such database) ends ``wa-esl run`` with one clear
message, no traceback.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from esl import database
from esl.bic import BicRequest
from esl.cdr import CallRecord, CdrStore
from esl.cli import app
from esl.database import DatabaseRefused, DatabaseUnreachable, open_database
from esl.meta_errors import diagnose_sip_failure
from lab.esl_standin import BicOutcome, FreeSwitchStandin, MetaBehaviour, UicCall
from lab.processes import free_port
from siteconfig.database_url import PostgresUrl
from tests.esl.controller_fixtures import SDES_NUMBER, place
from tests.esl.test_cdr_postgres import until
from tests.esl.test_cdr_spool import (
    SECRET,
    handler_failures,
    messages,
    running,
    secret_url,
    spool_settings,
)
from tests.provisioning.pg_cluster import DB_USER, PgCluster, restartable_postgres_cluster, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server not installed "
                                "(scripts/install-system-deps installs it)")
USER = "+15550200003"
REDACTED = f"postgresql://{DB_USER}:***@127.0.0.1"


@pytest.fixture
def pg() -> Iterator[PgCluster]:
    with restartable_postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[PgCluster]:
    """A cluster whose role logs in with SECRET only (never stopped by a test)."""
    with restartable_postgres_cluster() as cluster:
        cluster.require_password(SECRET)
        yield cluster


def records_at(cluster: PgCluster, password: str = "") -> list[CallRecord]:
    store = CdrStore(PostgresUrl(cluster.url.replace(f"{DB_USER}@", f"{DB_USER}{password}@")))
    try:
        return store.recent(limit=100)
    finally:
        store.close()


async def test_started_with_postgres_down_it_takes_calls_and_their_cdrs_arrive_after(
    standin: FreeSwitchStandin, meta: MetaBehaviour, tmp_path: Path, pg: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    pg.stop()  # before wa-esl starts: its tables have never been created
    settings = spool_settings(standin, tmp_path, pg)
    settings = settings.model_copy(update={
        "preflight": settings.preflight.model_copy(update={"enabled": True})})
    async with running(settings) as controller:
        (start,) = messages(caplog, "unreachable at start")  # one line, not one per store
        assert REDACTED in start and "Connection refused" in start, start
        assert messages(caplog, "CDR writes go to the spool") == []  # said once, at start
        call = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                        talk_s=0.1))
        await call.finished()
        uic_uuid = call.runtime.channel.uuid
        assert call.runtime.answered.is_set()
        await until(lambda: controller.store.spooled >= 3, "the call's writes spooled")
        # the controller's own reads see what is spooled
        record = controller.store.get(uic_uuid)
        assert record is not None and record.state == "ended" and record.answer_at, record
        # a BIC placed with --force: its diagnosis read back from the spooled hangup
        meta.bic[USER] = BicOutcome(status=486, phrase="Busy Here")
        bic = await controller.originate(BicRequest(SDES_NUMBER, USER), force=True)
        assert not bic.answered and bic.sip_status == 486
        assert bic.diagnosis == diagnose_sip_failure(486, "Busy Here")
        # pre-flight cannot read the permission nor the streak: refused, saying why
        refused = await controller.originate(BicRequest(SDES_NUMBER, USER))
        assert refused.preflight is not None and not refused.answered
        assert refused.preflight.reason == "cdr_db_unreachable", refused.preflight
        assert REDACTED in refused.preflight.detail and "--force" in refused.preflight.detail
        assert handler_failures(caplog) == []
        spooled = controller.store.spooled

        pg.start()
        await until(lambda: controller.store.spooled == 0, "the spool drained", timeout=20)
        found = {r.call_uuid: r for r in records_at(pg)}
        uic = found[uic_uuid]
        assert uic.state == "ended" and uic.invite_at and uic.answer_at and uic.end_at, uic
        assert uic.node == "media1" and uic.hangup_cause == "NORMAL_CLEARING"
        assert found[bic.call_uuid].sip_status == 486
        assert found[refused.call_uuid].hangup_cause == "PREFLIGHT_REFUSED"
        (drained,) = messages(caplog, "drained")
        assert f"{spooled} spooled write(s) replayed" in drained
        text = [r.getMessage() for r in caplog.records]
        created = next(i for i, m in enumerate(text) if "its tables are created" in m)
        assert created < text.index(drained)  # the schema first, then the replay
        # the heartbeat too: the node is known to the others now
        assert "media1" in controller.store.nodes()
        assert handler_failures(caplog) == []
        assert SECRET not in caplog.text


def test_wa_esl_run_with_postgres_unreachable_starts_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    """The process as systemd runs it: up and listening, the URL's password in no output."""
    listen = free_port()
    config = tmp_path / "esl.toml"
    config.write_text(
        f'cdr_db = "postgresql://{DB_USER}:{SECRET}@127.0.0.1:{free_port()}/wa"\n'
        f'node = "media1"\ncdr_spool = "{tmp_path / "spool.sqlite3"}"\n'
        f'[listen]\nhost = "127.0.0.1"\nport = {listen}\n[freeswitch]\nport = 1\n'
        '[preflight]\nenabled = false\n', encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-c", "from esl.cli import main; main()", "run", "-c", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        cwd=Path(__file__).resolve().parents[2], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "wa-esl did not listen within 30 s"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, output
    assert "unreachable at start" in output and REDACTED in output, output
    assert "Traceback" not in output and SECRET not in output


@pytest.mark.parametrize(("password", "database_name", "words"), [
    (":not-the-password", "wa", "password authentication failed"),
    ("", "wa", "no password supplied"),
    (f":{SECRET}", "nowhere", 'database "nowhere" does not exist'),
])
def test_a_configuration_postgres_refuses_ends_wa_esl_run_clearly(
    tmp_path: Path, pg_with_password: PgCluster, password: str, database_name: str,
    words: str,
) -> None:
    url = f"postgresql://{DB_USER}{password}@127.0.0.1:{pg_with_password.port}/{database_name}"
    config = tmp_path / "esl.toml"
    config.write_text(f'cdr_db = "{url}"\nnode = "media1"\n'
                      f'cdr_spool = "{tmp_path / "spool.sqlite3"}"\n', encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    result = CliRunner(env=env).invoke(app, ["run", "--config", str(config)])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1, output
    assert isinstance(result.exception, SystemExit)  # a message, not a traceback
    assert "CDR database ([esl] cdr_db) refused" in output and words in output, output
    assert "cannot work as it is" in output and SECRET not in output


def test_refused_and_unreachable_are_told_apart(
    pg: PgCluster, pg_with_password: PgCluster, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(database, "PG_RETRY_AFTER_S", 0.0)
    wrong = PostgresUrl(f"postgresql://{DB_USER}:nope@127.0.0.1:{pg_with_password.port}/wa")
    for defer in (False, True):  # waiting would not cure it: raised either way
        with pytest.raises(DatabaseRefused):
            open_database(wrong, defer=defer)
    url = PostgresUrl(secret_url(pg))
    pg.stop()
    with pytest.raises(DatabaseUnreachable) as raised:
        open_database(url)
    assert not isinstance(raised.value, DatabaseRefused)
    store = CdrStore(url, node="media1", defer=True)  # no spool: a write raises meanwhile
    try:
        assert store._db.unreachable_at_open is not None
        with pytest.raises(DatabaseUnreachable):
            store.get("x")
        with pytest.raises(DatabaseUnreachable):
            store.upsert(CallRecord(call_uuid="x"))
        pg.start()
        assert store.upsert(CallRecord(call_uuid="x")) == "written"  # tables made first
        assert store._db.unreachable_at_open is None
        assert (store.get("x") or CallRecord("")).call_uuid == "x"
        assert store._db.has_table("esl_node")
    finally:
        store.close()


def test_cli_reads_with_postgres_down_say_so_without_a_traceback(
    tmp_path: Path, pg: PgCluster,
) -> None:
    url = secret_url(pg)
    pg.stop()
    runner = CliRunner()
    # call show: the edge log alone, saying the CDR database could not be asked
    edge_log = tmp_path / "kamailio.log"
    edge_log.write_text("", encoding="utf-8")
    show = runner.invoke(app, ["call", "show", "wacid.X", "--db", url, "--edge-log",
                               str(edge_log)])
    shown = " ".join(show.output.split())
    assert show.exit_code == 3, shown  # not found in what could be read
    assert "CDR database unreachable, the edge log alone" in shown and REDACTED in shown
    no_log = runner.invoke(app, ["call", "show", "wacid.X", "--db", url])
    assert no_log.exit_code == 2 and "CDR database" in no_log.output
    # pre-flight and originate: refused, the reason naming the database
    config = tmp_path / "esl.toml"
    config.write_text(f'cdr_db = "{url}"\nnode = "media1"\n[freeswitch]\nport = 1\n'
                      f'[[numbers]]\nbusiness_number = "{SDES_NUMBER}"\n', encoding="utf-8")
    results = [show, no_log]
    for command in ("preflight", "originate"):
        result = runner.invoke(app, [command, "-c", str(config), "--from", SDES_NUMBER,
                                     "--to", USER])
        output = " ".join(result.output.split())
        assert result.exit_code == 3, output
        assert "refused in pre-flight: cdr_db_unreachable" in output, output
        results.append(result)
    for each in results:
        assert isinstance(each.exception, SystemExit) and SECRET not in each.output



async def test_a_database_that_comes_back_refusing_keeps_the_calls_and_says_so_once(
    standin: FreeSwitchStandin, tmp_path: Path, pg: PgCluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Down at start, back with another password: the node goes on (writes spooled, nothing
    lost), one ERROR however many heartbeats it refuses."""
    caplog.set_level("INFO")
    pg.require_password("not-what-media1-has")
    pg.stop()
    async with running(spool_settings(standin, tmp_path, pg)) as controller:
        pg.start()
        failures = "wasip_esl_heartbeat_failures_total"
        await until(lambda: len(messages(caplog, "password authentication failed")) >= 1,
                    "the refusal met", timeout=15)
        seen = controller.metrics.registry.get_sample_value(failures) or 0
        await until(lambda: (controller.metrics.registry.get_sample_value(failures) or 0)
                    >= seen + 7, "heartbeats over two retry delays", timeout=20)
        refusals = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(refusals) == 1, [r.getMessage() for r in refusals]
        assert "refused" in refusals[0].getMessage() and REDACTED in refusals[0].getMessage()
        call = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                        talk_s=0.1))
        await call.finished()
        await until(lambda: controller.store.spooled >= 3, "the call's writes spooled")
        assert handler_failures(caplog) == []
        assert SECRET not in caplog.text

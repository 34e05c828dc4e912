"""The PostgreSQL credential store against a real PostgreSQL server, and a real Kamailio
(db_postgres) loading what `provision sync` wrote there."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lab.certs import make_test_ca
from lab.graph_standin import GraphStandin
from lab.processes import ManagedProcess, free_port
from provisioning.credential_store import StoreError, WriteOutcome, credential_for
from provisioning.in_dialog_keys import ensure_key_file
from provisioning.kamailio_binary import kamailio_binary
from provisioning.kamailio_rpc import RpcError, call
from provisioning.pg_store import open_postgres_store, redact_url
from provisioning.render import RenderOptions, render_kamailio
from siteconfig.model import load_config
from tests.provisioning.conftest import APP_ID, NUMBERS, SIP_DOMAIN, provision, site_toml
from tests.provisioning.pg_cluster import postgres_cluster, server_bin

pytestmark = pytest.mark.skipif(server_bin() is None, reason="PostgreSQL server not installed "
                                "(scripts/install-system-deps installs it)")
ONE, PNID1 = NUMBERS[0]


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_cluster() as url:
        yield url


@pytest.fixture
def clean_pg(pg_url: str) -> str:
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DROP TABLE IF EXISTS wa_creds, wa_credential_meta, wa_credential_history")
    return pg_url


def test_store_writes_history_and_idempotence(clean_pg: str) -> None:
    store = open_postgres_store(clean_pg)
    try:
        first = credential_for(ONE, "first-password", SIP_DOMAIN)
        assert store.put(first, SIP_DOMAIN) is WriteOutcome.CREATED
        assert store.put(first, SIP_DOMAIN) is WriteOutcome.UNCHANGED
        second = credential_for(ONE, "second-password", SIP_DOMAIN)
        assert store.put_many([second], SIP_DOMAIN, "rotation") == {ONE: WriteOutcome.UPDATED}
        assert store.get(ONE) == second
        assert [reason for _, reason in store.history(ONE)] == ["rotation"]
        assert store.remove(ONE) and store.get(ONE) is None
    finally:
        store.close()
    with psycopg.connect(clean_pg) as db:
        columns = [row[0] for row in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'wa_creds'"
            " ORDER BY ordinal_position")]
    assert columns == ["id", "key_name", "key_type", "value_type", "key_value", "expires"]  # htable's


def test_unreachable_database_is_a_store_error_without_password() -> None:
    url = f"postgresql://wasip:hunter2@127.0.0.1:{free_port()}/wa"
    with pytest.raises(StoreError) as raised:
        open_postgres_store(url, connect_timeout=2)
    assert "hunter2" not in str(raised.value) and "wasip:***@" in str(raised.value)
    assert redact_url(url) == url.replace("hunter2", "***")


@pytest.mark.parametrize("url", [
    "postgresql://wasip:hunt%ZZer2@127.0.0.1:{port}/wa",       # libpq quotes the bad escape back
    "postgresql://wasip@127.0.0.1:{port}/wa?password=hunter2",  # password as a query parameter
    "postgresql://wasip:hun@ter2x@127.0.0.1:{port}/wa",         # unencoded '@': libpq quotes a piece
])
def test_store_errors_hide_every_spelling_of_the_password(url: str) -> None:
    url = url.format(port=free_port())
    with pytest.raises(StoreError) as raised:
        open_postgres_store(url, connect_timeout=2)
    for fragment in ("hunter2", "hunt%ZZer2", "ter2x"):
        assert fragment not in str(raised.value)
    assert "***" in redact_url(url)


def test_sync_and_status_with_a_postgres_store(clean_pg: str, standin: GraphStandin, tmp_path: Path) -> None:
    passwords = [standin.state.add_server(pnid, APP_ID, SIP_DOMAIN) for _, pnid in NUMBERS]
    config = site_toml(tmp_path, standin.base_url, graph=f'app_id = "{APP_ID}"', store=clean_pg)
    run = provision("sync", "-c", str(config), "--json")
    assert run.exit_code == 0, run.stderr
    assert run.json()["summary"]["updated"] == 3 and "wasip@127.0.0.1" in run.json()["store"]
    store = open_postgres_store(clean_pg)
    try:
        for (number, _), password in zip(NUMBERS, passwords, strict=True):
            assert store.get(number) == credential_for(number, password, SIP_DOMAIN)
    finally:
        store.close()
    status = provision("status", "-c", str(config), "--json")
    assert status.exit_code == 0 and {r["store"] for r in status.json()["results"]} == {"matches"}


def test_kamailio_loads_credentials_from_postgres(clean_pg: str, standin: GraphStandin,
                                                  tmp_path: Path) -> None:
    password = standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN)
    path = site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]], graph=f'app_id = "{APP_ID}"',
                     store=clean_pg)
    cfg = load_config(path)
    leaf = make_test_ca(tmp_path / "ca").issue("edge", [SIP_DOMAIN])
    cfg = cfg.model_copy(update={
        "tls": cfg.tls.model_copy(update={"certificate": leaf.certificate, "private_key": leaf.private_key}),
        "listen": cfg.listen.model_copy(update={"tls": f"127.0.0.1:{free_port()}",
                                                "internal": f"127.0.0.1:{free_port()}"}),
        "edge": cfg.edge.model_copy(update={"in_dialog_key_file": tmp_path / "keys.json"})})
    ensure_key_file(cfg.edge.in_dialog_key_file)
    assert provision("sync", "-c", str(path)).exit_code == 0  # tables exist before Kamailio starts
    rendered = render_kamailio(cfg, tmp_path / "out", RenderOptions(workers=1, probe_interval=0))
    text = (rendered / "kamailio.cfg").read_text()
    assert 'loadmodule "db_postgres.so"' in text and "db_sqlite" not in text
    assert f'"postgres://{clean_pg.split("://", 1)[1]}"' in text
    (tmp_path / "run").mkdir()
    kamailio = ManagedProcess("kamailio", [
        kamailio_binary(), "-f", str(rendered / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
        "-Y", str(tmp_path / "run"), "-P", str(tmp_path / "run" / "kamailio.pid")], tmp_path / "kamailio.log")
    kamailio.start()
    rpc = rendered / "kamailio_rpc.sock"
    try:
        expected = credential_for(ONE, password, SIP_DOMAIN)
        assert _ha1_in_kamailio(rpc, kamailio) == expected.ha1
        new = standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN)  # a new password on Meta
        run = provision("sync", "-c", str(path), "--rpc-socket", str(rpc), "--json")
        assert run.json()["reload"] == [{"rpc_socket": str(rpc), "outcome": "reloaded"}]
        assert _ha1_in_kamailio(rpc, kamailio) == credential_for(ONE, new, SIP_DOMAIN).ha1
    finally:
        kamailio.stop()


def _ha1_in_kamailio(rpc: Path, kamailio: ManagedProcess) -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert kamailio.running(), kamailio.log_tail()
        try:
            answer = call(rpc, "htable.get", "wa_creds", f"{ONE[1:]}:ha1", timeout=1)
            return str(answer["item"]["value"])
        except RpcError:
            time.sleep(0.1)
    raise AssertionError("Kamailio did not answer htable.get:\n" + kamailio.log_tail())

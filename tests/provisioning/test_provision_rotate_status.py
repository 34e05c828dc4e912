"""`provision rotate-password` and `provision status` against the stand-in."""

from __future__ import annotations

from pathlib import Path

from lab.graph_standin import FaultRule, GraphStandin
from provisioning.credential_store import credential_for, open_store
from tests.provisioning.conftest import APP_ID, NUMBERS, SIP_DOMAIN, TOKEN, provision, site_toml

ONE, PNID1 = NUMBERS[0]
STORE = Path("store") / "credentials.sqlite"


def config(standin: GraphStandin, tmp_path: Path, graph: str = "") -> Path:
    return site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]],
                     graph=f'app_id = "{APP_ID}"\n{graph}')


def test_rotation_replaces_the_password_and_keeps_the_old_one_in_history(standin: GraphStandin,
                                                                          tmp_path: Path) -> None:
    old = standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN, params={"tgrp": "wacall"})
    standin.state.numbers[PNID1].srtp = "SDES"
    run = provision("rotate-password", ONE, "-c", str(config(standin, tmp_path)), "--yes", "--json")
    assert run.exit_code == 0, run.stderr
    new = standin.state.password(PNID1, APP_ID)
    assert new and new != old
    assert new not in run.stdout and old not in run.stdout and TOKEN not in run.stdout
    assert run.json()["srtp_restored"] is True
    number = standin.state.numbers[PNID1]
    assert number.sip_status == "ENABLED" and number.srtp == "SDES"
    assert number.servers[APP_ID].request_uri_user_params == {"tgrp": "wacall"}
    store = open_store(tmp_path / STORE)
    try:
        assert store.get(ONE) == credential_for(ONE, new, SIP_DOMAIN)
        assert [reason for _, reason in store.history(ONE)] == ["rotation"]
    finally:
        store.close()


def test_show_secrets_prints_the_new_password(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN)
    run = provision("rotate-password", ONE, "-c", str(config(standin, tmp_path)), "--yes", "--json",
                    "--show-secrets")
    assert run.json()["sip_user_password"] == standin.state.password(PNID1, APP_ID)


def test_rotation_needs_confirmation(standin: GraphStandin, tmp_path: Path) -> None:
    old = standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN)
    run = provision("rotate-password", ONE, "-c", str(config(standin, tmp_path)))
    assert run.exit_code == 2 and "--yes" in run.stderr
    assert standin.state.password(PNID1, APP_ID) == old


def test_rotation_stopped_after_disable_says_what_to_do(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.add_server(PNID1, APP_ID, SIP_DOMAIN)
    standin.faults.add(FaultRule("status", match="/settings", method="POST", status=500, times=10, after=1))
    run = provision("rotate-password", ONE, "-c", str(config(standin, tmp_path, "max_attempts = 2")), "--yes")
    assert run.exit_code == 1
    assert "rotation stopped (disabled)" in run.stderr and "provision apply" in run.stderr
    assert standin.state.numbers[PNID1].sip_status == "DISABLED"


def test_rotation_without_a_server_does_nothing(standin: GraphStandin, tmp_path: Path) -> None:
    run = provision("rotate-password", ONE, "-c", str(config(standin, tmp_path)), "--yes")
    assert run.exit_code == 1 and "nothing to rotate" in run.stderr
    assert standin.stats.by_route.get("POST settings", 0) == 0


def test_status_reports_drift_without_secrets(standin: GraphStandin, tmp_path: Path) -> None:
    password = standin.state.add_server(PNID1, APP_ID, "old.example.com")
    path = config(standin, tmp_path)
    run = provision("status", "-c", str(path), "--json")
    assert run.exit_code == 3
    (result,) = run.json()["results"]
    assert result["store"] == "missing" and not result["in_sync"]
    assert result["drift"] == [{"field": "sip.server.hostname", "meta": "old.example.com",
                                "wanted": SIP_DOMAIN}]
    assert password not in run.stdout
    assert provision("apply", "-c", str(path)).exit_code == 0
    assert provision("sync", "-c", str(path)).exit_code == 0
    clean = provision("status", "-c", str(path), "--json")
    assert clean.exit_code == 0 and clean.json()["results"][0]["store"] == "matches"
    standin.state.numbers[PNID1].servers[APP_ID].password = "changed-on-meta"
    stale = provision("status", "-c", str(path), "--json")
    assert stale.exit_code == 3 and stale.json()["results"][0]["store"] == "stale"

"""`provision sync` against the Graph stand-in: outcomes, idempotence, faults, interruptions."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from lab.graph_standin import FaultRule, GraphStandin
from lab.graph_standin.seed import seed_numbers
from provisioning.credential_store import credential_for, open_store
from tests.provisioning.conftest import APP_ID, NUMBERS, OTHER_APP_ID, SIP_DOMAIN, TOKEN, provision, site_toml

STORE = Path("store") / "credentials.sqlite"


def configured(standin: GraphStandin, tmp_path: Path, graph: str = f'app_id = "{APP_ID}"') -> Path:
    return site_toml(tmp_path, standin.base_url, graph=graph)


def stored_matches(tmp_path: Path, business_number: str, password: str | None) -> bool:
    store = open_store(tmp_path / STORE)
    try:
        expected = credential_for(business_number, password or "", SIP_DOMAIN)
        return store.get(business_number) == expected
    finally:
        store.close()


def test_outcomes_per_number_and_json_without_secrets(standin: GraphStandin, tmp_path: Path) -> None:
    (one, pnid1), (_, pnid2), (_, pnid3) = NUMBERS
    password = standin.state.add_server(pnid1, APP_ID, SIP_DOMAIN)
    standin.state.add_server(pnid2, APP_ID, SIP_DOMAIN, enable=False)
    standin.state.add_server(pnid3, OTHER_APP_ID, "other.example.net")
    run = provision("sync", "-c", str(configured(standin, tmp_path)), "--json")
    assert run.exit_code == 3, run.stderr  # attention: a disabled number, one without our server
    report = run.json()
    assert [r["outcome"] for r in report["results"]] == ["updated", "sip_disabled", "no_server"]
    assert report["summary"]["updated"] == 1
    assert password not in run.stdout and TOKEN not in run.stdout
    assert stored_matches(tmp_path, one, password)
    assert stat.S_IMODE((tmp_path / STORE).stat().st_mode) == 0o600


def test_second_run_changes_nothing(standin: GraphStandin, tmp_path: Path) -> None:
    for _, pnid in NUMBERS:
        standin.state.add_server(pnid, APP_ID, SIP_DOMAIN)
    config = configured(standin, tmp_path)
    assert provision("sync", "-c", str(config)).exit_code == 0
    again = provision("sync", "-c", str(config), "--json")
    assert again.exit_code == 0
    assert again.json()["summary"]["unchanged"] == 3 and again.json()["reload"] == []


def test_app_id_is_taken_from_the_token_when_not_configured(standin: GraphStandin, tmp_path: Path) -> None:
    for _, pnid in NUMBERS:
        standin.state.add_server(pnid, APP_ID, SIP_DOMAIN)
    run = provision("sync", "-c", str(configured(standin, tmp_path, graph="")), "--json")
    assert run.exit_code == 0 and run.json()["summary"]["updated"] == 3


def test_transient_faults_mid_sync_are_retried(standin: GraphStandin, tmp_path: Path) -> None:
    passwords = [standin.state.add_server(pnid, APP_ID, SIP_DOMAIN) for _, pnid in NUMBERS]
    standin.faults.add(FaultRule("status", match=NUMBERS[1][1], status=503))
    standin.faults.add(FaultRule("reset", match=NUMBERS[2][1]))
    standin.faults.add(FaultRule("rate_limit", match=NUMBERS[0][1], retry_after=0.2))
    run = provision("sync", "-c", str(configured(standin, tmp_path)), "--json")
    assert run.exit_code == 0, run.stdout
    assert run.json()["graph"]["retries"] == 3
    assert all(stored_matches(tmp_path, n, p) for (n, _), p in zip(NUMBERS, passwords, strict=True))


def test_a_failing_number_does_not_block_the_others(standin: GraphStandin, tmp_path: Path) -> None:
    passwords = [standin.state.add_server(pnid, APP_ID, SIP_DOMAIN) for _, pnid in NUMBERS]
    standin.faults.add(FaultRule("status", match=NUMBERS[1][1], status=500, times=50))
    config = configured(standin, tmp_path, graph=f'app_id = "{APP_ID}"\nmax_attempts = 2')
    run = provision("sync", "-c", str(config), "--json")
    assert run.exit_code == 1
    results = run.json()["results"]
    assert [r["outcome"] for r in results] == ["updated", "error", "updated"]
    assert results[1]["graph_error"]["fbtrace_id"]
    assert stored_matches(tmp_path, NUMBERS[0][0], passwords[0])
    assert stored_matches(tmp_path, NUMBERS[2][0], passwords[2])
    assert not stored_matches(tmp_path, NUMBERS[1][0], passwords[1])


def test_permission_error_is_explained(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.numbers[NUMBERS[0][1]].allowed_apps = {OTHER_APP_ID}
    run = provision("sync", "-c", str(configured(standin, tmp_path)), "-n", NUMBERS[0][0])
    assert run.exit_code == 1
    assert "lacks permission" in run.stdout and "whatsapp_business_management" in run.stdout


def test_missing_token_and_unknown_number_are_usage_errors(standin: GraphStandin, tmp_path: Path) -> None:
    config = configured(standin, tmp_path)
    no_token = provision("sync", "-c", str(config), token=None)
    assert no_token.exit_code == 2 and "WA_GRAPH_TOKEN" in no_token.stderr
    unknown = provision("sync", "-c", str(config), "-n", "+15559999999")
    assert unknown.exit_code == 2 and "+15559999999" in unknown.stderr
    assert standin.stats.requests == 0
    assert not (tmp_path / STORE).exists()


def test_token_from_a_file(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.add_server(NUMBERS[0][1], APP_ID, SIP_DOMAIN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    run = provision("sync", "-c", str(configured(standin, tmp_path)), "-n", NUMBERS[0][0],
                    "--token-file", str(token_file), token=None)
    assert run.exit_code == 0, run.stderr
    assert "readable by others" not in run.stderr


def test_token_is_not_accepted_on_the_command_line(standin: GraphStandin, tmp_path: Path) -> None:
    run = provision("sync", "-c", str(configured(standin, tmp_path)), "--token", TOKEN)
    assert run.exit_code == 2 and standin.stats.requests == 0


# ---- interruptions: a real `provision` process, killed mid-run ---------------------------------


def _slow_many(standin: GraphStandin, tmp_path: Path, count: int) -> tuple[Path, dict[str, str]]:
    """`count` numbers whose settings answers each take 0.25 s; the config lists them all."""
    seeded = seed_numbers(standin.state, count, APP_ID, SIP_DOMAIN)
    standin.faults.add(FaultRule("timeout", match="/settings", delay_s=0.25, times=count))
    passwords = {b: standin.state.password(p, APP_ID) or "" for b, p in seeded}
    return site_toml(tmp_path, standin.base_url, numbers=seeded, graph=f'app_id = "{APP_ID}"'), passwords


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "provisioning.cli", "sync", "-c", str(config), "--batch-size", "4"],
        env={**os.environ, "WA_GRAPH_TOKEN": TOKEN}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _wait_for_rows(path: Path, minimum: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            with sqlite3.connect(path, timeout=5) as db:
                try:
                    rows = int(db.execute("SELECT count(*) FROM wa_creds").fetchone()[0])
                except sqlite3.OperationalError:
                    rows = 0
            if rows >= minimum:
                return rows
        time.sleep(0.05)
    raise AssertionError(f"no {minimum} rows in {path} within {timeout} s")


def _consistent(tmp_path: Path, passwords: dict[str, str]) -> int:
    """Every stored number has its complete, current pair; returns how many are stored."""
    with sqlite3.connect(tmp_path / STORE) as db:
        rows = dict(db.execute("SELECT key_name, key_value FROM wa_creds").fetchall())
    stored = 0
    for business_number, password in passwords.items():
        digits = business_number[1:]
        if f"{digits}:ha1" not in rows and f"{digits}:ha1_meta" not in rows:
            continue
        expected = credential_for(business_number, password, SIP_DOMAIN)
        assert rows.get(f"{digits}:ha1") == expected.ha1
        assert rows.get(f"{digits}:ha1_meta") == expected.ha1_meta
        stored += 1
    return stored


def test_kill_mid_sync_leaves_a_consistent_store_and_a_rerun_finishes(standin: GraphStandin,
                                                                      tmp_path: Path) -> None:
    config, passwords = _slow_many(standin, tmp_path, 80)
    process = _start(config)
    try:
        _wait_for_rows(tmp_path / STORE, 8)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        process.kill()
        process.communicate(timeout=10)
    stored = _consistent(tmp_path, passwords)
    assert 4 <= stored < 80
    rerun = provision("sync", "-c", str(config), "--json")
    assert rerun.exit_code == 0
    summary = rerun.json()["summary"]
    assert summary["unchanged"] == stored and summary["updated"] == 80 - stored
    assert _consistent(tmp_path, passwords) == 80


def test_ctrl_c_mid_sync_exits_130_with_fetched_credentials_written(standin: GraphStandin,
                                                                    tmp_path: Path) -> None:
    config, passwords = _slow_many(standin, tmp_path, 80)
    process = _start(config)
    try:
        _wait_for_rows(tmp_path / STORE, 8)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert 4 <= _consistent(tmp_path, passwords) < 80

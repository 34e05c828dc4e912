"""`provision permission request` records each request it sent in the CDR database ([esl]
cdr_db), where wa-esl's metrics count them (esl/permission_requests.py); without the database's
folder on this host it says so and the request still counts as sent."""

from __future__ import annotations

from pathlib import Path

from esl.permission_requests import PermissionRequestLog, permission_counts
from lab.graph_standin import GraphStandin
from tests.provisioning.conftest import NUMBERS, provision, site_toml

BUSINESS, PNID = NUMBERS[0]
USER = "+15551230000"


def test_provision_records_what_it_sent(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    with config.open("a", encoding="utf-8") as handle:
        handle.write('\n[esl]\ncdr_db = "var/cdr.sqlite3"\n')
    standin.permissions.reply_answer = "none"
    (tmp_path / "var").mkdir()
    run = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 0, run.stderr
    assert "not counted" not in run.stderr
    assert permission_counts(tmp_path / "var" / "cdr.sqlite3") == (1, 0)
    log = PermissionRequestLog(tmp_path / "var" / "cdr.sqlite3")
    try:
        assert log.last_sent(BUSINESS, USER[1:]) is not None
    finally:
        log.close()


def test_no_database_folder_is_a_note_and_the_request_still_counts_as_sent(
        standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    with config.open("a", encoding="utf-8") as handle:
        handle.write('\n[esl]\ncdr_db = "absent/cdr.sqlite3"\n')
    run = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 0 and run.stdout.startswith("sent:")
    assert "not counted in wa-esl's permission request metric: no folder" in run.stderr
    assert not (tmp_path / "absent").exists()

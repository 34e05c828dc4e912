"""`wa-esl originate` refused in pre-flight: exit 3, one line with the reason, a CDR, nothing
sent to FreeSWITCH (none is listening); `call show` names the permission."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.cdr import CdrStore
from esl.cli import app

BUSINESS = "+15550100001"
USER = "+15551230000"


def config(tmp_path: Path) -> Path:
    path = tmp_path / "esl.toml"
    path.write_text(f'cdr_db = "{tmp_path / "cdr.sqlite3"}"\n[freeswitch]\nport = 1\n'
                    f'[[numbers]]\nbusiness_number = "{BUSINESS}"\n', encoding="utf-8")
    return path


def test_refused_in_preflight_exits_3_with_a_cdr(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["originate", "-c", str(config(tmp_path)), "--from",
                                      BUSINESS, "--to", USER])
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("refused in pre-flight: no_permission:")
    assert "--force skips the check" in result.stdout and "Traceback" not in result.output
    store = CdrStore(tmp_path / "cdr.sqlite3")
    try:
        (record,) = store.recent()
    finally:
        store.close()
    assert record.hangup_cause == "PREFLIGHT_REFUSED" and record.state == "ended"
    assert record.diagnosis and record.diagnosis.startswith("pre-flight refused, no_permission")
    show = CliRunner().invoke(app, ["call", "show", record.call_uuid, "--db",
                                    str(tmp_path / "cdr.sqlite3")])
    assert "diagnosis: pre-flight refused, no_permission" in show.stdout


def test_force_skips_preflight(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["originate", "-c", str(config(tmp_path)), "--from",
                                      BUSINESS, "--to", USER, "--force"])
    assert result.exit_code == 1 and "FreeSWITCH" in result.output  # it went on to connect


def test_a_stored_permission_passes_preflight(tmp_path: Path) -> None:
    path = config(tmp_path)
    permissions = CallPermissionStore(tmp_path / "cdr.sqlite3")
    permissions.record(CallPermission(BUSINESS, USER[1:], "granted", None, True, "user_action",
                                      "webhook", 1_700_000_000))
    permissions.close()
    result = CliRunner().invoke(app, ["originate", "-c", str(path), "--from", BUSINESS,
                                      "--to", USER])
    # past pre-flight (limits not checked: no Graph), then FreeSWITCH is not there
    assert result.exit_code == 1 and "FreeSWITCH" in result.output
    assert "limits not checked" in result.output


def test_bad_user_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["originate", "-c", str(config(tmp_path)), "--from",
                                      BUSINESS, "--to", "a b"])
    assert result.exit_code == 2 and "user must be" in result.output

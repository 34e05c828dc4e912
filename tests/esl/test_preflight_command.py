"""`wa-esl preflight --from --to`: the check `wa-esl originate` runs first, alone. Refused: exit
3 with the reason; passed: exit 0 naming the permission the call would go out under. Nothing is
placed and no CDR is written either way (none is a call)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.cdr import CdrStore
from esl.cli import app
from tests.esl.test_preflight_cli import BUSINESS, USER, config


def no_cdrs(tmp_path: Path) -> bool:
    store = CdrStore(tmp_path / "cdr.sqlite3")
    try:
        return store.recent() == []
    finally:
        store.close()


def test_refused_is_exit_3_with_the_reason_and_no_cdr(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["preflight", "-c", str(config(tmp_path)), "--from",
                                      BUSINESS, "--to", USER])
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("refused in pre-flight: no_permission: ")
    assert "provision permission request" in result.stdout
    assert no_cdrs(tmp_path)


def test_passed_names_the_permission_it_would_use(tmp_path: Path) -> None:
    path = config(tmp_path)
    permissions = CallPermissionStore(tmp_path / "cdr.sqlite3")
    permissions.record(CallPermission(BUSINESS, USER[1:], "granted", None, True, "user_action",
                                      "webhook", 1_700_000_000))
    permissions.close()
    result = CliRunner().invoke(app, ["preflight", "-c", str(path), "--from", BUSINESS,
                                      "--to", USER])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("pre-flight passed: stored permission; permission: granted "
                                    "permanent from Meta's call_permission_reply webhook")
    assert "limits not checked" in result.stderr  # no Graph configured: said, not hidden
    assert no_cdrs(tmp_path)


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    path = config(tmp_path)
    for args, words in ((["--from", BUSINESS, "--to", "a b"], "user must be"),
                        (["--from", "+15559999999", "--to", USER], "is not configured")):
        result = CliRunner().invoke(app, ["preflight", "-c", str(path), *args])
        assert result.exit_code == 2 and words in result.output, result.output
        assert "Traceback" not in result.output

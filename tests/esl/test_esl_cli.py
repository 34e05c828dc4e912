"""The wa-esl command line: CDR listing/export, originate, clear errors without tracebacks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from esl.cdr import CallRecord, CdrStore
from esl.cli import app

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    store.upsert(
        CallRecord(
            call_uuid="u1",
            direction="uic",
            wacid="wacid.1",
            business_number="+15550100001",
            invite_at="2026-11-25T06:00:00.000+00:00",
            meta_duration_s=7,
            fs_duration_s=7.2,
            hangup_cause="NORMAL_CLEARING",
            diagnosis="the WhatsApp side hung up (BYE from Meta)",
            cta_payload='say "hi", twice',
            state="ended",
        )
    )
    store.upsert(
        CallRecord(
            call_uuid="u2",
            direction="bic",
            invite_at="2026-11-25T07:00:00.000+00:00",
            sip_status=403,
            state="ended",
        )
    )
    store.close()
    return path


def test_export_csv(db: Path) -> None:
    result = runner.invoke(app, ["cdr", "export", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["call_uuid"] for r in rows] == ["u2", "u1"]
    assert rows[1]["cta_payload"] == 'say "hi", twice'
    assert rows[1]["meta_duration_s"] == "7" and rows[0]["sip_status"] == "403"


def test_export_json_to_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdr.json"
    result = runner.invoke(app, ["cdr", "export", "--db", str(db), "--format", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {d["call_uuid"] for d in data} == {"u1", "u2"}
    assert next(d for d in data if d["call_uuid"] == "u1")["fs_duration_s"] == 7.2


def test_list_filters_by_direction(db: Path) -> None:
    result = runner.invoke(
        app, ["cdr", "list", "--db", str(db), "--direction", "uic"], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 0, result.output
    assert "wacid.1" in result.output and "u2" not in result.output


def test_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["cdr", "list", "--db", str(tmp_path / "none.sqlite3")])
    assert result.exit_code == 2
    assert "no CDR database" in result.output
    assert "Traceback" not in result.output


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "esl.toml"
    config.write_text('[esl.media]\ncodecs = ["PCMU"]\n')
    result = runner.invoke(app, ["run", "--config", str(config)])
    assert result.exit_code == 2
    assert "OPUS must come first" in result.output


def test_originate_refuses_bad_number_before_connecting(tmp_path: Path) -> None:
    config = tmp_path / "esl.toml"
    config.write_text("[esl.freeswitch]\nport = 1\n")
    result = runner.invoke(app, ["originate", "-c", str(config), "--from", "123", "--to", "+15550200002"])
    assert result.exit_code == 2
    assert "+E164" in result.output


def test_export_to_unwritable_path_is_a_clear_error_and_leaves_no_file(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing-dir" / "cdr.csv"
    result = runner.invoke(app, ["cdr", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 1
    assert "cannot write" in result.output and "Traceback" not in result.output
    assert not out.parent.exists()


def test_export_replaces_the_file_whole(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "cdr.csv"
    out.write_text("old contents that are longer than nothing\n" * 100)
    result = runner.invoke(app, ["cdr", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().startswith("call_uuid,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    path.write_text("not a database\n" * 100)
    result = runner.invoke(app, ["cdr", "list", "--db", str(path)])
    assert result.exit_code == 2
    assert "not a database" in result.output and "Traceback" not in result.output


def test_brackets_in_messages_are_printed_not_taken_as_markup(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite3"
    store = CdrStore(db)
    store.upsert(CallRecord(call_uuid="u3", direction="bic", diagnosis="add it to [esl.numbers]",
                            state="ended"))
    store.close()
    result = runner.invoke(app, ["cdr", "list", "--db", str(db)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    assert "[esl.numbers]" in result.output

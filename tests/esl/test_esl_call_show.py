"""`wa-esl call show`: one call from the edge's call lines, the CDR and the media figures."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from esl.cdr import CallRecord, CdrStore
from esl.cli import app
from esl.edge_log import parse_line
from kemi.call_log import call_line

UUID = "5d0c7a8e-1b7c-4f0e-9d8a-2f3b4c5d6e7f"
WACID = "wacid.HBgLMTU1NTAxMDAwMDEVAgASGCA"
CALL_ID = "a84b4c76e66710@meta.example"


def kamailio_line(text: str) -> str:
    """As Kamailio writes a KSR.info line to syslog (prefix ignored by the reader)."""
    return f"Nov 29 10:00:00 edge kamailio[4242]: INFO: {{mt:1 id:{CALL_ID}}} <script>: {text}"


def write_log(path: Path) -> None:
    path.write_text("".join([
        kamailio_line("wa-edge: something else entirely\n"),
        kamailio_line(call_line("invite", "uic", CALL_ID, wacid=WACID,
                                business_number="+15550100001", source="157.240.1.1",
                                auth="digest", set=1, context="whatsapp")),
        kamailio_line(call_line("invite", "uic", "other@meta", wacid="wacid.other")),
        kamailio_line(call_line("final", "uic", CALL_ID, status=200, outcome="answered")),
    ]), encoding="utf-8")


def write_cdr(path: Path) -> None:
    store = CdrStore(path)
    store.upsert(CallRecord(
        call_uuid=UUID, direction="uic", wacid=WACID, business_number="+15550100001",
        invite_at="2026-11-29T10:00:00.010+00:00", answer_at="2026-11-29T10:00:00.030+00:00",
        end_at="2026-11-29T10:00:07.000+00:00", hangup_cause="NORMAL_CLEARING",
        diagnosis="the WhatsApp side hung up (BYE from Meta)", first_media_ms=21.0,
        media_timeout=False, fs_duration_s=6.9, meta_duration_s=7, state="ended",
        sip_call_id=CALL_ID))
    store.close()


def show(tmp_path: Path, *args: str) -> tuple[int, str]:
    log, db = tmp_path / "kamailio.log", tmp_path / "cdr.sqlite3"
    if not log.exists():
        write_log(log)
        write_cdr(db)
    result = CliRunner().invoke(app, ["call", "show", *args, "--db", str(db),
                                      "--edge-log", str(log)])
    return result.exit_code, result.output


def test_a_wacid_finds_edge_lines_cdr_and_media(tmp_path: Path) -> None:
    code, output = show(tmp_path, WACID)
    assert code == 0, output
    assert "uic invite: call_id=a84b4c76e66710@meta.example wacid=" + WACID in output
    assert "source=157.240.1.1 auth=digest" in output
    assert "uic final: call_id=a84b4c76e66710@meta.example status=200 outcome=answered" in output
    assert f"uuid {UUID} uic state ended" in output
    assert "hangup NORMAL_CLEARING" in output
    assert "first media sent 21 ms after answer; media timeout no" in output
    assert "wacid.other" not in output


def test_call_id_and_uuid_find_the_same_call_as_json(tmp_path: Path) -> None:
    answers = []
    for ident in (CALL_ID, UUID, WACID):
        code, output = show(tmp_path, ident, "--json")
        assert code == 0, output
        document = json.loads(output)
        assert document["id"] == ident
        answers.append((document["edge"], document["cdr"], document["media"]))
    assert answers[0] == answers[1] == answers[2]
    edge, cdr, media = answers[0]
    assert [e["event"] for e in edge] == ["invite", "final"]
    assert cdr[0]["call_uuid"] == UUID and cdr[0]["sip_call_id"] == CALL_ID
    assert media == [{"first_media_ms": 21.0, "media_timeout": False, "fs_duration_s": 6.9,
                      "meta_duration_s": 7}]


def test_unknown_id_gets_a_clear_message_and_exit_3(tmp_path: Path) -> None:
    code, output = show(tmp_path, "no-such-call")
    assert code == 3
    assert "no call 'no-such-call' in CDR" in output and "kamailio.log" in output
    assert "Traceback" not in output


def test_missing_edge_log_is_named(tmp_path: Path) -> None:
    write_cdr(tmp_path / "cdr.sqlite3")
    result = CliRunner().invoke(app, ["call", "show", WACID, "--db", str(tmp_path / "cdr.sqlite3"),
                                      "--edge-log", str(tmp_path / "nope.log")])
    assert result.exit_code == 2
    assert "no edge log at" in result.output and "nope.log" in result.output


def test_network_text_cannot_forge_keys_or_break_the_line() -> None:
    forged = 'x" outcome=answered status=200\r\nwa-edge: call event=final'
    line = call_line("invite", "uic", "c1@meta", wacid=forged)
    assert line.count("\n") == 1 and "\r" not in line
    event = parse_line(line)
    assert event is not None
    assert event.get("wacid") == forged[:160]
    assert event.get("outcome") is None and event.get("status") is None


def test_an_older_cdr_database_gains_the_call_id_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE cdr (call_uuid TEXT PRIMARY KEY, direction TEXT, wacid TEXT, "
               "business_number TEXT, user_number TEXT, tgrp TEXT, trunk_context TEXT, "
               "request_uri_params TEXT, cta_payload TEXT, deeplink_payload TEXT, route TEXT, "
               "srtp_mode TEXT, invite_at TEXT, answer_at TEXT, end_at TEXT, "
               "meta_duration_s INTEGER, fs_duration_s REAL, hangup_cause TEXT, "
               "sip_status INTEGER, diagnosis TEXT, media_timeout INTEGER, first_media_ms REAL, "
               "state TEXT)")
    db.execute("INSERT INTO cdr (call_uuid, wacid) VALUES ('u1', 'w1')")
    db.commit()
    db.close()
    store = CdrStore(path)
    try:
        assert [r.call_uuid for r in store.find("w1")] == ["u1"]
        store.upsert(CallRecord(call_uuid="u1", sip_call_id="c1"))
        assert [r.wacid for r in store.find("c1")] == ["w1"]
    finally:
        store.close()

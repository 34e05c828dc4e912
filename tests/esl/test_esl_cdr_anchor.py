"""Behind rtpengine the CDR says what Meta's side used (the number's SDES or DTLS) and that
rtpengine anchored it, not FreeSWITCH's own plain-RTP leg (`srtp DTLS (rtpengine)`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from esl.bic import BicRequest, originate_command
from esl.cdr import CallRecord, CdrStore, record_from_hangup, srtp_text
from esl.cli import app
from esl.event import Event
from esl.media import uic_variables
from esl.uic import initial_record, outcome_line, plan_uic
from esl.whatsapp_call import WhatsAppCall
from siteconfig.controller import (
    ControllerSettings,
    MediaSettings,
    NumberSettings,
    Route,
    RouteTarget,
)

NUMBER = "+15550100001"
ANCHORED = NumberSettings(business_number=NUMBER, srtp_mode="RTP", meta_srtp_mode="DTLS")


def hangup(**variables: str) -> Event:
    headers = {"Event-Name": "CHANNEL_HANGUP_COMPLETE", "Unique-ID": "u-1",
               "Hangup-Cause": "NORMAL_CLEARING", "Call-Direction": "inbound",
               "variable_wa_direction": "uic"}
    headers.update({f"variable_{name}": value for name, value in variables.items()})
    return Event(headers)


def test_the_record_keeps_meta_s_mode_and_freeswitch_s_leg_apart() -> None:
    record = record_from_hangup(hangup(wa_srtp_mode="RTP", wa_meta_srtp_mode="DTLS"))
    assert (record.srtp_mode, record.freeswitch_srtp_mode) == ("DTLS", "RTP")
    assert srtp_text(record) == "DTLS (rtpengine)"
    inside = record_from_hangup(hangup(wa_srtp_mode="SDES", wa_meta_srtp_mode="DTLS"))
    assert srtp_text(inside) == "DTLS (rtpengine, SDES to FreeSWITCH)"
    # the direct path: FreeSWITCH's leg is Meta's, nothing about an anchor
    direct = record_from_hangup(hangup(wa_srtp_mode="SDES"))
    assert (direct.srtp_mode, direct.freeswitch_srtp_mode, srtp_text(direct)) == (
        "SDES", None, "SDES")
    assert srtp_text(CallRecord(call_uuid="u")) == "-"


def test_both_directions_tag_the_channel_with_meta_s_mode() -> None:
    variables = dict(uic_variables(ANCHORED, MediaSettings(), {}))
    assert (variables["wa_srtp_mode"], variables["wa_meta_srtp_mode"]) == ("RTP", "DTLS")
    settings = ControllerSettings(numbers=(ANCHORED,))
    command = originate_command(BicRequest(NUMBER, "+15557654321"), settings, "u")
    assert "wa_srtp_mode=RTP," in command and "wa_meta_srtp_mode=DTLS," in command
    direct = NumberSettings(business_number=NUMBER, srtp_mode="DTLS")
    assert "wa_meta_srtp_mode" not in dict(uic_variables(direct, MediaSettings(), {}))


def test_a_uic_s_first_record_and_log_line_say_meta_s_mode() -> None:
    settings = ControllerSettings(numbers=(ANCHORED,), routes=(
        Route(name="all", target=RouteTarget(action="park")),))
    call = WhatsAppCall(call_uuid="u-2", wacid=None, business_number=NUMBER, user_number=None,
                        offer_mode="RTP")
    record = initial_record(call, plan_uic(call, settings))
    assert (record.srtp_mode, record.freeswitch_srtp_mode) == ("DTLS", "RTP")
    line = outcome_line(record)
    assert "srtp=DTLS anchor=rtpengine freeswitch_srtp=RTP" in line, line


def test_call_show_and_cdr_list_say_dtls_rtpengine(tmp_path: Path) -> None:
    db = tmp_path / "cdr.sqlite3"
    store = CdrStore(db)
    store.upsert(record_from_hangup(hangup(wa_srtp_mode="RTP", wa_meta_srtp_mode="DTLS",
                                           wa_wacid="wacid.anchored1")))
    store.close()
    log = tmp_path / "kamailio.log"
    log.write_text("", encoding="utf-8")
    shown = CliRunner().invoke(app, ["call", "show", "wacid.anchored1", "--db", str(db),
                                     "--edge-log", str(log)])
    assert shown.exit_code == 0, shown.output
    assert "srtp DTLS (rtpengine)" in shown.output, shown.output
    listed = CliRunner().invoke(app, ["cdr", "list", "--db", str(db)],
                                env={"COLUMNS": "300"})
    assert listed.exit_code == 0 and "DTLS (rtpengine)" in listed.output, listed.output


def test_an_older_cdr_database_gains_the_freeswitch_leg_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    store = CdrStore(path)
    store.upsert(CallRecord(call_uuid="u1", srtp_mode="SDES"))
    store.close()
    db = sqlite3.connect(path)  # as a release before the column wrote it
    db.execute("ALTER TABLE cdr DROP COLUMN freeswitch_srtp_mode")
    db.commit()
    db.close()
    store = CdrStore(path)
    try:
        store.upsert(CallRecord(call_uuid="u2", srtp_mode="DTLS", freeswitch_srtp_mode="RTP"))
        assert store.get("u2") == CallRecord(call_uuid="u2", srtp_mode="DTLS",
                                             freeswitch_srtp_mode="RTP")
        old = store.get("u1")
        assert old is not None and (old.srtp_mode, old.freeswitch_srtp_mode) == ("SDES", None)
    finally:
        store.close()

"""`make lab`'s call-permission section without FreeSWITCH (lab/permission_section.py): real
`wa-esl originate`, `provision permission request`, `wa-esl webhook` and `wa-esl preflight`
processes against the Graph stand-in on loopback. The refusal, the request, Meta's signed
reply (a forgery refused, a retry stored once) and the passing pre-flight each pass; the placed
call is reported skipped; a user who rejects the request makes the later steps fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from esl.call_permissions import CallPermissionStore
from lab.permission_section import (
    PERMISSION_USER,
    PermissionLab,
    permission_steps,
    run_without_freeswitch,
    write_site,
)

NUMBER, PNID = "+15550100001", "100000000000001"


def test_the_section_runs_without_freeswitch(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    steps = run_without_freeswitch(tmp_path / "permission", "skipped, no FreeSWITCH installed")
    text = capsys.readouterr().out
    assert [step.passed for step in steps] == [True, True, True, True], text
    assert "wa-esl originate (exit 3): refused in pre-flight: no_permission: " in text
    assert "diagnosis: pre-flight refused, no_permission" in text
    assert "provision permission request (exit 0): sent: call permission request sent" in text
    assert "wasip_esl_permission_requests_sent_total: 1" in text
    assert "the stand-in posted 1 signed call_permission_reply: HTTP 200" in text
    assert "a forged copy (wrong app secret): HTTP 403" in text
    assert "Meta's retry of the same message: HTTP 200, replies stored 1" in text
    assert ("wa-esl preflight (exit 0): pre-flight passed: permission and limits checked; "
            "permission: granted until ") in text
    assert text.rstrip().splitlines()[-1] == (
        "[SKIP] the same call placed through FreeSWITCH and answered; `call show` names the "
        "permission: skipped, no FreeSWITCH installed")
    assert "lab-app-secret" not in (tmp_path / "permission" / "wa-esl-webhook.log").read_text()


def test_a_rejected_request_fails_the_later_steps(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with PermissionLab(tmp_path) as lab:
        config = write_site(lab, tmp_path, NUMBER, PNID)
        lab.serve({PNID: NUMBER})
        lab.standin.permissions.reply_answer = "reject"
        steps = permission_steps(lab, config, NUMBER, PNID, tmp_path / "cdr.sqlite3")
    assert [step.passed for step in steps] == [True, True, False, False]
    store = CallPermissionStore(tmp_path / "cdr.sqlite3")
    try:
        stored = store.current(NUMBER, PERMISSION_USER[1:])
    finally:
        store.close()
    assert stored is not None and stored.status == "rejected"
    assert "refused in pre-flight: permission_rejected" in steps[3].notes[0]
    capsys.readouterr()

"""``wa-esl webhook``: only Meta's signed posts are read, each is stored once, nothing is lost."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from esl.call_permissions import CallPermissionStore
from esl.call_report import build_report, report_lines
from esl.cdr import CallRecord, CdrStore
from esl.cli import app
from esl.meta_call_events import MetaCallEventStore
from esl.webhook import (
    RefusalLog,
    WebhookConfig,
    WebhookReceiver,
    bound_port,
    permission_from_reply,
    serve,
)
from esl.webhook_events import WebhookPayloadError, parse_post
from esl.webhook_signature import HEADER, sign, signature_problem
from lab.graph_standin.webhook_post import call_permission_reply, calls_terminate

SECRET = "lab-app-secret-0123456789"
TOKEN = "lab-verify-token"
NUMBER = "+15550100001"
PHONE_ID = "106540352242922"
USER = "15551234567"


def reply(message_id: str = "wamid.A1", **kwargs: object) -> bytes:
    return call_permission_reply(message_id=message_id, phone_number_id=PHONE_ID,
                                 business_number=NUMBER, user_wa_id=USER,
                                 timestamp=1_800_000_000, **kwargs)  # type: ignore[arg-type]


class Receiver:
    def __init__(self, base: str, receiver: WebhookReceiver, database: Path) -> None:
        self.base = base
        self.receiver = receiver
        self.database = database

    async def post(self, body: bytes, signature: str | None = "sign") -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if signature == "sign":
            headers[HEADER] = sign(body, SECRET)
        elif signature is not None:
            headers[HEADER] = signature
        async with httpx.AsyncClient(timeout=20) as client:  # above the writer's busy timeout
            return await client.post(self.base + "/webhook", content=body, headers=headers)

    def refused(self, reason: str) -> float:
        value = self.receiver.metrics.registry.get_sample_value(
            "wasip_webhook_refused_total", {"reason": reason})
        return value or 0.0


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    database = tmp_path / "cdr.sqlite3"
    config = WebhookConfig(app_secret=SECRET, verify_token=TOKEN, database=database,
                           numbers_by_id={PHONE_ID: NUMBER}, max_body_bytes=4096,
                           refusal_log_interval_s=60)
    app = WebhookReceiver(config, clock=lambda: 1_800_000_100)
    runner = await serve(app, "127.0.0.1", 0)
    try:
        yield Receiver(f"http://127.0.0.1:{bound_port(runner)}", app, database)
    finally:
        await runner.cleanup()


async def test_verification_challenge(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as client:
        good = await client.get(receiver.base + "/webhook", params={
            "hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"})
        bad = await client.get(receiver.base + "/webhook", params={
            "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"})
    assert (good.status_code, good.text) == (200, "1158201444")
    assert bad.status_code == 403 and "1" not in bad.text.replace("refused", "")
    assert receiver.refused("bad_verify_token") == 1


async def test_signed_reply_is_stored_as_a_granted_permission(receiver: Receiver) -> None:
    response = await receiver.post(reply(expiration_timestamp=1_800_600_000))
    assert response.status_code == 200
    store = CallPermissionStore(receiver.database)
    permission = store.current(NUMBER, USER)
    assert permission is not None
    assert (permission.status, permission.source, permission.expiration_time) == (
        "granted", "webhook", 1_800_600_000)
    assert permission.usable(1_800_000_200) and not permission.usable(1_800_600_000)


@pytest.mark.parametrize("signature, reason", [
    (None, "unsigned"),
    ("sha1=" + "0" * 40, "malformed"),
    ("sha256=" + "0" * 64, "forged"),
    ("sign-with-wrong-secret", "forged"),
])
async def test_unsigned_or_forged_posts_are_refused_and_not_stored(
        receiver: Receiver, signature: str | None, reason: str) -> None:
    body = reply()
    if signature == "sign-with-wrong-secret":
        signature = sign(body, "not-the-app-secret")
    response = await receiver.post(body, signature)
    assert response.status_code == 403
    assert receiver.refused(reason) == 1
    assert CallPermissionStore(receiver.database).current(NUMBER, USER) is None


async def test_a_body_changed_after_signing_is_forged(receiver: Receiver) -> None:
    body = reply()
    tampered = body.replace(b'"accept"', b'"reject"')
    response = await receiver.post(tampered, sign(body, SECRET))
    assert response.status_code == 403 and receiver.refused("forged") == 1


async def test_oversized_and_garbage_bodies(receiver: Receiver) -> None:
    big = await receiver.post(b"{" + b" " * 8192 + b"}")
    assert big.status_code == 413 and receiver.refused("too_large") == 1
    for body in (b"\xff\xfe not utf-8", b"{not json", b'{"object": "page", "entry": []}',
                 b'{"object": "whatsapp_business_account", "entry": [{"changes": 7}]}'):
        response = await receiver.post(body)
        assert response.status_code == 400, body
    assert receiver.refused("bad_payload") == 4


async def test_retries_are_stored_once(receiver: Receiver) -> None:
    first = await receiver.post(reply("wamid.R"))
    again = await receiver.post(reply("wamid.R", accept=False))
    assert (first.status_code, again.status_code) == (200, 200)
    permission = CallPermissionStore(receiver.database).current(NUMBER, USER)
    assert permission is not None and permission.status == "granted"
    assert receiver.receiver.metrics.registry.get_sample_value("wasip_webhook_duplicates_total") == 1


async def test_locked_database_answers_503_then_the_retry_lands(receiver: Receiver) -> None:
    await receiver.post(reply("wamid.warm"))  # the writer has its connections open
    blocker = sqlite3.connect(receiver.database, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    # The writer's own connection waits up to its busy timeout (5 s): keep the lock longer.
    refused = await asyncio.wait_for(receiver.post(reply("wamid.L", accept=False)), 30)
    blocker.execute("ROLLBACK")
    assert refused.status_code == 503
    retried = await receiver.post(reply("wamid.L", accept=False))
    assert retried.status_code == 200
    permission = CallPermissionStore(receiver.database).current(NUMBER, USER)
    assert permission is not None and permission.status == "rejected"


async def test_unopenable_database_answers_503_then_the_retry_lands(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the database's directory should be")
    database = blocked / "cdr.sqlite3"
    config = WebhookConfig(app_secret=SECRET, verify_token=TOKEN, database=database,
                           numbers_by_id={PHONE_ID: NUMBER})
    app = WebhookReceiver(config)
    runner = await serve(app, "127.0.0.1", 0)
    try:
        client = Receiver(f"http://127.0.0.1:{bound_port(runner)}", app, database)
        assert (await client.post(reply("wamid.D"))).status_code == 503
        blocked.unlink()
        blocked.mkdir()  # the operator fixes it; Meta's retry lands
        assert (await client.post(reply("wamid.D"))).status_code == 200
    finally:
        await runner.cleanup()
    assert app.metrics.registry.get_sample_value("wasip_webhook_store_failures_total") == 1
    assert CallPermissionStore(database).current(NUMBER, USER) is not None


def test_a_temporary_grant_without_expiry_is_not_taken_for_permanent() -> None:
    document = json.loads(reply())
    interactive = document["entry"][0]["changes"][0]["value"]["messages"][0]["interactive"]
    interactive["call_permission_reply"].pop("expiration_timestamp")
    (parsed,) = parse_post(json.dumps(document).encode()).permission_replies
    permission = permission_from_reply(parsed, NUMBER, now=0)
    assert permission.expiration_time == 1_800_000_000 + 7 * 24 * 3600
    assert not permission.usable(1_800_000_000 + 8 * 24 * 3600)


def terminate(duration_s: int, status: str = "COMPLETED") -> bytes:
    return calls_terminate(wacid="wacid.T1", phone_number_id=PHONE_ID, business_number=NUMBER,
                           user_wa_id=USER, status=status, start_time=1_800_000_000,
                           duration_s=duration_s)


RECORD = CallRecord(call_uuid="u-1", direction="bic", wacid="wacid.T1", business_number=NUMBER,
                    user_number="+" + USER, invite_at="2027-01-15T08:00:00+00:00",
                    answer_at="2027-01-15T08:00:03+00:00", end_at="2027-01-15T08:02:03+00:00",
                    fs_duration_s=120.0, state="ended")


@pytest.mark.parametrize("cdr_first", [True, False])
async def test_terminate_reconciles_with_the_cdr_in_either_order(
        receiver: Receiver, cdr_first: bool) -> None:
    cdrs = CdrStore(receiver.database)
    if cdr_first:
        cdrs.upsert(RECORD)
    assert (await receiver.post(terminate(121))).status_code == 200
    if not cdr_first:
        cdrs.upsert(RECORD)
    report = build_report("wacid.T1", cdrs, ())
    assert [(m.meta_status, m.meta_duration_s, m.mismatches) for m in report.meta] == [
        ("COMPLETED", 121, ())]
    assert "  agrees with our CDR" in report_lines(report)


async def test_call_show_reports_a_mismatch(receiver: Receiver) -> None:
    cdrs = CdrStore(receiver.database)
    cdrs.upsert(RECORD)
    await receiver.post(terminate(60))
    lines = report_lines(build_report("u-1", cdrs, ()))
    assert any(line.startswith("  MISMATCH: Meta's duration 60 s vs ours 120 s") for line in lines)
    events = MetaCallEventStore(receiver.database)
    assert not events.record(parse_post(terminate(60)).call_events[0], 0)  # a retry: kept once


async def test_call_show_reports_meta_completed_but_we_never_answered(receiver: Receiver) -> None:
    cdrs = CdrStore(receiver.database)
    cdrs.upsert(replace(RECORD, answer_at=None, fs_duration_s=0.0))
    await receiver.post(terminate(30))
    lines = report_lines(build_report("wacid.T1", cdrs, ()))
    assert "  MISMATCH: Meta says COMPLETED but our CDR says not answered" in lines


async def test_call_show_reports_meta_s_event_without_a_cdr(receiver: Receiver) -> None:
    cdrs = CdrStore(receiver.database)
    await receiver.post(calls_terminate(wacid="wacid.F1", phone_number_id=PHONE_ID,
                                        business_number=NUMBER, user_wa_id=USER, status="FAILED"))
    await receiver.post(terminate(30))  # COMPLETED, billed: and we have no record of it
    failed = build_report("wacid.F1", cdrs, ())
    assert failed.found and [m.mismatches for m in failed.meta] == [()]
    assert any(line.startswith("  no CDR of ours") for line in report_lines(failed))
    completed = report_lines(build_report("wacid.T1", cdrs, ()))
    assert "  MISMATCH: Meta says COMPLETED but we have no CDR of this call" in completed


async def test_wa_esl_call_show_prints_the_mismatch(receiver: Receiver) -> None:
    CdrStore(receiver.database).upsert(RECORD)
    await receiver.post(terminate(60, status="FAILED"))
    result = CliRunner().invoke(app, ["call", "show", "wacid.T1", "--db", str(receiver.database)])
    assert result.exit_code == 0, result.output
    assert "MISMATCH: Meta says FAILED but our CDR says answered" in result.output
    as_json = CliRunner().invoke(app, ["call", "show", "wacid.T1", "--json",
                                       "--db", str(receiver.database)])
    (meta,) = json.loads(as_json.output)["meta"]
    assert (meta["meta_status"], meta["meta_duration_s"], len(meta["mismatches"])) == (
        "FAILED", 60, 2)


def test_refusals_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RefusalLog(60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="esl.webhook"):
        for _ in range(1_000):  # a bounded flood
            log.refused("forged", "198.51.100.7")
        now[0] = 61
        log.refused("unsigned", "198.51.100.8")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "forged=999" in lines[1] and "unsigned=1" in lines[1]


def test_signature_check_alone() -> None:
    body = b'{"object":"whatsapp_business_account","entry":[]}'
    assert signature_problem(body, sign(body, SECRET), SECRET) is None
    assert signature_problem(body, sign(body, SECRET).upper().replace("SHA256=", "sha256="),
                             SECRET) is None  # hex case is not a forgery
    assert signature_problem(body, None, SECRET) == "unsigned"
    assert signature_problem(body, "sha256=zz", SECRET) == "malformed"
    assert signature_problem(body + b" ", sign(body, SECRET), SECRET) == "forged"


def test_parser_skips_what_it_does_not_use_and_refuses_bad_ids() -> None:
    document = json.loads(reply())
    document["entry"][0]["changes"].append({"field": "message_template_status_update", "value": {}})
    post = parse_post(json.dumps(document).encode())
    assert len(post.permission_replies) == 1 and post.skipped == 1
    document["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = "+1555"
    post = parse_post(json.dumps(document).encode())
    assert post.permission_replies == ()
    assert post.unreadable == ("call_permission_reply: messages[].from is not a WhatsApp id "
                               "(digits)",)
    with pytest.raises(WebhookPayloadError, match="not JSON"):
        parse_post(b"{")


def two_replies(bad: dict[str, object]) -> bytes:
    """One post carrying an unreadable reply first, then a good one."""
    document = json.loads(reply("wamid.good"))
    messages = document["entry"][0]["changes"][0]["value"]["messages"]
    broken = json.loads(json.dumps(messages[0]))
    broken.update(bad)
    messages.insert(0, broken)
    return json.dumps(document).encode()


@pytest.mark.parametrize("bad", [
    {"id": "wamid.bad", "from": None},  # BSUID users: no phone number
    {"id": "wamid.bad", "interactive": {"type": "call_permission_reply",
                                        "call_permission_reply": {"response": ["x"] * 500}}},
    {"id": " "},
])
async def test_an_unreadable_item_is_skipped_and_the_rest_stored(
        receiver: Receiver, bad: dict[str, object]) -> None:
    response = await receiver.post(two_replies(bad))
    assert response.status_code == 200  # a 4xx would have Meta retry a post that cannot succeed
    permission = CallPermissionStore(receiver.database).current(NUMBER, USER)
    assert permission is not None and permission.status == "granted"
    registry = receiver.receiver.metrics.registry
    assert registry.get_sample_value("wasip_webhook_unreadable_items_total") == 1


async def test_other_messages_are_answered_200_and_not_stored(receiver: Receiver) -> None:
    document = json.loads(reply())
    message = document["entry"][0]["changes"][0]["value"]["messages"][0]
    message.pop("interactive")
    message.update(type="text", text={"body": "hello"})
    statuses = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "statuses": [{}]}}]}]}
    for body in (json.dumps(document).encode(), json.dumps(statuses).encode()):
        assert (await receiver.post(body)).status_code == 200
    assert CallPermissionStore(receiver.database).current(NUMBER, USER) is None


def test_terminate_status_as_a_one_item_list() -> None:
    document = json.loads(terminate(10))
    document["entry"][0]["changes"][0]["value"]["calls"][0]["status"] = ["FAILED"]
    (event,) = parse_post(json.dumps(document).encode()).call_events
    assert (event.status, event.duration_s) == ("FAILED", 10)

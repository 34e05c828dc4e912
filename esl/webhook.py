"""``wa-esl webhook``: the receiver for Meta's webhook posts (permission replies, call events).

What it promises Meta and the operator:
- nothing unsigned is read: ``X-Hub-Signature-256`` is checked on the raw body before it is
  parsed; a refusal is 403, counted by reason, and logged at most once per interval with the
  count (a flood of forged posts costs a counter, not the disk);
- nothing is lost: 200 only after the rows are committed; when the database cannot be written
  (locked past the busy timeout, disk full) the answer is 503 and Meta retries the post;
- retries count once: a permission reply is keyed by its message id, a call event by wacid and
  event, both in the same transaction as the row;
- the body is capped (413 past ``max_body_bytes``) and any body we cannot read is 400.

Database writes run on one worker thread that owns the SQLite connections, so the event loop
never waits on a lock the controller holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.database import Location
from esl.meta_call_events import MetaCallEventStore
from esl.webhook_events import PermissionReply, WebhookPayloadError, WebhookPost, parse_post
from esl.webhook_signature import HEADER, signature_problem

log = logging.getLogger(__name__)

MAX_CHALLENGE_LENGTH = 256
TEMPORARY_PERMISSION_S = 7 * 24 * 3600
"""How long Meta's temporary permission lasts (its permissions page): the expiry assumed when a
temporary grant arrives without ``expiration_timestamp``, so it can never pass for permanent."""
REFUSAL_REASONS = ("unsigned", "malformed", "forged", "bad_payload", "too_large", "bad_verify_token")


@dataclass(frozen=True)
class WebhookConfig:
    """What the receiver needs; secrets as plain strings held only in memory, never logged."""

    app_secret: str
    verify_token: str
    database: Location  # the CDR database: SQLite file or PostgreSQL URL
    numbers_by_id: Mapping[str, str]  # Graph phone_number_id -> +E164 business number
    max_body_bytes: int = 256 * 1024
    refusal_log_interval_s: float = 60.0


class WebhookMetrics:
    """The receiver's counters, on a registry of its own (the receiver is its own process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.refused = Counter("wasip_webhook_refused", "Webhook requests refused, by reason.",
                               ["reason"], registry=r)
        self.replies = Counter("wasip_webhook_permission_replies",
                               "call_permission_reply messages stored, by response.",
                               ["response"], registry=r)
        self.call_events = Counter("wasip_webhook_call_events",
                                   "calls webhook events stored, by event.", ["event"], registry=r)
        self.duplicates = Counter("wasip_webhook_duplicates",
                                  "Events Meta posted again (retries), stored once.", registry=r)
        self.unreadable = Counter("wasip_webhook_unreadable_items",
                                  "Items of a signed post we could not read (skipped; the rest "
                                  "of the post is stored).", registry=r)
        self.store_failures = Counter("wasip_webhook_store_failures",
                                      "Posts answered 503 because the database could not be "
                                      "written (Meta retries them).", registry=r)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason)
        for response in ("accept", "reject"):
            self.replies.labels(response)


class RefusalLog:
    """Logs refusals at most once per interval, with how many were refused since the last line.

    Also used for the other lines an outsider or a fault could repeat per request (database
    failures, unreadable items): ``what`` names them in the line.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic,
                 what: str = "refused requests") -> None:
        self._interval = interval_s
        self._what = what
        self._clock = clock
        self._last: float | None = None
        self._since: dict[str, int] = {}

    def refused(self, reason: str, peer: str | None) -> None:
        self._since[reason] = self._since.get(reason, 0) + 1
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            return
        counts = ", ".join(f"{r}={n}" for r, n in sorted(self._since.items()))
        log.warning("webhook: %s (%s); latest %s from %s", self._what, counts, reason,
                    peer or "?")
        self._last = now
        self._since = {}


class _Writer:
    """The single thread that owns the SQLite connections."""

    def __init__(self, database: Location) -> None:
        self._database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-db")
        self._permissions: CallPermissionStore | None = None
        self._events: MetaCallEventStore | None = None

    def _open(self) -> tuple[CallPermissionStore, MetaCallEventStore]:
        if self._permissions is None or self._events is None:
            self._permissions = CallPermissionStore(self._database)
            self._events = MetaCallEventStore(self._database)
        return self._permissions, self._events

    async def run(self, work: Callable[[CallPermissionStore, MetaCallEventStore], int]) -> int:
        def job() -> int:
            try:
                return work(*self._open())
            except (sqlite3.Error, OSError):  # OSError: the database's directory cannot be made
                self._reset()
                raise
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def _reset(self) -> None:
        """After a failure, reopen next time (the file may have been replaced or fixed)."""
        for store in (self._permissions, self._events):
            if store is not None:
                with contextlib.suppress(sqlite3.Error):
                    store.close()
        self._permissions = self._events = None

    def close(self) -> None:
        self._executor.submit(self._reset).result(timeout=10)
        self._executor.shutdown(wait=True)


def permission_from_reply(reply: PermissionReply, business_number: str, now: int) -> CallPermission:
    """The stored form of a user's answer: Meta's accept/reject become granted/rejected."""
    recorded_at = reply.timestamp or now
    expiration = None if reply.is_permanent else reply.expiration_timestamp
    if reply.accepted and not reply.is_permanent and expiration is None:
        expiration = recorded_at + TEMPORARY_PERMISSION_S
    return CallPermission(
        business_number=business_number,
        user_wa_id=reply.user_wa_id,
        status="granted" if reply.accepted else "rejected",
        expiration_time=expiration,
        is_permanent=reply.is_permanent,
        response_source=reply.response_source,
        source="webhook",
        recorded_at=recorded_at,
    )


class WebhookReceiver:
    """The aiohttp application and the state behind it."""

    def __init__(self, config: WebhookConfig, metrics: WebhookMetrics | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.metrics = metrics or WebhookMetrics()
        self._clock = clock
        self._refusals = RefusalLog(config.refusal_log_interval_s)
        self._store_log = RefusalLog(config.refusal_log_interval_s,
                                     what="posts answered 503 (Meta retries them)")
        self._unreadable_log = RefusalLog(config.refusal_log_interval_s,
                                          what="items skipped in signed posts")
        self._writer = _Writer(config.database)
        self.app = web.Application(client_max_size=config.max_body_bytes)
        self.app.router.add_get("/{tail:.*}", self._verify)
        self.app.router.add_post("/{tail:.*}", self._post)
        self.app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, _app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._writer.close)

    def _refuse(self, request: web.Request, reason: str, status: int) -> web.Response:
        self.metrics.refused.labels(reason).inc()
        self._refusals.refused(reason, request.remote)
        return web.Response(status=status, text=f"refused: {reason}\n")

    async def _verify(self, request: web.Request) -> web.Response:
        """Meta's subscription check: echo ``hub.challenge`` when the verify token matches."""
        query = request.rel_url.query
        token = query.get("hub.verify_token", "")
        challenge = query.get("hub.challenge", "")
        if query.get("hub.mode") != "subscribe" or not hmac.compare_digest(
                token.encode(), self.config.verify_token.encode()):
            return self._refuse(request, "bad_verify_token", 403)
        if not challenge or len(challenge) > MAX_CHALLENGE_LENGTH or not challenge.isprintable():
            return self._refuse(request, "bad_payload", 400)
        return web.Response(text=challenge)

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(request, "too_large", 413)
        problem = signature_problem(body, request.headers.get(HEADER), self.config.app_secret)
        if problem is not None:
            return self._refuse(request, problem, 403)
        try:
            post = parse_post(body)
        except WebhookPayloadError as error:
            self.metrics.refused.labels("bad_payload").inc()
            self._refusals.refused(f"bad_payload ({error})", request.remote)
            return web.Response(status=400, text="refused: bad_payload\n")
        for problem in post.unreadable:
            self.metrics.unreadable.inc()
            self._unreadable_log.refused(problem, request.remote)
        try:
            duplicates = await self._writer.run(lambda p, e: self._store(post, p, e))
        except (sqlite3.Error, OSError) as error:
            self.metrics.store_failures.inc()
            self._store_log.refused(f"database: {error}", request.remote)
            return web.Response(status=503, text="try again\n")
        self.metrics.duplicates.inc(duplicates)
        return web.Response(text="ok\n")

    def _store(self, post: WebhookPost, permissions: CallPermissionStore,
               events: MetaCallEventStore) -> int:
        """Write every event of the post (on the writer thread); returns how many were retries."""
        now = int(self._clock())
        duplicates = 0
        for reply in post.permission_replies:
            number = self.config.numbers_by_id.get(reply.phone_number_id)
            if number is None and reply.display_phone_number:
                candidate = "+" + reply.display_phone_number.lstrip("+")
                number = candidate if candidate in self.config.numbers_by_id.values() else None
            if number is None:
                log.warning("webhook: permission reply for phone_number_id %s, which is not one "
                            "of [[numbers]]: ignored", reply.phone_number_id)
                continue
            stored = permissions.record(permission_from_reply(reply, number, now),
                                        event_id=reply.message_id)
            if stored:
                self.metrics.replies.labels("accept" if reply.accepted else "reject").inc()
            else:
                duplicates += 1
        for event in post.call_events:
            if events.record(event, now):
                self.metrics.call_events.labels(event.event).inc()
            else:
                duplicates += 1
        return duplicates


async def serve(receiver: WebhookReceiver, host: str, port: int) -> web.AppRunner:
    """Start serving on host:port; the caller keeps the runner and cleans it up."""
    runner = web.AppRunner(receiver.app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner listens on (port 0 asked the system for one: tests)."""
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the webhook receiver is not listening")

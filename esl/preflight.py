"""Pre-flight: may this business-initiated call be placed now? Decided before any SIP leaves.

Meta answers a BIC without an approved call permission with ``403 No Approved Call Permission
Found`` (138006) after the INVITE, and counts what the business does against the user: connected
calls per 24 h (5 or 100, Meta's pages disagree: read from Graph's answer), and unanswered calls
in a row (WhatsApp revokes the permission after 4). So, in order:

1. the unanswered streak from our CDRs (esl/unanswered_streak.py): warn at ``streak_warn``,
   refuse at ``streak_refuse``;
2. the permission: the newest stored one (Meta's ``call_permission_reply`` webhook, or an
   earlier Graph answer; esl/call_permissions.py), and Graph's ``call_permissions`` answer
   (cached ``cache_s``, paced under ``graph_rate``) for the permission and the ``start_call``
   action: ``can_perform_action`` and every limit, as Meta reports them.

A refusal names its reason (a code from :data:`REASONS`), says why in words and, when Meta says
so, when the call can be retried. Where Graph cannot answer (refused for a SIP number, rate
limited, down), a usable stored permission lets the call go with a warning that the limits were
not checked; without one the call is refused and the reason says what failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from esl.call_permissions import STATUSES, CallPermission, CallPermissionStore
from esl.cdr import CdrStore
from esl.database import DatabaseUnreachable, first_line
from esl.unanswered_streak import unanswered_streak
from graphapi.errors import EndpointRefused, GraphError, RateLimitError
from graphapi.permissions import START_CALL, PermissionAnswer, user_query
from siteconfig.controller import ControllerSettings

log = logging.getLogger(__name__)

REASONS = (
    "no_permission", "permission_pending", "permission_rejected", "permission_expired",
    "limit_reached", "cannot_start_call", "unanswered_streak", "graph_rate_limited",
    "graph_unavailable", "endpoint_refused", "cdr_db_unreachable",
)
"""Every reason pre-flight refuses with (the metrics' label values: a closed set)."""
RATE_LIMIT_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""After Graph's 613 without Retry-After: no lookup for this long (doubling while refused)."""


class PermissionLookup(Protocol):
    def __call__(self, phone_number_id: str, user: str) -> Awaitable[PermissionAnswer]: ...


@dataclass(frozen=True)
class Verdict:
    """Pre-flight's answer: go, or the reason not to and when to try again."""

    allowed: bool
    reason: str  # "ok" or one of REASONS
    detail: str
    retry_at: int | None = None  # epoch seconds; None when nobody can say
    permission: CallPermission | None = None  # the permission the call goes out under
    warnings: tuple[str, ...] = ()
    graph_asked: bool = False

    def retry_words(self) -> str:
        return f"; retry after {iso(self.retry_at)}" if self.retry_at is not None else ""

    def summary(self) -> str:
        """One line: the reason code, the sentence, when to retry."""
        return f"{self.reason}: {self.detail}{self.retry_words()}"


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def permission_token(permission: CallPermission) -> str:
    """The permission a call used, as one channel variable (``wa_permission``) and CDR field.

    Space-, quote- and comma-free (FreeSWITCH splits an originate's arguments on spaces):
    ``granted|until=1765000000|via=webhook|by=user_action|at=1764400000``.
    """
    parts = [permission.status,
             "permanent" if permission.is_permanent else f"until={permission.expiration_time or 0}",
             f"via={permission.source}", f"at={permission.recorded_at}"]
    if permission.response_source:
        parts.insert(3, f"by={permission.response_source}")
    return "|".join(parts)


def permission_words(token: str | None) -> str:
    """What ``call show`` prints for a ``permission_token``."""
    if not token:
        return "not recorded (placed with --force, or before pre-flight)"
    status, *rest = token.split("|")
    fields = dict(part.partition("=")[::2] for part in rest)
    words = [status]
    if "permanent" in fields:
        words.append("permanent")
    elif fields.get("until", "0").isdigit() and int(fields.get("until", "0")):
        words.append(f"until {iso(int(fields['until']))}")
    via = {"webhook": "from Meta's call_permission_reply webhook",
           "graph": "from Graph call_permissions"}.get(fields.get("via", ""), "")
    if via:
        words.append(via)
    if fields.get("by"):
        words.append(f"({fields['by']})")
    if fields.get("at", "").isdigit():
        words.append(f"recorded {iso(int(fields['at']))}")
    return " ".join(words)


def user_wa_id(user: str) -> str:
    """The key a permission is stored under: a number's digits, or the user id as given."""
    query = user_query(user)
    return query.get("user_wa_id") or query["recipient"]


class PacedLookup:
    """Graph lookups cached briefly, one in flight per user, paced under a rate, held off
    after 613.

    The pacing is a fixed spacing of request starts (``1/rate`` s): at Meta's 100/s per app a
    burst from a dialer must queue here, not collect 613s. After a rate-limit answer nothing
    is sent until its Retry-After (or a doubling back-off) has passed: every check in that
    time is answered at once with the same RateLimitError.
    """

    def __init__(self, fetch: PermissionLookup, *, rate: float, cache_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._fetch = fetch
        self._interval = 1.0 / rate
        self._cache_s = cache_s
        self._clock = clock
        self._sleep = sleep
        self._next_start = 0.0
        self._cache: dict[tuple[str, str], tuple[float, PermissionAnswer]] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[PermissionAnswer]] = {}
        self._held_until = 0.0
        self._held_error: RateLimitError | None = None
        self._refusals = 0
        self.requests = 0
        self.cache_hits = 0

    async def __call__(self, phone_number_id: str, user: str) -> PermissionAnswer:
        key = (phone_number_id, user)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._cache_s:
            self.cache_hits += 1
            return cached[1]
        if now < self._held_until and self._held_error is not None:
            raise self._held_error
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[PermissionAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = await self._paced(phone_number_id, user)
        except BaseException as error:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(answer)
            self._cache[key] = (self._clock(), answer)
            if len(self._cache) > 50_000:  # bounded: drop the oldest half
                for old in sorted(self._cache, key=lambda k: self._cache[k][0])[:25_000]:
                    del self._cache[old]
            return answer
        finally:
            del self._inflight[key]

    async def _paced(self, phone_number_id: str, user: str) -> PermissionAnswer:
        now = self._clock()
        slot = max(now, self._next_start)
        self._next_start = slot + self._interval
        if slot > now:
            await self._sleep(slot - now)
        self.requests += 1
        try:
            answer = await self._fetch(phone_number_id, user)
        except RateLimitError as error:
            wait = error.retry_after if error.retry_after is not None else RATE_LIMIT_BACKOFF_S[
                min(self._refusals, len(RATE_LIMIT_BACKOFF_S) - 1)]
            self._refusals += 1
            self._held_until = self._clock() + wait
            self._held_error = error
            log.warning("Graph rate limit on call_permissions (Graph error %s): no lookup for "
                        "%.1f s", error.code, wait)
            raise
        self._refusals = 0
        return answer


@dataclass
class PreflightCounters:
    """What pre-flight decided, for the metrics (esl/prometheus.py reads these)."""

    refused: dict[str, int] = field(default_factory=dict)
    allowed: int = 0


class Preflight:
    """The check; one per process (its cache and pacing are shared by every call)."""

    def __init__(self, settings: ControllerSettings, permissions: CallPermissionStore,
                 cdrs: CdrStore, lookup: PermissionLookup | None,
                 *, clock: Callable[[], float] = time.time,
                 on_verdict: Callable[[Verdict], None] | None = None) -> None:
        self.settings = settings
        self.permissions = permissions
        self.cdrs = cdrs
        self.lookup = lookup
        self._clock = clock
        self._on_verdict = on_verdict
        self.no_graph_reason = "no Graph access configured ([graph] and the number's phone_number_id)"

    async def check(self, business_number: str, user: str) -> Verdict:
        verdict = await self._check(business_number, user)
        if self._on_verdict is not None:
            self._on_verdict(verdict)
        level = logging.INFO if verdict.allowed else logging.WARNING
        log.log(level, "pre-flight %s -> %s: %s", business_number, user,
                "ok" if verdict.allowed else verdict.summary())
        for warning in verdict.warnings:
            log.warning("pre-flight %s -> %s: %s", business_number, user, warning)
        return verdict

    async def _check(self, business_number: str, user: str) -> Verdict:
        config = self.settings.preflight
        now = int(self._clock())
        wa_id = user_wa_id(user)
        try:
            stored = self.permissions.current(business_number, wa_id)
            granted_at = (stored.recorded_at if stored is not None and stored.source == "webhook"
                          and stored.status == "granted" else None)
            streak = unanswered_streak(self.cdrs, business_number, user, since=granted_at)
        except DatabaseUnreachable as error:
            # Neither the stored permission nor the unanswered streak can be read: a call
            # placed blind could be one Meta counts against the business (a revoked or
            # missing permission, a streak at its limit), so refuse until the database answers
            return Verdict(False, "cdr_db_unreachable", (
                f"the CDR database cannot be read for the stored permission and the unanswered "
                f"streak ({first_line(error)}); try again once it answers, or --force"))
        warnings: list[str] = []
        if streak.count >= config.streak_refuse:
            return Verdict(False, "unanswered_streak", (
                f"the last {streak.count} business-initiated calls to this user went unanswered "
                f"or were declined (newest {streak.last_at}); WhatsApp revokes the permission at "
                f"{config.streak_refuse} in a row, so no more calls until the user answers, "
                "calls the business or grants the permission again (or --force)"),
                permission=stored)
        if streak.count >= config.streak_warn:
            warnings.append(
                f"{streak.count} unanswered calls in a row to this user: WhatsApp nudges the "
                f"user to revoke the permission; pre-flight refuses at {config.streak_refuse}")
        usable = stored if stored is not None and stored.usable(now) else None
        number = self.settings.number(business_number)
        phone_number_id = number.phone_number_id if number is not None else None
        if usable is not None and not config.limits_from_graph:
            return Verdict(True, "ok", "stored permission", permission=usable,
                           warnings=tuple(warnings))
        if self.lookup is None or phone_number_id is None:
            why = (self.no_graph_reason if self.lookup is None else
                   f"{business_number} has no phone_number_id, so Graph cannot be asked")
            if usable is not None:
                return Verdict(True, "ok", "stored permission", permission=usable,
                               warnings=(*warnings, f"start_call limits not checked: {why}"))
            return self._stored_refusal(stored, now, why, warnings)
        try:
            answer = await self.lookup(phone_number_id, user)
        except GraphError as error:
            return self._graph_failed(error, usable, stored, now, warnings)
        return self._decide(answer, business_number, wa_id, usable, now, warnings)

    def _graph_failed(self, error: GraphError, usable: CallPermission | None,
                      stored: CallPermission | None, now: int, warnings: list[str]) -> Verdict:
        if isinstance(error, EndpointRefused):
            reason = "endpoint_refused"
        elif isinstance(error, RateLimitError) or error.rate_limited:
            reason = "graph_rate_limited"
        else:
            reason = "graph_unavailable"
        text = error.explain()
        if usable is not None:
            return Verdict(True, "ok", "stored permission", permission=usable, graph_asked=True,
                           warnings=(*warnings, f"start_call limits not checked ({reason}): "
                                     f"{text}"))
        retry_at = None
        if reason == "graph_rate_limited":
            retry_at = now + max(1, int(error.retry_after or 1))
        if stored is not None and reason == "endpoint_refused":
            refusal = self._stored_refusal(stored, now, text, warnings)
            return Verdict(False, refusal.reason, refusal.detail, refusal.retry_at, stored,
                           refusal.warnings, graph_asked=True)
        return Verdict(False, reason, f"no usable stored permission and Graph cannot say: "
                       f"{text}", retry_at, stored, tuple(warnings), graph_asked=True)

    def _stored_refusal(self, stored: CallPermission | None, now: int, why: str,
                        warnings: list[str]) -> Verdict:
        """Refuse from what is stored (nothing, expired, rejected, pending)."""
        if stored is None:
            return Verdict(False, "no_permission", f"no call permission from this user is "
                           f"known ({why}); ask for one: provision permission request",
                           warnings=tuple(warnings))
        reason, detail = _status_words(stored.status, stored.expiration_time, now)
        return Verdict(False, reason, f"{detail} ({why})", permission=stored,
                       warnings=tuple(warnings))

    def _decide(self, answer: PermissionAnswer, business_number: str, wa_id: str,
                usable: CallPermission | None, now: int, warnings: list[str]) -> Verdict:
        if (usable is not None and usable.source == "webhook" and answer.status == "granted"
                and (answer.expiration_time is None or now < answer.expiration_time)):
            # Graph confirms Meta's own reply: keep the reply's row (one row per user), whose
            # time is when the unanswered streak starts again; Graph's would lose it
            permission: CallPermission | None = usable
        else:
            permission = self._record(answer, business_number, wa_id, now)
        if permission is None or not permission.usable(now):
            status = answer.status
            reason, detail = _status_words(status, answer.expiration_time, now)
            if usable is not None and status in ("no_permission", "pending"):
                # the webhook's grant is newer than what Graph knows: trust Meta's own reply
                warnings.append(f"Graph says {status!r} but Meta's reply granted it "
                                f"{iso(usable.recorded_at)}: calling under the reply")
                permission = usable
            else:
                request = answer.action("send_call_permission_request")
                when = request.blocking_until() if request is not None else None
                if request is not None and not request.can_perform_action and when:
                    detail += f"; a new request can be sent after {iso(when)}"
                return Verdict(False, reason, detail, permission=permission,
                               warnings=tuple(warnings), graph_asked=True)
        start = answer.action(START_CALL)
        if start is None:
            warnings.append("Graph's answer has no start_call action: limits unknown")
        else:
            reached = start.reached_limits()
            if reached:
                used = ", ".join(limit.describe() for limit in reached)
                return Verdict(False, "limit_reached", "Meta's limit on business-initiated "
                               f"calls to this user is reached ({used})", start.blocking_until(),
                               permission, tuple(warnings), graph_asked=True)
            if not start.can_perform_action:
                return Verdict(False, "cannot_start_call", "Meta says no business-initiated "
                               "call may be started to this user now (start_call: "
                               "can_perform_action false, no limit reached)", None, permission,
                               tuple(warnings), graph_asked=True)
        chosen = usable if usable is not None and usable.source == "webhook" else permission
        return Verdict(True, "ok", "permission and limits checked", permission=chosen,
                       warnings=tuple(warnings), graph_asked=True)

    def _record(self, answer: PermissionAnswer, business_number: str, wa_id: str,
                now: int) -> CallPermission | None:
        """Graph's answer as a stored row (source graph); None for a status we do not know."""
        status = answer.status
        if status == "granted" and answer.expiration_time is not None \
                and now >= answer.expiration_time:
            status = "expired"
        if status not in STATUSES:
            return None
        permission = CallPermission(
            business_number=business_number, user_wa_id=wa_id, status=status,
            expiration_time=answer.expiration_time,
            is_permanent=status == "granted" and answer.expiration_time is None,
            response_source=None, source="graph", recorded_at=now)
        try:
            self.permissions.record(permission)
        except Exception as error:  # the decision stands without the row: log, never fail
            log.warning("pre-flight: cannot store Graph's permission answer: %s", error)
        return permission


def _status_words(status: str, expiration_time: int | None, now: int) -> tuple[str, str]:
    if status == "granted" and expiration_time is not None and now >= expiration_time:
        status = "expired"
    if status == "expired":
        when = f" on {iso(expiration_time)}" if expiration_time else ""
        return "permission_expired", (f"the user's call permission expired{when}; ask again: "
                                      "provision permission request")
    if status == "rejected":
        return "permission_rejected", "the user declined the call permission request"
    if status == "pending":
        return "permission_pending", ("a permission request is waiting for the user's answer "
                                      "(Meta's reply arrives on the webhook)")
    return "no_permission", ("the user has not granted this business a call permission; ask "
                             "for one: provision permission request")

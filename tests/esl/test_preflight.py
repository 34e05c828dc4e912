"""Pre-flight before a business-initiated call: every refusal reason, limits read from Graph's
answer (5 and 100), the unanswered streak, 613 back-off, a refused endpoint, stored permissions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.cdr import CallRecord, CdrStore
from esl.preflight import REASONS, PacedLookup, Preflight, permission_token, permission_words
from graphapi.errors import EndpointRefused, GraphError, RateLimitError, parse_error
from graphapi.permissions import PermissionAnswer, parse_permission_answer
from siteconfig.controller import ControllerSettings, NumberSettings, PreflightSettings

BUSINESS = "+15550100001"
USER = "+15551230000"
WA_ID = "15551230000"
NOW = 1_800_000_000


def answer(status: str = "granted", *, max_allowed: int = 100, used: int = 0,
           reset: int | None = None, expires: int | None = NOW + 3600,
           can_call: bool | None = None, can_request: bool = True,
           request_reset: int | None = None) -> PermissionAnswer:
    limit: dict[str, Any] = {"time_period": "PT24H", "max_allowed": max_allowed,
                             "current_usage": used}
    if reset is not None:
        limit["limit_expiration_time"] = reset
    request_limit: dict[str, Any] = {"time_period": "PT24H", "max_allowed": 1,
                                     "current_usage": 0 if can_request else 1}
    if request_reset is not None:
        request_limit["limit_expiration_time"] = request_reset
    permission: dict[str, Any] = {"status": status}
    if expires is not None:
        permission["expiration_time"] = expires
    return parse_permission_answer({
        "permission": permission,
        "actions": [
            {"action_name": "send_call_permission_request", "can_perform_action": can_request,
             "limits": [request_limit]},
            {"action_name": "start_call",
             "can_perform_action": (status == "granted" and used < max_allowed)
             if can_call is None else can_call, "limits": [limit]},
        ]})


class FakeGraph:
    """The lookup, answering what the test says (or raising it)."""

    def __init__(self, result: PermissionAnswer | GraphError) -> None:
        self.result = result
        self.calls = 0

    async def __call__(self, phone_number_id: str, user: str) -> PermissionAnswer:
        self.calls += 1
        assert phone_number_id == "100000000000001"
        if isinstance(self.result, GraphError):
            raise self.result
        return self.result


@pytest.fixture
def stores(tmp_path: Path) -> Any:
    db = tmp_path / "cdr.sqlite3"
    cdrs, permissions = CdrStore(db), CallPermissionStore(db)
    yield cdrs, permissions
    cdrs.close()
    permissions.close()


def settings(**preflight: Any) -> ControllerSettings:
    return ControllerSettings(
        numbers=(NumberSettings(business_number=BUSINESS, phone_number_id="100000000000001"),),
        preflight=PreflightSettings(**preflight))


def check(stores: Any, lookup: Any, **preflight: Any) -> Any:
    cdrs, permissions = stores
    checker = Preflight(settings(**preflight), permissions, cdrs, lookup, clock=lambda: NOW)
    return asyncio.run(checker.check(BUSINESS, USER))


def stored(status: str = "granted", *, source: str = "webhook", expires: int | None = NOW + 60,
           at: int = NOW - 100) -> CallPermission:
    return CallPermission(BUSINESS, WA_ID, status, expires, expires is None, "user_action",
                          source, at)


@pytest.mark.parametrize("max_allowed", [5, 100])
def test_limits_come_from_the_answer(stores: Any, max_allowed: int) -> None:
    below = check(stores, FakeGraph(answer(max_allowed=max_allowed, used=max_allowed - 1)))
    assert below.allowed and below.graph_asked
    reached = check(stores, FakeGraph(answer(max_allowed=max_allowed, used=max_allowed,
                                             reset=NOW + 7200)))
    assert not reached.allowed and reached.reason == "limit_reached"
    assert f"{max_allowed}/{max_allowed} per 24 h" in reached.detail
    assert reached.retry_at == NOW + 7200 and "retry after 2027-01-15T10:00:00Z" in reached.summary()


@pytest.mark.parametrize(("status", "reason"), [
    ("no_permission", "no_permission"), ("pending", "permission_pending"),
    ("rejected", "permission_rejected"), ("expired", "permission_expired")])
def test_each_permission_state_is_its_own_reason(stores: Any, status: str, reason: str) -> None:
    verdict = check(stores, FakeGraph(answer(status, expires=None)))
    assert not verdict.allowed and verdict.reason == reason
    assert verdict.permission is not None and verdict.permission.source == "graph"
    _, permissions = stores
    assert permissions.current(BUSINESS, WA_ID).status == status  # Graph's answer kept


def test_a_grant_past_its_time_is_expired(stores: Any) -> None:
    verdict = check(stores, FakeGraph(answer("granted", expires=NOW - 1)))
    assert verdict.reason == "permission_expired" and "2027-01-15T07:59:59Z" in verdict.detail


def test_no_permission_says_when_a_request_may_be_sent(stores: Any) -> None:
    verdict = check(stores, FakeGraph(answer("no_permission", expires=None, can_request=False,
                                             request_reset=NOW + 600)))
    assert "request can be sent after 2027-01-15T08:10:00Z" in verdict.detail


def test_start_call_refused_without_a_limit_named(stores: Any) -> None:
    verdict = check(stores, FakeGraph(answer(can_call=False)))
    assert verdict.reason == "cannot_start_call"


def test_streak_warns_at_2_and_refuses_at_the_revoke_point(stores: Any) -> None:
    cdrs, _ = stores
    graph = FakeGraph(answer())

    def unanswered(n: int, status: int = 480) -> None:
        cdrs.upsert(CallRecord(f"u{n}", direction="bic", business_number=BUSINESS,
                               user_number=USER, invite_at=f"2027-01-15T08:0{n}:00.000+00:00",
                               hangup_cause="NO_ANSWER", sip_status=status, state="ended"))

    cdrs.upsert(CallRecord("answered", direction="bic", business_number=BUSINESS,
                           user_number=USER, invite_at="2027-01-15T07:00:00.000+00:00",
                           answer_at="2027-01-15T07:00:05.000+00:00", state="ended"))
    cdrs.upsert(CallRecord("refused-403", direction="bic", business_number=BUSINESS,
                           user_number=USER, invite_at="2027-01-15T07:30:00.000+00:00",
                           sip_status=403, hangup_cause="CALL_REJECTED", state="ended"))
    unanswered(1)
    unanswered(2, 486)  # declined counts as unanswered
    two = check(stores, graph)
    assert two.allowed and any("2 unanswered calls in a row" in w for w in two.warnings)
    unanswered(3, 487)
    unanswered(4)
    four = check(stores, graph)
    assert not four.allowed and four.reason == "unanswered_streak" and "4" in four.detail
    assert check(stores, graph, streak_refuse=5, streak_warn=2).allowed  # configurable


def test_a_new_grant_resets_the_streak(stores: Any) -> None:
    cdrs, permissions = stores
    for n in range(4):
        cdrs.upsert(CallRecord(f"u{n}", direction="bic", business_number=BUSINESS,
                               user_number=USER, invite_at=f"2027-01-15T07:0{n}:00.000+00:00",
                               sip_status=480, state="ended"))
    assert check(stores, FakeGraph(answer())).reason == "unanswered_streak"
    permissions.record(stored(at=NOW))  # the user said yes again, after those calls
    assert check(stores, FakeGraph(answer())).allowed


def test_graph_confirming_the_reply_keeps_the_reply(stores: Any) -> None:
    """Graph's `granted` does not replace Meta's reply (one row per user): the next call still
    counts the streak from the reply and goes out under it (`call show` names the webhook)."""
    cdrs, permissions = stores
    for n in range(4):
        cdrs.upsert(CallRecord(f"u{n}", direction="bic", business_number=BUSINESS,
                               user_number=USER, invite_at=f"2027-01-15T07:0{n}:00.000+00:00",
                               sip_status=480, state="ended"))
    permissions.record(stored(at=NOW))
    for _ in range(2):
        verdict = check(stores, FakeGraph(answer()))
        assert verdict.allowed, verdict.summary()
        assert verdict.permission is not None and verdict.permission.source == "webhook"
    assert permissions.current(BUSINESS, WA_ID).source == "webhook"
    # Graph saying it ran out still refuses, and is kept
    expired = check(stores, FakeGraph(answer("granted", expires=NOW - 1)))
    assert not expired.allowed and expired.reason == "permission_expired"
    assert permissions.current(BUSINESS, WA_ID).source == "graph"


def test_a_usable_stored_permission_is_used_when_graph_cannot_answer(stores: Any) -> None:
    _, permissions = stores
    permissions.record(stored())
    refused = EndpointRefused(400, 131055, "not for SIP numbers", endpoint="call_permissions")
    verdict = check(stores, FakeGraph(refused))
    assert verdict.allowed and verdict.permission is not None
    assert verdict.permission.source == "webhook"
    assert any("limits not checked (endpoint_refused)" in w for w in verdict.warnings)
    graph = FakeGraph(answer())
    assert check(stores, graph, limits_from_graph=False).allowed and graph.calls == 0


def test_without_a_stored_permission_graph_failures_are_reasons(stores: Any) -> None:
    refused = EndpointRefused(400, 131055, "not for SIP numbers", endpoint="call_permissions")
    verdict = check(stores, FakeGraph(refused))
    assert verdict.reason == "endpoint_refused" and "SIP enabled" in verdict.detail
    limited = parse_error(400, {"error": {"message": "(#613) rate", "code": 613}}, 7.0)
    verdict = check(stores, FakeGraph(limited))
    assert verdict.reason == "graph_rate_limited" and verdict.retry_at == NOW + 7
    down = GraphError(0, 0, "GET /x: ConnectError")
    assert check(stores, FakeGraph(down)).reason == "graph_unavailable"


def test_stored_states_refuse_without_graph(stores: Any) -> None:
    _, permissions = stores
    assert check(stores, None).reason == "no_permission"
    permissions.record(stored(expires=NOW - 5))
    assert check(stores, None).reason == "permission_expired"
    permissions.record(stored("rejected", at=NOW - 50))
    assert check(stores, None).reason == "permission_rejected"


def test_the_webhook_grant_wins_over_a_lagging_graph(stores: Any) -> None:
    _, permissions = stores
    permissions.record(stored(at=NOW - 1))
    verdict = check(stores, FakeGraph(answer("no_permission", expires=None, can_call=False)))
    # Graph lags Meta's own reply: the reply is used, yet Meta's start_call refusal still holds
    assert verdict.reason == "cannot_start_call"


def test_every_reason_is_reachable_and_named() -> None:
    assert len(set(REASONS)) == len(REASONS) == 11


def test_permission_token_is_safe_for_an_originate_and_read_back() -> None:
    token = permission_token(stored())
    assert not any(c in token for c in " ,'\"{}") and token.startswith("granted|until=")
    words = permission_words(token)
    assert "from Meta's call_permission_reply webhook (user_action)" in words
    assert "until 2027-01-15T08:01:00Z" in words
    assert permission_words(None).startswith("not recorded")


async def test_lookups_are_cached_deduplicated_and_paced() -> None:
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    graph = FakeGraph(answer())
    lookup = PacedLookup(graph, rate=50, cache_s=30, clock=lambda: clock[0], sleep=sleep)
    await asyncio.gather(*(lookup("100000000000001", USER) for _ in range(5)))
    assert graph.calls == 1  # one in flight per user
    await lookup("100000000000001", USER)
    assert graph.calls == 1 and lookup.cache_hits >= 1
    for n in range(10):
        await lookup("100000000000001", f"+1555999{n:04d}")
    assert sum(slept) == pytest.approx(10 / 50, abs=0.03)  # 50/s: 20 ms apart


async def test_613_holds_every_lookup_off_until_retry_after() -> None:
    clock = [0.0]
    graph = FakeGraph(parse_error(400, {"error": {"message": "(#613)", "code": 613}}, 2.0))

    async def sleep(seconds: float) -> None:
        clock[0] += seconds

    lookup = PacedLookup(graph, rate=100, cache_s=0, clock=lambda: clock[0], sleep=sleep)
    with pytest.raises(RateLimitError):
        await lookup("100000000000001", USER)
    for n in range(5):
        with pytest.raises(RateLimitError):
            await lookup("100000000000001", f"+1555000{n:04d}")
    assert graph.calls == 1  # nothing sent while held off
    clock[0] += 2.1
    graph.result = answer()
    assert (await lookup("100000000000001", USER)).status == "granted"
    assert graph.calls == 2

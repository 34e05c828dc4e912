"""graphapi.permissions: Graph's call_permissions answer read strictly, limits from the answer."""

from __future__ import annotations

from typing import Any

import pytest

from graphapi.errors import (
    EndpointRefused,
    GraphError,
    NoPermissionError,
    PermanentPermissionExists,
    PrerequisitesNotMet,
    RateLimitError,
    parse_error,
    refused_endpoint,
)
from graphapi.permissions import (
    SEND_REQUEST,
    START_CALL,
    message_id,
    parse_permission_answer,
    period_words,
    permission_request_body,
    user_query,
)


def answer(max_allowed: int, used: int, reset: int | None = None) -> dict[str, Any]:
    """Meta's documented sample, with the start_call figures given."""
    limit: dict[str, Any] = {"time_period": "PT24H", "max_allowed": max_allowed,
                             "current_usage": used}
    if reset is not None:
        limit["limit_expiration_time"] = reset
    return {
        "messaging_product": "whatsapp",
        "permission": {"status": "granted", "expiration_time": 1745343479},
        "actions": [
            {"action_name": SEND_REQUEST, "can_perform_action": True,
             "limits": [{"time_period": "PT24H", "max_allowed": 1, "current_usage": 0},
                        {"time_period": "P7D", "max_allowed": 2, "current_usage": 0}]},
            {"action_name": START_CALL, "can_perform_action": used < max_allowed,
             "limits": [limit]},
        ],
    }


@pytest.mark.parametrize("max_allowed", [5, 100])
def test_limits_are_read_from_the_answer(max_allowed: int) -> None:
    parsed = parse_permission_answer(answer(max_allowed, max_allowed, reset=1745622600))
    start = parsed.action(START_CALL)
    assert start is not None and not start.can_perform_action
    assert start.limits[0].max_allowed == max_allowed and start.limits[0].reached
    assert start.blocking_until() == 1745622600
    assert start.limits[0].describe() == f"{max_allowed}/{max_allowed} per 24 h"
    assert parsed.status == "granted" and parsed.expiration_time == 1745343479
    below = parse_permission_answer(answer(max_allowed, max_allowed - 1)).action(START_CALL)
    assert below is not None and below.can_perform_action and not below.reached_limits()


@pytest.mark.parametrize("broken", [
    {},
    {"permission": {}},
    {"permission": {"status": "granted"}, "actions": "no"},
    {"permission": {"status": "granted"}, "actions": [{"action_name": START_CALL}]},
    {"permission": {"status": "granted"}, "actions": [
        {"action_name": START_CALL, "can_perform_action": True,
         "limits": [{"time_period": "PT24H", "max_allowed": "5"}]}]},
    {"permission": {"status": "granted", "expiration_time": "soon"}},
])
def test_an_unreadable_answer_is_an_error_never_a_yes(broken: dict[str, Any]) -> None:
    with pytest.raises(GraphError, match="unreadable"):
        parse_permission_answer(broken)


def test_extra_fields_are_ignored() -> None:
    raw = answer(5, 0)
    raw["permission"]["new_field"] = 1
    raw["actions"][1]["new_field"] = {"x": 1}
    assert parse_permission_answer(raw).action(START_CALL) is not None


def test_periods_in_words() -> None:
    assert (period_words("PT24H"), period_words("P7D"), period_words("P1D")) == (
        "24 h", "7 days", "1 day")
    assert period_words("weird") == "weird"


def test_users_are_named_safely() -> None:
    assert user_query("+15551234567") == {"user_wa_id": "15551234567"}
    assert user_query("US.13491208655302741918") == {"recipient": "US.13491208655302741918"}
    for bad in ("", "+1 555", "a/b", "x" * 65, "../x?y"):
        with pytest.raises(ValueError):
            user_query(bad)


def test_request_message_is_metas_shape() -> None:
    body = permission_request_body("+15551234567", "May we call you?")
    assert body["to"] == "15551234567" and body["type"] == "interactive"
    assert body["interactive"]["type"] == "call_permission_request"
    assert body["interactive"]["action"] == {"name": "call_permission_request"}
    with pytest.raises(ValueError):
        permission_request_body("+15551234567", " ")
    with pytest.raises(ValueError):
        permission_request_body("+15551234567", "x" * 1025)
    assert message_id({"messages": [{"id": "wamid.X"}]}) == "wamid.X"
    with pytest.raises(GraphError):
        message_id({"messages": []})


@pytest.mark.parametrize(("code", "kind"), [
    (138006, NoPermissionError), (138017, PermanentPermissionExists),
    (138018, PrerequisitesNotMet), (613, RateLimitError)])
def test_permission_codes_are_typed(code: int, kind: type[GraphError]) -> None:
    error = parse_error(400, {"error": {"message": "m", "code": code, "fbtrace_id": "T"}})
    assert type(error) is kind and error.code == code and "fbtrace_id T" in error.explain()


def test_613_is_retried_as_a_rate_limit() -> None:
    error = parse_error(400, {"error": {"message": "(#613) Calls to this api have exceeded "
                                        "the rate limit.", "code": 613}}, retry_after=2.0)
    assert error.rate_limited and error.retryable and error.retry_after == 2.0


def test_a_refused_endpoint_is_a_diagnosis() -> None:
    sip = parse_error(400, {"error": {"message": "(#131055) not allowed", "code": 131055}})
    refused = refused_endpoint(sip, "call_permissions")
    assert isinstance(refused, EndpointRefused)
    assert "SIP enabled" in refused.explain() and "--force" in refused.explain()
    other = parse_error(400, {"error": {"message": "bad", "code": 100}})
    assert refused_endpoint(other, "call_permissions") is None

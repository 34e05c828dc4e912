"""Graph's answer about one user's call permission, typed, and the permission request message.

``GET /<PHONE_NUMBER_ID>/call_permissions?user_wa_id=<WA_ID>`` answers ``permission`` (``status``,
``expiration_time``) and ``actions[]`` (``send_call_permission_request``, ``start_call``), each
with ``can_perform_action`` and ``limits[]`` (``time_period``, ``max_allowed``,
``current_usage``, ``limit_expiration_time``). Meta's own pages disagree on the numbers (5 or
100 connected calls per 24 h), so nothing here knows a limit: every figure is read from the
answer. Parsing is strict on shape (an answer we cannot read is an error, never a guess that a
call may go out) and lenient on extra fields (Meta adds fields).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from graphapi.errors import GraphError

START_CALL = "start_call"
SEND_REQUEST = "send_call_permission_request"
WA_ID = re.compile(r"^[1-9][0-9]{6,14}$")
BSUID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUEST_TEXT_LIMIT = 1024
"""Meta's limit on an interactive message's body text."""


@dataclass(frozen=True)
class ActionLimit:
    """One counter Meta keeps on an action: ``current_usage`` of ``max_allowed`` per period."""

    time_period: str  # ISO 8601 duration as Meta writes it: "PT24H", "P7D"
    max_allowed: int
    current_usage: int
    limit_expiration_time: int | None  # epoch seconds the counter resets; None when not given

    @property
    def reached(self) -> bool:
        return self.current_usage >= self.max_allowed

    def describe(self) -> str:
        return f"{self.current_usage}/{self.max_allowed} per {period_words(self.time_period)}"


@dataclass(frozen=True)
class PermissionAction:
    name: str
    can_perform_action: bool
    limits: tuple[ActionLimit, ...]

    def blocking_until(self) -> int | None:
        """When the action can be performed again: the latest reset of a reached limit."""
        times = [limit.limit_expiration_time for limit in self.limits
                 if limit.reached and limit.limit_expiration_time is not None]
        return max(times) if times else None

    def reached_limits(self) -> tuple[ActionLimit, ...]:
        return tuple(limit for limit in self.limits if limit.reached)


@dataclass(frozen=True)
class PermissionAnswer:
    """Graph's whole answer for one (business number, user)."""

    status: str  # "granted", "pending", "no_permission", "expired", "rejected", ...
    expiration_time: int | None
    actions: tuple[PermissionAction, ...]

    def action(self, name: str) -> PermissionAction | None:
        return next((a for a in self.actions if a.name == name), None)


def period_words(period: str) -> str:
    """``PT24H`` -> ``24 h``, ``P7D`` -> ``7 days`` (anything else as Meta wrote it)."""
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", period)
    if match is None or not any(match.groups()):
        return period
    days, hours, minutes = match.groups()
    parts = [f"{days} day{'s' if days != '1' else ''}" if days else "",
             f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p)


def _bad(what: str) -> GraphError:
    return GraphError(200, 0, f"GET call_permissions answered an unreadable {what}")


def _epoch(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _bad(what)
    try:
        return int(value)
    except ValueError:
        raise _bad(what) from None


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(what)
    return value


def parse_limit(raw: Any) -> ActionLimit:
    if not isinstance(raw, dict) or not isinstance(raw.get("time_period"), str):
        raise _bad("limit (no time_period)")
    return ActionLimit(raw["time_period"], _count(raw.get("max_allowed"), "limit max_allowed"),
                       _count(raw.get("current_usage", 0), "limit current_usage"),
                       _epoch(raw.get("limit_expiration_time"), "limit_expiration_time"))


def parse_permission_answer(answer: dict[str, Any]) -> PermissionAnswer:
    """The typed answer; GraphError (status 200, code 0) when its shape is not Meta's."""
    permission = answer.get("permission")
    if not isinstance(permission, dict) or not isinstance(permission.get("status"), str):
        raise _bad("permission (no permission.status)")
    raw_actions = answer.get("actions", [])
    if not isinstance(raw_actions, list):
        raise _bad("actions list")
    actions = []
    for raw in raw_actions:
        if not isinstance(raw, dict) or not isinstance(raw.get("action_name"), str):
            raise _bad("action (no action_name)")
        can = raw.get("can_perform_action")
        if not isinstance(can, bool):
            raise _bad(f"action {raw['action_name']} (can_perform_action not true/false)")
        limits = raw.get("limits", [])
        if not isinstance(limits, list):
            raise _bad(f"action {raw['action_name']} limits")
        actions.append(PermissionAction(raw["action_name"], can,
                                        tuple(parse_limit(limit) for limit in limits)))
    status = permission["status"].strip().lower()
    expiration = _epoch(permission.get("expiration_time"), "expiration_time")
    # some of Meta's pages and SDKs say "temporary" / "permanent" for a grant
    if status == "permanent":
        status, expiration = "granted", None
    elif status == "temporary":
        status = "granted"
    return PermissionAnswer(status, expiration, tuple(actions))


def user_query(user: str) -> dict[str, str]:
    """The query naming the user: ``user_wa_id`` for a number (digits), ``recipient`` for a
    business-scoped user id. ValueError for anything else (it would go into a URL)."""
    digits = user.removeprefix("+")
    if WA_ID.match(digits):
        return {"user_wa_id": digits}
    if BSUID.match(user):
        return {"recipient": user}
    raise ValueError(f"user must be a WhatsApp number (+E164 or digits) or a user id: {user!r}")


def permission_request_body(user: str, text: str) -> dict[str, Any]:
    """``POST /<PHONE_NUMBER_ID>/messages``: the interactive call permission request."""
    if not text.strip() or len(text) > REQUEST_TEXT_LIMIT:
        raise ValueError(f"the request text must be 1 to {REQUEST_TEXT_LIMIT} characters")
    query = user_query(user)
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        # Meta takes a number as "to" and a business-scoped user id as "recipient"
        **({"to": query["user_wa_id"]} if "user_wa_id" in query else {"recipient": user}),
        "type": "interactive",
        "interactive": {
            "type": "call_permission_request",
            "action": {"name": "call_permission_request"},
            "body": {"text": text},
        },
    }


def message_id(answer: dict[str, Any]) -> str:
    """The ``wamid`` of a sent message (``messages[0].id``)."""
    messages = answer.get("messages")
    if (not isinstance(messages, list) or not messages or not isinstance(messages[0], dict)
            or not isinstance(messages[0].get("id"), str)):
        raise GraphError(200, 0, "POST messages answered without a message id")
    return str(messages[0]["id"])

"""Call permissions from the `provision` side: a user's status and limits, and the request.

The request respects Meta's own counters: the ``send_call_permission_request`` action's
``can_perform_action`` and limits (1 per 24 h, 2 per 7 days today; read from the answer, never
assumed) are checked first, and a permanent permission needs no request (138017). Where Graph
refuses the lookup (a SIP-enabled number may not have it), the request is sent anyway and Meta
enforces its limits itself; the outcome says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from esl.preflight import iso
from graphapi.client import GraphClient
from graphapi.errors import EndpointRefused, PermanentPermissionExists
from graphapi.permissions import SEND_REQUEST, PermissionAnswer

DEFAULT_TEXT = "May we call you on WhatsApp about your request?"


@dataclass(frozen=True)
class RequestOutcome:
    sent: bool
    reason: str  # "sent", "request_limit", "cannot_request", "permanent_exists"
    detail: str
    message_id: str | None = None
    retry_at: int | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatusRow:
    action: str
    can: str
    period: str
    used: str
    resets: str


@dataclass
class PermissionStatus:
    status: str
    expires: str
    rows: list[StatusRow] = field(default_factory=list)


def status_of(answer: PermissionAnswer) -> PermissionStatus:
    """The answer as a table: one row per (action, limit)."""
    expires = ("permanent" if answer.status == "granted" and answer.expiration_time is None
               else iso(answer.expiration_time) if answer.expiration_time else "-")
    result = PermissionStatus(answer.status, expires)
    for action in answer.actions:
        can = "yes" if action.can_perform_action else "no"
        if not action.limits:
            result.rows.append(StatusRow(action.name, can, "-", "-", "-"))
        for limit in action.limits:
            result.rows.append(StatusRow(
                action.name, can, limit.time_period, f"{limit.current_usage}/{limit.max_allowed}",
                iso(limit.limit_expiration_time) if limit.limit_expiration_time else "-"))
    return result


async def request_permission(client: GraphClient, phone_number_id: str, user: str,
                             text: str = DEFAULT_TEXT) -> RequestOutcome:
    """Look the user up, respect the request limits Meta reports, then send the request."""
    notes: list[str] = []
    answer: PermissionAnswer | None = None
    try:
        answer = await client.call_permissions(phone_number_id, user)
    except EndpointRefused as error:
        notes.append(f"request limits not checked ({error.explain()}); Meta enforces them")
    if answer is not None:
        refusal = _refusal(answer)
        if refusal is not None:
            return refusal
    try:
        message = await client.send_permission_request(phone_number_id, user, text)
    except PermanentPermissionExists as error:
        return RequestOutcome(False, "permanent_exists", error.explain(), notes=tuple(notes))
    return RequestOutcome(True, "sent", f"call permission request sent (message {message})",
                          message, notes=tuple(notes))


def _refusal(answer: PermissionAnswer) -> RequestOutcome | None:
    if answer.status == "granted" and answer.expiration_time is None:
        return RequestOutcome(False, "permanent_exists", "the user has already given this number "
                              "a permanent call permission: no request is needed")
    action = answer.action(SEND_REQUEST)
    if action is None:
        return None
    reached = action.reached_limits()
    if reached:
        used = "; ".join(limit.describe() for limit in reached)
        return RequestOutcome(False, "request_limit", "Meta's limit on permission requests to "
                              f"this user is reached ({used})", retry_at=action.blocking_until())
    if not action.can_perform_action:
        return RequestOutcome(False, "cannot_request", "Meta says no permission request may be "
                              "sent to this user now (can_perform_action false, no limit named)")
    return None  # a temporary grant may be renewed: asking again is allowed

"""Meta's call permissions as the Graph stand-in plays them: the lookup, the request, the reply.

Per (phone number id, user): the permission (none, temporary until a time, permanent, expired),
the ``start_call`` limit (connected calls per 24 h: 5 on Meta's SIP page and GET sample, 100 on
its permissions page; the stand-in takes either, so the client must read it), and the requests
sent (1 per 24 h, 2 per 7 days, both reset by a connected call, as Meta documents). Strict where
Meta is: a request to a user with a permanent permission is 138017, a request past the limits
is refused, a message that is not Meta's ``call_permission_request`` shape is #100.

A request is answered like a WhatsApp user would (``reply_answer``: accept, accept for good,
reject, or none): the book's state changes and ``on_reply`` is called with the reply, which the
server posts to the webhook receiver, signed (lab/graph_standin/webhook_post.py).

Faults (set on the book): ``refuse_for_sip`` makes the lookup fail for SIP-enabled numbers the
way Meta might ("131055", "unsupported" = #100 subcode 33, "404") for the ids in
``sip_numbers``; 613 comes from the rate limiter or from a FaultPlan rule (server.py).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.graph_standin.state import GraphApiError, invalid_parameter

DAY_S = 24 * 3600
TEMPORARY_S = 7 * DAY_S
REQUEST_LIMITS = (("PT24H", DAY_S, 1), ("P7D", 7 * DAY_S, 2))
"""Meta's permission-request limits: (time_period, seconds, max_allowed)."""
DEFAULT_CALL_LIMIT = 100
Refusal = Literal["131055", "unsupported", "404"]
ReplyAnswer = Literal["accept", "accept_permanent", "reject", "none"]


@dataclass
class UserPermission:
    """One user's permission toward one business number, and the counters Meta keeps."""

    status: str = "no_permission"  # no_permission | granted | expired | pending | rejected
    expiration_time: int | None = None
    permanent: bool = False
    call_limit: int | None = None  # None: the book's default
    calls: list[int] = field(default_factory=list)  # connected calls (epoch s)
    requests: list[int] = field(default_factory=list)  # requests sent (epoch s)


@dataclass(frozen=True)
class PermissionReply:
    """A simulated user's answer to a request, for the server to post as Meta's webhook."""

    message_id: str
    phone_number_id: str
    user_wa_id: str
    accept: bool
    is_permanent: bool
    expiration_timestamp: int | None


class PermissionBook:
    """Every user's permissions; thread-safe (the server answers on a thread per connection)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.users: dict[tuple[str, str], UserPermission] = {}
        self.default_call_limit = DEFAULT_CALL_LIMIT
        self.status_words = {"granted": "granted"}
        """The word the answer uses for a grant (Meta's pages: "granted"; SDKs: "temporary"
        and "permanent"): ``{"granted": "temporary"}`` plays the other form."""
        self.refuse_for_sip: Refusal | None = None
        self.sip_numbers: set[str] = set()
        self.reply_answer: ReplyAnswer = "accept"
        self.on_reply: Callable[[PermissionReply], None] | None = None
        self.sent_messages: list[dict[str, Any]] = []
        self._clock = clock
        self._lock = threading.Lock()

    def now(self) -> int:
        return int(self._clock())

    # ---- test set-up ----------------------------------------------------------------------

    def set_permission(self, phone_number_id: str, user: str, status: str, *,
                       expiration_time: int | None = None, permanent: bool = False) -> None:
        """A user's state: "no_permission", "granted" (temporary unless ``permanent``),
        "expired" (a temporary grant whose time has passed), "pending", "rejected"."""
        with self._lock:
            entry = self._entry(phone_number_id, user)
            entry.status, entry.permanent = status, permanent
            if status == "granted" and not permanent and expiration_time is None:
                expiration_time = self.now() + TEMPORARY_S
            if status == "expired" and expiration_time is None:
                expiration_time = self.now() - 60
            entry.expiration_time = None if permanent else expiration_time

    def set_call_limit(self, phone_number_id: str, user: str, max_allowed: int,
                       used: int = 0) -> None:
        """The ``start_call`` limit for this user (5 or 100...) and how many are used now."""
        with self._lock:
            entry = self._entry(phone_number_id, user)
            entry.call_limit = max_allowed
            entry.calls = [self.now()] * used

    def connected_call(self, phone_number_id: str, user: str) -> None:
        """A connected business-initiated call: counted, and the request counters reset."""
        with self._lock:
            entry = self._entry(phone_number_id, user)
            entry.calls.append(self.now())
            entry.requests.clear()

    def permission(self, phone_number_id: str, user: str) -> UserPermission:
        with self._lock:
            return self._entry(phone_number_id, user)

    def _entry(self, phone_number_id: str, user: str) -> UserPermission:
        return self.users.setdefault((phone_number_id, user), UserPermission())

    # ---- GET /<id>/call_permissions --------------------------------------------------------

    def call_permissions(self, phone_number_id: str, query: dict[str, list[str]]) -> dict[str, Any]:
        user = _user(query)
        if phone_number_id in self.sip_numbers and self.refuse_for_sip is not None:
            raise _sip_refusal(self.refuse_for_sip)
        now = self.now()
        with self._lock:
            entry = self._entry(phone_number_id, user)
            self._expire(entry, now)
            permission: dict[str, Any] = {"status": self._word(entry)}
            if entry.status == "granted" and not entry.permanent and entry.expiration_time:
                permission["expiration_time"] = entry.expiration_time
            granted = entry.status == "granted"
            requests = [_limit(period, allowed, [t for t in entry.requests if now - t < span],
                               span) for period, span, allowed in REQUEST_LIMITS]
            calls = _limit("PT24H", entry.call_limit or self.default_call_limit,
                           [t for t in entry.calls if now - t < DAY_S], DAY_S)
        may_request = not (granted and entry.permanent) and all(
            limit["current_usage"] < limit["max_allowed"] for limit in requests)
        return {
            "messaging_product": "whatsapp",
            "permission": permission,
            "actions": [
                {"action_name": "send_call_permission_request", "can_perform_action": may_request,
                 "limits": requests},
                {"action_name": "start_call",
                 "can_perform_action": granted and calls["current_usage"] < calls["max_allowed"],
                 "limits": [calls]},
            ],
        }

    def _word(self, entry: UserPermission) -> str:
        if entry.status != "granted":
            return entry.status
        word = self.status_words.get("granted", "granted")
        if word == "temporary" and entry.permanent:
            return "permanent"
        return word

    @staticmethod
    def _expire(entry: UserPermission, now: int) -> None:
        if (entry.status == "granted" and not entry.permanent and entry.expiration_time
                and now >= entry.expiration_time):
            entry.status = "expired"

    # ---- POST /<id>/messages (type interactive, call_permission_request) ------------------

    def post_message(self, phone_number_id: str, body: Any) -> dict[str, Any]:
        user, text = _request_fields(body)
        now = self.now()
        with self._lock:
            entry = self._entry(phone_number_id, user)
            self._expire(entry, now)
            if entry.status == "granted" and entry.permanent:
                raise GraphApiError(400, 138017, "(#138017) A permanent call permission already "
                                    "exists for this user")
            for period, span, allowed in REQUEST_LIMITS:
                if len([t for t in entry.requests if now - t < span]) >= allowed:
                    # Meta's code for this is not documented; 131056 is its per-user pair limit
                    raise GraphApiError(400, 131056, f"(#131056) Call permission request limit "
                                        f"reached for this user ({allowed} per {period})")
            entry.requests.append(now)
            if entry.status != "granted":
                entry.status = "pending"
            message_id = "wamid." + secrets.token_hex(12)
            self.sent_messages.append({"phone_number_id": phone_number_id, "to": user,
                                       "text": text, "id": message_id})
            answer = self.reply_answer
        if answer != "none":
            reply = self._answer_request(phone_number_id, user, answer)
            if self.on_reply is not None:
                self.on_reply(reply)
        return {"messaging_product": "whatsapp", "contacts": [{"input": user, "wa_id": user}],
                "messages": [{"id": message_id}]}

    def _answer_request(self, phone_number_id: str, user: str,
                        answer: ReplyAnswer) -> PermissionReply:
        """The user answers: the state changes now, the reply is for the webhook."""
        now = self.now()
        accept = answer != "reject"
        permanent = answer == "accept_permanent"
        expires = None if permanent or not accept else now + TEMPORARY_S
        with self._lock:
            entry = self._entry(phone_number_id, user)
            entry.status = "granted" if accept else "rejected"
            entry.permanent, entry.expiration_time = permanent, expires
        return PermissionReply("wamid." + secrets.token_hex(12), phone_number_id, user, accept,
                               permanent, expires)


def _limit(period: str, max_allowed: int, used: list[int], span: int) -> dict[str, Any]:
    limit: dict[str, Any] = {"time_period": period, "max_allowed": max_allowed,
                             "current_usage": len(used)}
    if len(used) >= max_allowed and used:
        limit["limit_expiration_time"] = sorted(used)[len(used) - max_allowed] + span
    return limit


def _user(query: dict[str, list[str]]) -> str:
    values = query.get("user_wa_id") or query.get("recipient")
    if not values or not values[0]:
        raise invalid_parameter("The parameter user_wa_id is required")
    user = values[0]
    if "user_wa_id" in query and not user.isdigit():
        raise invalid_parameter("Param user_wa_id must be a WhatsApp id (digits)")
    return user


def _sip_refusal(kind: Refusal) -> GraphApiError:
    if kind == "131055":
        return GraphApiError(400, 131055, "(#131055) Method not allowed: calling is configured "
                             "to use SIP for this phone number")
    if kind == "404":
        return GraphApiError(404, 803, "(#803) Some of the aliases you requested do not exist")
    return GraphApiError(400, 100, "Unsupported get request. Object does not support this "
                         "operation", "GraphMethodException", subcode=33)


def _request_fields(body: Any) -> tuple[str, str]:
    """Validate a call_permission_request message as Meta does: (user, body text)."""
    if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
        raise invalid_parameter("messaging_product must be whatsapp")
    user = body.get("to") or body.get("recipient")
    if not isinstance(user, str) or not user:
        raise invalid_parameter("The parameter to is required")
    if "to" in body and not user.isdigit():
        raise invalid_parameter("Param to must be a WhatsApp id (digits)")
    if body.get("type") != "interactive":
        raise invalid_parameter("Only interactive messages are played by the stand-in")
    interactive = body.get("interactive")
    if not isinstance(interactive, dict) or interactive.get("type") != "call_permission_request":
        raise invalid_parameter("interactive.type must be call_permission_request")
    action = interactive.get("action")
    if not isinstance(action, dict) or action.get("name") != "call_permission_request":
        raise invalid_parameter("interactive.action.name must be call_permission_request")
    text = (interactive.get("body") or {}).get("text") if isinstance(interactive.get("body"), dict) else None
    if text is not None and (not isinstance(text, str) or len(text) > 1024):
        raise invalid_parameter("interactive.body.text must be a string of at most 1024 characters")
    return user, text or ""

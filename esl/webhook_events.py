"""What a Meta webhook post says, in our terms: permission replies and call events.

Why a parser of its own, apart from the HTTP service: the body comes from outside (signed, but a
signature proves who sent it, not that every field is what the docs promise), so each field is
checked for type and size here, in plain functions the tests call directly, and anything we do not
use (other message types, statuses, fields Meta adds later) is skipped, never an error.

Only a body that is not a webhook envelope at all is refused (400). One item inside it that we
cannot read (a reply without a phone-number sender since Meta's business-scoped user ids, a value
Meta documents differently later) is skipped and named in ``unreadable``: refusing the whole post
would make Meta retry it for days while the good items beside it wait, and the retry could never
succeed.

Shapes (Meta's WhatsApp Business webhooks): ``{"object": "whatsapp_business_account", "entry":
[{"id": WABA_ID, "changes": [{"field": "messages" | "calls", "value": {"metadata":
{"display_phone_number", "phone_number_id"}, "messages": [...] | "calls": [...]}}]}]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_ID_LENGTH = 256
"""Message ids and wacids are far shorter; a longer one is not Meta's."""


class WebhookPayloadError(Exception):
    """The body is not a webhook post we can read (400): the message says what is wrong."""


@dataclass(frozen=True)
class PermissionReply:
    """A user's answer to a call permission request (``interactive.call_permission_reply``)."""

    message_id: str  # the event id: Meta's retries carry the same one
    phone_number_id: str
    display_phone_number: str | None
    user_wa_id: str
    accepted: bool
    is_permanent: bool
    expiration_timestamp: int | None
    response_source: str | None
    timestamp: int | None


@dataclass(frozen=True)
class CallEvent:
    """A ``calls`` field event (``call_created`` or ``terminate``; no SDP in SIP mode)."""

    wacid: str
    event: str
    phone_number_id: str
    direction: str | None
    status: str | None  # terminate: Meta's "COMPLETED" / "FAILED" (case varies)
    duration_s: int | None
    start_time: int | None
    end_time: int | None
    timestamp: int | None

    @property
    def event_id(self) -> str:
        """A call has one event of each kind: ``wacid`` + event name dedupes Meta's retries."""
        return f"{self.wacid}:{self.event}"


@dataclass(frozen=True)
class WebhookPost:
    permission_replies: tuple[PermissionReply, ...]
    call_events: tuple[CallEvent, ...]
    skipped: int  # changes or items we do not use (other fields, message types)
    unreadable: tuple[str, ...] = ()  # items of ours we could not read: what was wrong with each


def parse_post(body: bytes) -> WebhookPost:
    """Read a signed webhook body; raises WebhookPayloadError when it is not one."""
    try:
        document = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise WebhookPayloadError("body is not UTF-8") from None
    except json.JSONDecodeError as error:
        raise WebhookPayloadError(f"body is not JSON ({error.msg})") from None
    if not isinstance(document, dict) or document.get("object") != "whatsapp_business_account":
        raise WebhookPayloadError("not a whatsapp_business_account webhook post")
    entries = document.get("entry")
    if not isinstance(entries, list):
        raise WebhookPayloadError("entry is not a list")
    replies: list[PermissionReply] = []
    events: list[CallEvent] = []
    unreadable: list[str] = []
    skipped = 0
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        if not isinstance(changes, list):
            raise WebhookPayloadError("entry[].changes is not a list")
        for change in changes:
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                raise WebhookPayloadError("entry[].changes[] has no value object")
            field, value = change.get("field"), change["value"]
            try:
                if field == "messages":
                    skipped += _permission_replies(value, replies, unreadable)
                elif field == "calls":
                    skipped += _call_events(value, events, unreadable)
                else:
                    skipped += 1
            except WebhookPayloadError as error:  # the change as a whole (its metadata)
                unreadable.append(f"{field}: {error}")
    return WebhookPost(tuple(replies), tuple(events), skipped, tuple(unreadable))


def _metadata(value: dict[str, Any]) -> tuple[str, str | None]:
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        raise WebhookPayloadError("value.metadata is missing")
    phone_number_id = _id(metadata.get("phone_number_id"), "metadata.phone_number_id")
    display = metadata.get("display_phone_number")
    return phone_number_id, display if isinstance(display, str) and len(display) < 32 else None


def _permission_replies(value: dict[str, Any], replies: list[PermissionReply],
                        unreadable: list[str]) -> int:
    """Append the change's permission replies; returns how many messages were not ours."""
    messages = value.get("messages")
    if messages is None:
        return 1  # statuses, errors: not ours
    if not isinstance(messages, list):
        raise WebhookPayloadError("value.messages is not a list")
    phone_number_id, display = _metadata(value)
    skipped = 0
    for message in messages:
        interactive = message.get("interactive") if isinstance(message, dict) else None
        if not isinstance(interactive, dict) or interactive.get("type") != "call_permission_reply":
            skipped += 1
            continue
        try:
            replies.append(_permission_reply(message, interactive, phone_number_id, display))
        except WebhookPayloadError as error:
            unreadable.append(f"call_permission_reply: {error}")
    return skipped


def _permission_reply(message: dict[str, Any], interactive: dict[str, Any],
                      phone_number_id: str, display: str | None) -> PermissionReply:
    reply = interactive.get("call_permission_reply")
    if not isinstance(reply, dict):
        raise WebhookPayloadError("call_permission_reply is not an object")
    response = reply.get("response")
    if response not in ("accept", "reject"):
        raise WebhookPayloadError(f"response is {_shown(response)}, not accept or reject")
    return PermissionReply(
        message_id=_id(message.get("id"), "messages[].id"),
        phone_number_id=phone_number_id,
        display_phone_number=display,
        user_wa_id=_digits(message.get("from"), "messages[].from"),
        accepted=response == "accept",
        is_permanent=reply.get("is_permanent") is True,
        expiration_timestamp=_epoch(reply.get("expiration_timestamp")),
        response_source=_word(reply.get("response_source")),
        timestamp=_epoch(message.get("timestamp")),
    )


def _call_events(value: dict[str, Any], events: list[CallEvent], unreadable: list[str]) -> int:
    """Append the change's call events; returns how many calls[] items were not ours."""
    calls = value.get("calls")
    if calls is None:
        return 1
    if not isinstance(calls, list):
        raise WebhookPayloadError("value.calls is not a list")
    phone_number_id, _display = _metadata(value)
    skipped = 0
    for call in calls:
        if not isinstance(call, dict) or call.get("event") not in ("call_created", "terminate"):
            skipped += 1
            continue
        try:
            wacid = _id(call.get("id"), "calls[].id")
        except WebhookPayloadError as error:
            unreadable.append(f"{call['event']}: {error}")
            continue
        events.append(CallEvent(
            wacid=wacid,
            event=str(call["event"]),
            phone_number_id=phone_number_id,
            direction=_word(call.get("direction")),
            status=_status(call.get("status")),
            duration_s=_epoch(call.get("duration")),
            start_time=_epoch(call.get("start_time")),
            end_time=_epoch(call.get("end_time")),
            timestamp=_epoch(call.get("timestamp")),
        ))
    return skipped


def _status(value: object) -> str | None:
    """``terminate``'s status; Meta's reference writes it as a one-item list in places."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return _word(value)


def _shown(value: object) -> str:
    """A value from the post, short enough for a log line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _id(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH \
            or not value.isprintable() or any(c.isspace() for c in value):
        raise WebhookPayloadError(f"{where} is missing or not an id")
    return value


def _digits(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit() or len(value) > 20:
        raise WebhookPayloadError(f"{where} is not a WhatsApp id (digits)")
    return value


def _epoch(value: object) -> int | None:
    """Meta writes times and durations as numbers or numeric strings; anything else is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 10**11:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 11:
        return int(value)
    return None


def _word(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value.isprintable():
        return value
    return None

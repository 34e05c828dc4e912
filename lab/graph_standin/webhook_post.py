"""Meta's webhook posts, as the lab plays them: the JSON Meta sends, signed as Meta signs it.

The shapes follow Meta's WhatsApp Business webhooks (``object: whatsapp_business_account``,
``entry[].changes[].value`` with ``messaging_product``, ``metadata``, ``contacts`` and
``messages`` or ``calls``; ``field`` names which). Signing uses the product's own
``esl.webhook_signature.sign`` so the lab and the receiver cannot drift apart on the algorithm,
while the receiver's check stays the one under test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from esl.webhook_signature import HEADER, sign


def _envelope(field: str, waba_id: str, phone_number_id: str, display_phone_number: str,
              value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{
            "id": waba_id,
            "changes": [{
                "field": field,
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": display_phone_number.lstrip("+"),
                                 "phone_number_id": phone_number_id},
                    **value,
                },
            }],
        }],
    }


def call_permission_reply(*, message_id: str, phone_number_id: str, business_number: str,
                          user_wa_id: str, accept: bool = True, is_permanent: bool = False,
                          expiration_timestamp: int | None = None,
                          response_source: str = "user_action", waba_id: str = "102290129340398",
                          timestamp: int | None = None) -> bytes:
    """The ``messages`` post carrying a user's answer to a call permission request."""
    now = int(time.time()) if timestamp is None else timestamp
    reply: dict[str, Any] = {"response": "accept" if accept else "reject",
                             "is_permanent": is_permanent, "response_source": response_source}
    if accept and not is_permanent:
        reply["expiration_timestamp"] = expiration_timestamp or now + 7 * 24 * 3600
    value = {
        "contacts": [{"profile": {"name": "Lab user"}, "wa_id": user_wa_id}],
        "messages": [{
            "from": user_wa_id,
            "id": message_id,
            "timestamp": str(now),
            "type": "interactive",
            "interactive": {"type": "call_permission_reply", "call_permission_reply": reply},
        }],
    }
    document = _envelope("messages", waba_id, phone_number_id, business_number, value)
    return json.dumps(document, separators=(",", ":")).encode()


def calls_terminate(*, wacid: str, phone_number_id: str, business_number: str, user_wa_id: str,
                    direction: str = "BUSINESS_INITIATED", status: str = "COMPLETED",
                    start_time: int | None = None, duration_s: int | None = None,
                    waba_id: str = "102290129340398") -> bytes:
    """The ``calls`` post Meta sends when a call ends (SIP mode with webhook_delivery ENABLED)."""
    now = int(time.time())
    call: dict[str, Any] = {
        "id": wacid,
        "to": user_wa_id if direction == "BUSINESS_INITIATED" else business_number.lstrip("+"),
        "from": business_number.lstrip("+") if direction == "BUSINESS_INITIATED" else user_wa_id,
        "event": "terminate",
        "direction": direction,
        "timestamp": str(now),
        "status": status,
    }
    if start_time is not None and duration_s is not None:
        call.update(start_time=str(start_time), end_time=str(start_time + duration_s),
                    duration=duration_s)
    value = {"contacts": [{"profile": {"name": "Lab user"}, "wa_id": user_wa_id}], "calls": [call]}
    document = _envelope("calls", waba_id, phone_number_id, business_number, value)
    return json.dumps(document, separators=(",", ":")).encode()


def signed_post(url: str, app_secret: str, body: bytes, *, timeout_s: float = 5.0) -> int:
    """POST ``body`` to the receiver signed with ``app_secret``, as Meta does; the HTTP status."""
    response = httpx.post(url, content=body, timeout=timeout_s,
                          headers={"Content-Type": "application/json", HEADER: sign(body, app_secret)})
    return response.status_code

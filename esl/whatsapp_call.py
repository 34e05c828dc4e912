"""What a user-initiated call is, read from the headers the Kamailio edge forwarded.

The edge passes Meta's ``x-wa-meta-*`` headers through unchanged and adds
``X-WA-Business-Number``, ``X-WA-Tgrp``, ``X-WA-Trunk-Context`` and ``X-WA-Param-<key>`` (other
request-URI user parameters). FreeSWITCH shows each as ``variable_sip_h_<Name>`` with the
casing it received, so names are matched case-insensitively. Payload headers carry text chosen
by whoever built the button or link: they are cleaned (control characters dropped, length
capped) and never placed into FreeSWITCH application arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from esl.event import Event
from esl.offer import OfferedMode, offered_srtp_mode

HEADER_PREFIX = "variable_sip_h_"
BYE_HEADER_PREFIX = "variable_sip_bye_h_"
PAYLOAD_MAX_CHARS = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_payload(value: str | None) -> str | None:
    """Untrusted payload text made safe to store and log."""
    if value is None:
        return None
    return _CONTROL.sub("", value)[:PAYLOAD_MAX_CHARS]


def sip_headers(event: Event, prefix: str = HEADER_PREFIX) -> dict[str, str]:
    """All ``<prefix><Name>`` variables of an event, keyed by lower-cased header name.

    FreeSWITCH writes the ``variable_sip_h_`` prefix itself, always in that case; only the
    SIP header name after it keeps the sender's casing.
    """
    length = len(prefix)
    return {
        name[length:].lower(): value
        for name, value in event.headers.items()
        if name.startswith(prefix)
    }


@dataclass(frozen=True)
class WhatsAppCall:
    """The routing-relevant facts of one user-initiated call."""

    call_uuid: str
    wacid: str | None
    business_number: str | None
    user_number: str | None
    tgrp: str | None = None
    trunk_context: str | None = None
    cta_payload: str | None = None
    deeplink_payload: str | None = None
    request_uri_params: dict[str, str] = field(default_factory=dict)
    meta_headers: dict[str, str] = field(default_factory=dict)
    offer_mode: OfferedMode | None = None  # SRTP key exchange of Meta's SDP offer


def read_whatsapp_call(channel_data: Event) -> WhatsAppCall:
    """Build a :class:`WhatsAppCall` from CHANNEL_DATA (or any event of the channel)."""
    headers = sip_headers(channel_data)
    params = {
        name.removeprefix("x-wa-param-"): value
        for name, value in headers.items()
        if name.startswith("x-wa-param-")
    }
    business = headers.get("x-wa-business-number") or channel_data.get(
        "Caller-Destination-Number"
    )
    user = channel_data.get("Caller-Caller-ID-Number") or channel_data.variable("sip_from_user")
    return WhatsAppCall(
        call_uuid=channel_data.unique_id,
        wacid=headers.get("x-wa-meta-wacid"),
        business_number=business,
        user_number=user,
        tgrp=headers.get("x-wa-tgrp"),
        trunk_context=headers.get("x-wa-trunk-context"),
        cta_payload=clean_payload(headers.get("x-wa-meta-cta-payload")),
        deeplink_payload=clean_payload(headers.get("x-wa-meta-deeplink-payload")),
        request_uri_params=params,
        meta_headers={k: v for k, v in headers.items() if k.startswith("x-wa-meta-")},
        # the profile's inbound-late-negotiation keeps the offer unanswered, and readable here
        offer_mode=offered_srtp_mode(channel_data.variable("switch_r_sdp")),
    )

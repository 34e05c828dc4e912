"""Meta's SIP answers to a business-initiated INVITE, and what each means for the business.

One table serves two sides: the stand-in refuses BICs with these exact status lines, and the
controller turns a failed call's SIP status and phrase into a diagnosis an operator can act on.
Source: the "SIP answers from Meta" table in ``shared/spec/meta-sip.md``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetaError:
    key: str
    status: int
    phrase: str
    diagnosis: str
    phrase_marker: str = ""  # substring that tells apart errors sharing a status


META_ERRORS: tuple[MetaError, ...] = (
    MetaError(
        "asset_not_found",
        400,
        "Asset not found",
        "From number is not a registered WhatsApp business number: correct the number",
        "asset not found",
    ),
    # Before sip_server_mismatch: both phrases hold "does not match".
    MetaError(
        "meta_auth_uri_mismatch",
        403,
        'Proxy auth uri does not match SIP "to" uri',
        "Meta refused the edge's digest answer: its uri is not the To URI (the edge sends "
        "request URI = To = digest uri; a proxy between may rewrite To): report the trace",
        "proxy auth uri",
    ),
    MetaError(
        "sip_server_mismatch",
        403,
        "SIP server sip.example.com from INVITE does not match any SIP server configured "
        "for phone number id [1234567890]",
        "From domain is not the SIP hostname configured for this number: fix From or settings",
        "does not match",
    ),
    MetaError(
        "no_call_permission",
        403,
        "No Approved Call Permission Found",
        "no call permission from this user (or not on WhatsApp / terms not accepted): "
        "request call permission first",
        "call permission",
    ),
    MetaError(
        "app_not_authorized",
        403,
        "The app [1234] configured for SIP server sip.example.com is not authorized",
        "the app configured for SIP lacks whatsapp_business_messaging: reconfigure with the "
        "right app",
        "not authorized",
    ),
    MetaError(
        "daily_limit",
        403,
        "Business Initiated Connected Call Per Day Limit Hit",
        "daily limit of connected business-initiated calls reached: wait",
        "limit hit",
    ),
    MetaError(
        "sdp_validation",
        403,
        "SDP Validation Error",
        "Meta refused the SDP offer (reported intermittent): check SRTP mode and codecs, retry",
        "sdp validation",
    ),
    MetaError(
        "ip_literal",
        404,
        "Not Found",
        "request URI must be +E164@wa.meta.vc, not an IP literal",
    ),
    MetaError(
        "rtp_timeout",
        408,
        "RTP Timeout",
        "no media from the business: send media first and keep RTCP flowing",
    ),
    MetaError(
        "unreachable",
        480,
        "Temporarily Unavailable",
        "user unreachable or did not answer (degrades call permission): try later",
    ),
    MetaError(
        "declined",
        486,
        "Busy Here",
        "user declined the call (degrades call permission): try later",
    ),
    MetaError("cancelled", 487, "Request Terminated", "our CANCEL ended the call before answer"),
    MetaError(
        "reinvite_refused",
        500,
        "Server Internal Error",
        "Meta refuses re-INVITEs: check session timers and hold are off",
    ),
    MetaError("meta_internal", 503, "Service Unavailable", "Meta internal error: retry later"),
)

META_ERRORS_BY_KEY = {error.key: error for error in META_ERRORS}


def diagnose_sip_failure(status: int, phrase: str = "") -> str:
    """The diagnosis for a SIP final status and reason phrase; unknown ones say what was seen."""
    candidates = [error for error in META_ERRORS if error.status == status]
    lowered = phrase.lower()
    for error in candidates:
        if error.phrase_marker and error.phrase_marker in lowered:
            return error.diagnosis
    unmarked = [error for error in candidates if not error.phrase_marker]
    if unmarked:
        return unmarked[0].diagnosis
    return f"Meta answered {status} {phrase}".strip()

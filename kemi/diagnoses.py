"""Why a business-initiated call failed, in a form FreeSWITCH and an operator can act on.

Each of Meta's documented answers (shared/spec/meta-sip.md, "SIP answers from Meta") and each
refusal the edge makes itself gets a stable code plus a one-line cause and fix. The edge adds it
as `X-WA-Diagnosis: <code>; cause="..."; fix="..."` to the reply toward FreeSWITCH and logs it.
The codes of Meta's answers are the keys of esl/meta_errors.py, so the ESL controller and the
edge name a failure the same way; this module is a copy, not an import, because it runs inside
Kamailio with the standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADER = "X-WA-Diagnosis"
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')
MAX_TEXT = 200


@dataclass(frozen=True)
class Diagnosis:
    code: str
    cause: str
    fix: str

    def header_value(self) -> str:
        return f'{self.code}; cause="{_quoted(self.cause)}"; fix="{_quoted(self.fix)}"'

    def header_line(self) -> str:
        return f"{HEADER}: {self.header_value()}\r\n"


def _quoted(text: str) -> str:
    """Text safe inside a quoted header parameter: no quotes, backslashes or control bytes."""
    return _UNSAFE.sub("'", text)[:MAX_TEXT]


@dataclass(frozen=True)
class MetaAnswer:
    status: int
    marker: str  # lowercase text that tells apart answers sharing a status; "" = any
    diagnosis: Diagnosis


META_ANSWERS: tuple[MetaAnswer, ...] = (
    MetaAnswer(400, "asset not found", Diagnosis(
        "asset_not_found", "the From number is not a registered WhatsApp business number",
        "correct the business number (From user) or register it with WhatsApp")),
    MetaAnswer(403, "does not match", Diagnosis(
        "sip_server_mismatch", "the From domain is not the SIP hostname configured for the number",
        "set site.sip_domain to the hostname in the number's SIP settings, or fix the settings")),
    MetaAnswer(403, "call permission", Diagnosis(
        "no_call_permission", "no approved call permission, user not on WhatsApp or terms not "
        "accepted", "ask the user for call permission before calling")),
    MetaAnswer(403, "not authorized", Diagnosis(
        "app_not_authorized", "the app configured for SIP lacks whatsapp_business_messaging",
        "configure SIP with an app that has the permission")),
    MetaAnswer(403, "limit hit", Diagnosis(
        "daily_limit", "the daily cap of connected business-initiated calls is reached",
        "wait until the 24 h window frees up")),
    MetaAnswer(403, "sdp validation", Diagnosis(
        "sdp_validation", "Meta refused the SDP offer (reported intermittent)",
        "check SRTP mode and codecs (OPUS first), then retry")),
    MetaAnswer(404, "", Diagnosis(
        "ip_literal", "Meta found no user: request URI not +E164@wa.meta.vc (an IP literal?)",
        "dial +E164; the edge writes sip:+E164@wa.meta.vc")),
    MetaAnswer(408, "", Diagnosis(
        "rtp_timeout", "no media from the business (RTP timeout)",
        "send media first and keep RTP and RTCP flowing")),
    MetaAnswer(480, "", Diagnosis(
        "unreachable", "the user is unreachable or did not answer (degrades call permission)",
        "try later")),
    MetaAnswer(486, "", Diagnosis(
        "declined", "the user declined the call (degrades call permission)", "try later")),
    MetaAnswer(487, "", Diagnosis(
        "cancelled", "the call was cancelled before an answer", "none needed")),
    MetaAnswer(500, "", Diagnosis(
        "reinvite_refused", "Meta answered 500: it refuses re-INVITEs, otherwise an internal "
        "error", "keep session timers and hold off; retry a new call later")),
    MetaAnswer(503, "", Diagnosis(
        "meta_internal", "Meta internal error", "retry later")),
)

# Meta's answers to the edge's own digest. Only the edge sends one (FreeSWITCH never does), so
# these codes are the edge's, not esl/meta_errors.py's. Looked at before META_ANSWERS, whose 403
# marker "does not match" would otherwise claim Meta's digest-uri refusal.
DIGEST_ANSWERS: tuple[MetaAnswer, ...] = (
    MetaAnswer(403, "proxy auth uri", Diagnosis(
        "meta_auth_uri_mismatch", "Meta refused our digest: its uri does not match the To URI "
        "(403 Proxy auth uri does not match SIP to uri)", "the edge sends request URI = To URI = "
        "digest uri; a proxy between rewrote To, or Meta changed its rule: report the trace")),
)

# Refusals made by the edge itself, by code.
EDGE_DIAGNOSES: dict[str, Diagnosis] = {d.code: d for d in (
    Diagnosis("untrusted_source", "the INVITE came from an address that may not originate calls",
              "list the node in freeswitch.sets or bic.trusted_sources"),
    Diagnosis("bic_disabled", "business-initiated calls are turned off on this edge",
              "set bic.enabled = true"),
    Diagnosis("sips_uri", "a sips: request URI (Meta answers 404)",
              "dial sip:+E164; the edge adds transport=tls"),
    Diagnosis("ip_literal", "an IP literal in the request URI (Meta answers 404)",
              "dial +E164; the edge writes sip:+E164@wa.meta.vc"),
    Diagnosis("not_meta_host", "the request URI host is neither the edge nor wa.meta.vc",
              "send WhatsApp calls to the edge with the number as user"),
    Diagnosis("bad_request_uri", "the request URI cannot be parsed", "dial sip:+E164@<edge>"),
    Diagnosis("bad_number", "the dialled user is not a phone number in international form",
              "dial the country code and number, e.g. +15551234567"),
    Diagnosis("from_not_configured", "the From user is not a configured business number",
              "send the business number as caller id, or add it to [[numbers]]"),
    Diagnosis("sip_server_mismatch", "the From domain fails Meta's rule for the SIP hostname",
              "use site.sip_domain (or a parent domain of it) as From domain"),
    Diagnosis("no_meta_credentials", "no SIP password for the business number in the store",
              "run provision sync"),
    Diagnosis("meta_certificate_mismatch", "the peer's TLS certificate does not name wa.meta.vc; "
              "no digest was sent", "check DNS and bic.meta_server: something else answers"),
    Diagnosis("meta_auth_rejected", "Meta challenged again after our digest: the SIP password "
              "is wrong or was reset", "run provision sync to fetch the current SIP password"),
    Diagnosis("meta_auth_failed", "Meta's challenge could not be answered: no qop=auth "
              "challenge in an algorithm the edge holds an HA1 for (SHA-256 or MD5)",
              "see the edge log for the challenges Meta offered; run provision sync to write "
              "the SHA-256 HA1"),
    Diagnosis("meta_unreachable", "no answer from Meta's SIP server", "check bic.meta_server, "
              "DNS, the firewall toward port 5061 and the CA bundle"),
    Diagnosis("rtpengine_unreachable", "rtpengine did not take the call's media (no answer on "
              "its control socket, or it refused the SDP); the call was not sent on without "
              "media", "check that rtpengine runs and media.rtpengine.ng_listen matches it "
              "(provision doctor pings it)"),
    Diagnosis("no_common_codec", "the business's offer has no codec Meta takes for this number "
              "(Opus, or PCMU/PCMA when enabled at Meta)", "offer OPUS from FreeSWITCH (its "
              "gateway's codec string), or enable G.711 on the number and in additional_codecs"),
    Diagnosis("reinvite_refused", "Meta refuses re-INVITE and UPDATE; the session is unchanged",
              "keep session timers and hold off toward WhatsApp"),
    Diagnosis("refer_unsupported", "WhatsApp calls cannot be transferred with REFER",
              "transfer inside FreeSWITCH (bridge) instead"),
)}


def edge_diagnosis(code: str) -> Diagnosis:
    return EDGE_DIAGNOSES[code]


def diagnose_meta_answer(status: int, reason: str) -> Diagnosis:
    """Meta's final answer as a diagnosis; an undocumented one keeps its own text as the cause."""
    lowered = reason.lower()
    candidates = [a for a in DIGEST_ANSWERS + META_ANSWERS if a.status == status]
    for answer in candidates:
        if answer.marker and answer.marker in lowered:
            return answer.diagnosis
    for answer in candidates:
        if not answer.marker:
            return answer.diagnosis
    return Diagnosis("meta_other", f"Meta answered {status} {reason}".strip(),
                     "see Meta's Calling troubleshooting page for this answer")

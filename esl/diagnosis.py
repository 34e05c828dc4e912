"""One sentence per finished call saying why it ended, in terms an operator can act on."""

from __future__ import annotations

import re

from esl.meta_errors import diagnose_sip_failure

EDGE_DIAGNOSIS_HEADER = "X-WA-Diagnosis"
"""The Kamailio edge's verdict on a refused BIC: ``<code>; cause="..."; fix="..."``.

Sofia keeps X- headers of a final response as ``sip_rh_<Name>`` on the leg (status > 199), so
the hangup event of a refused originate carries it as ``variable_sip_rh_X-WA-Diagnosis``.
"""
_EDGE_CODE = re.compile(r"^\s*([a-z0-9_]{1,64})\s*(?:;|$)")
_EDGE_PARAM = re.compile(r'(cause|fix)="([^"]*)"')

def srtp_mismatch_code(offered: str, number_mode: str) -> str:
    """``wa_diagnosis`` of a UIC whose offer's SRTP mode is not the number's."""
    return f"srtp_offer_{offered.lower()}_number_{number_mode.lower()}"


CONTROLLER_DIAGNOSES = {
    "unknown_business_number": "business number is not configured in [esl.numbers]: add it "
    "with its srtp_mode",
    "no_route": "no route matched this call: add a route (or a catch-all) in [esl.routes]",
    "controller_error": "the controller failed while setting the call up: see its log",
}
"""Codes the controller stores in ``wa_diagnosis`` before it hangs up a call itself."""

_OFFERED = {"SDES": "SDES (RTP/SAVP with a=crypto)",
            "DTLS": "DTLS-SRTP (UDP/TLS/RTP/SAVPF with a=fingerprint)",
            "RTP": "plain RTP (no SRTP at all)"}
for _offer, _what in _OFFERED.items():
    for _number in ("SDES", "DTLS", "RTP"):
        if _offer != _number:
            CONTROLLER_DIAGNOSES[srtp_mismatch_code(_offer, _number)] = (
                f"SRTP mode mismatch: Meta offered {_what} but the number's srtp_mode here is "
                f"{_number}; refused with 488. Set srtp_mode in [[numbers]] to the number's "
                "srtp_key_exchange_protocol at Meta (or change it there)")


DTLS_FAILED = (
    "DTLS-SRTP failed: FreeSWITCH ended the call when the DTLS handshake with WhatsApp's media "
    "server failed, before any SRTP key (no audio either way). Most often the certificate Meta "
    "presented does not match the a=fingerprint of its SDP (FreeSWITCH logs 'Fingerprint "
    "Verification Failed'): check that nothing between Meta and FreeSWITCH rewrites the SDP; "
    "otherwise FreeSWITCH's log names the handshake error")


def edge_diagnosis(value: str | None) -> str | None:
    """``code: cause; fix: ...`` from the edge's header, or None when absent or malformed."""
    if not value:
        return None
    match = _EDGE_CODE.match(value)
    if match is None:
        return None
    params = dict(_EDGE_PARAM.findall(value))
    text = match.group(1)
    if params.get("cause"):
        text += f": {params['cause']}"
    if params.get("fix"):
        text += f"; fix: {params['fix']}"
    return text


def diagnose(
    *,
    direction: str,
    hangup_cause: str,
    sip_status: int | None,
    sip_phrase: str,
    disposition: str,
    answered: bool,
    controller_code: str | None = None,
    edge_header: str | None = None,
    dtls_failed: bool = False,
) -> str:
    if controller_code:
        return CONTROLLER_DIAGNOSES.get(controller_code, controller_code)
    if dtls_failed:
        return DTLS_FAILED
    from_edge = edge_diagnosis(edge_header) if direction == "bic" and not answered else None
    if from_edge:
        return from_edge  # the edge saw Meta's answer (or refused itself): its words win
    if hangup_cause == "MEDIA_TIMEOUT":
        return (
            "no media arrived within the media timeout; FreeSWITCH ended the call before Meta "
            "would: check the number's SRTP mode matches Meta's, the DTLS role and the "
            "candidate ACL"
        )
    if not answered and direction == "uic" and hangup_cause == "ORIGINATOR_CANCEL":
        return "the caller hung up before the call was answered"
    if not answered and direction == "bic" and sip_status is not None and sip_status >= 300:
        # Meta's answer to our INVITE; on a UIC the SIP status is our own answer to Meta
        return diagnose_sip_failure(sip_status, sip_phrase)
    if answered and hangup_cause == "NORMAL_CLEARING":
        if disposition.startswith("recv_"):
            return "the WhatsApp side hung up (BYE from Meta)"
        return "the business side hung up"
    if not answered and direction == "bic":
        return f"not answered: {hangup_cause}"
    return hangup_cause or "unknown"

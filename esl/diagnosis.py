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

CONTROLLER_DIAGNOSES = {
    "unknown_business_number": "business number is not configured in [esl.numbers]: add it "
    "with its srtp_mode",
    "no_route": "no route matched this call: add a route (or a catch-all) in [esl.routes]",
    "controller_error": "the controller failed while setting the call up: see its log",
}
"""Codes the controller stores in ``wa_diagnosis`` before it hangs up a call itself."""


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
) -> str:
    if controller_code:
        return CONTROLLER_DIAGNOSES.get(controller_code, controller_code)
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

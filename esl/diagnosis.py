"""One sentence per finished call saying why it ended, in terms an operator can act on."""

from __future__ import annotations

from esl.meta_errors import diagnose_sip_failure

CONTROLLER_DIAGNOSES = {
    "unknown_business_number": "business number is not configured in [esl.numbers]: add it "
    "with its srtp_mode",
    "no_route": "no route matched this call: add a route (or a catch-all) in [esl.routes]",
    "controller_error": "the controller failed while setting the call up: see its log",
}
"""Codes the controller stores in ``wa_diagnosis`` before it hangs up a call itself."""


def diagnose(
    *,
    direction: str,
    hangup_cause: str,
    sip_status: int | None,
    sip_phrase: str,
    disposition: str,
    answered: bool,
    controller_code: str | None = None,
) -> str:
    if controller_code:
        return CONTROLLER_DIAGNOSES.get(controller_code, controller_code)
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

"""A finished call's outcome as one short code from a closed set: the metrics' label value.

The CDR keeps a sentence per call (esl/diagnosis.py) for people; Prometheus needs a label whose
values are few and known in advance, or every new wording, SIP phrase or header value would
create a new time series. So the code is chosen only from known names: the controller's own
codes, the edge's codes (``kemi/diagnoses.py``, read by the same names), Meta's answers
(``esl/meta_errors.py``), and a handful of ends of our own. Anything else is ``other``.
"""

from __future__ import annotations

import re

from esl.diagnosis import CONTROLLER_DIAGNOSES, EDGE_DIAGNOSIS_HEADER
from esl.event import Event
from esl.meta_errors import META_ERRORS
from kemi.diagnoses import DIGEST_ANSWERS, EDGE_DIAGNOSES, META_ANSWERS

ANSWERED = "answered"
OWN_ENDS = ("caller_cancel", "not_answered", "socket_lost", "other")
"""Ends the controller names itself: the caller hung up before answer (UIC), any other
unanswered end without a better name, the call socket closed before FreeSWITCH said how the
call ended, and a name outside every known set."""

KNOWN_CODES = frozenset(
    (ANSWERED, *OWN_ENDS, *CONTROLLER_DIAGNOSES, *EDGE_DIAGNOSES, "meta_other",
     *(answer.diagnosis.code for answer in META_ANSWERS + DIGEST_ANSWERS),
     *(error.key for error in META_ERRORS))
)
"""Every value the ``outcome`` / ``diagnosis`` labels can take."""

_EDGE_CODE = re.compile(r"^\s*([a-z0-9_]{1,64})\s*(?:;|$)")


def bounded(code: str) -> str:
    """``code`` itself when it is a known name, else ``other``."""
    return code if code in KNOWN_CODES else "other"


def meta_error_key(status: int, phrase: str) -> str:
    """The key of Meta's answer ``status phrase`` (esl/meta_errors.py's choice), or meta_other."""
    candidates = [error for error in META_ERRORS if error.status == status]
    lowered = phrase.lower()
    for error in candidates:
        if error.phrase_marker and error.phrase_marker in lowered:
            return error.key
    for error in candidates:
        if not error.phrase_marker:
            return error.key
    return "meta_other"


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def outcome_code(event: Event) -> str:
    """``answered``, or why not, from a call's CHANNEL_HANGUP_COMPLETE event (bounded)."""
    answered_us = event.get("Caller-Channel-Answered-Time")
    if answered_us and answered_us != "0":
        return ANSWERED
    controller_code = event.variable("wa_diagnosis")
    if controller_code:
        return bounded(controller_code)
    direction = event.variable("wa_direction") or (
        "uic" if event.get("Call-Direction") == "inbound" else "bic")
    cause = event.get("Hangup-Cause") or event.variable("hangup_cause") or ""
    if direction == "uic":
        return "caller_cancel" if cause == "ORIGINATOR_CANCEL" else "not_answered"
    edge = _EDGE_CODE.match(event.variable("sip_rh_" + EDGE_DIAGNOSIS_HEADER) or "")
    if edge is not None:
        return bounded(edge.group(1))
    status = _int(event.variable("sip_invite_failure_status") or event.variable("sip_term_status"))
    if status is not None and status >= 300:
        return meta_error_key(status, event.variable("sip_invite_failure_phrase") or "")
    return "not_answered"

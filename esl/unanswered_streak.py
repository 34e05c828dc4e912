"""Consecutive unanswered business-initiated calls to one user, counted from the CDRs.

WhatsApp nudges a user to revoke a business's call permission after 2 unanswered calls in a
row and revokes it after 4 (rejections count as unanswered; meta-sip.md "Calling
permissions"). Meta tells the business nothing when that happens, so the count is ours: the
newest BICs from the number to the user, back to the first one answered. Only calls that rang
the user count (Meta's 480/486/487/603/408 or FreeSWITCH's no-answer causes): a call Meta
refused for another reason (403, 503), or one pre-flight refused, never reached the phone.

A permission the user granted after those calls (Meta's reply, stored by the webhook) starts
the count afresh: the user said yes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from esl.cdr import CallRecord, CdrStore

RANG_STATUSES = frozenset({408, 480, 486, 487, 603})
"""Meta's answers to a BIC that rang the user: no answer, declined, cancelled by us."""
RANG_CAUSES = frozenset({"NO_ANSWER", "USER_BUSY", "CALL_REJECTED", "NO_USER_RESPONSE",
                         "ORIGINATOR_CANCEL", "ALLOTTED_TIMEOUT"})
HISTORY = 20


@dataclass(frozen=True)
class Streak:
    count: int  # unanswered calls in a row, newest first
    last_at: str | None  # invite time of the newest of them


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def rang_unanswered(record: CallRecord) -> bool:
    """The call rang the user, who did not answer (or declined)."""
    if record.answer_at or record.state != "ended":
        return False
    return record.sip_status in RANG_STATUSES or (
        record.sip_status is None and (record.hangup_cause or "") in RANG_CAUSES)


def unanswered_streak(store: CdrStore, business_number: str, user_number: str, *,
                      since: float | None = None) -> Streak:
    """Unanswered BICs in a row, newest first, stopping at an answered one or at ``since``
    (epoch seconds: a permission granted then resets the count)."""
    count = 0
    last_at: str | None = None
    for record in store.bic_history(business_number, user_number, limit=HISTORY):
        at = _epoch(record.invite_at)
        if since is not None and at is not None and at < since:
            break
        if record.answer_at:
            break
        if rang_unanswered(record):
            count += 1
            last_at = last_at or record.invite_at
    return Streak(count, last_at)

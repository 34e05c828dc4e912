"""Meta's own account of each call (``calls`` webhooks), kept beside our CDRs and compared.

Why keep Meta's events in a table of their own instead of writing them into the CDR row: the
``terminate`` post may arrive before FreeSWITCH's hangup has produced our record, or after, or for
a call we never saw (it failed at Meta). Keyed by wacid, the event waits in its table and the
comparison happens when a call is looked at, so both orders reconcile the same way and nothing
is dropped for arriving early. A call has one event of each kind: a retried post is kept once.
"""

from __future__ import annotations

from dataclasses import dataclass

from esl.cdr import CallRecord, epoch_iso
from esl.database import Location, open_database
from esl.webhook_events import CallEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta_call_event (
    wacid TEXT NOT NULL,
    event TEXT NOT NULL,
    phone_number_id TEXT NOT NULL,
    direction TEXT,
    status TEXT,
    duration_s BIGINT,
    start_time BIGINT,
    end_time BIGINT,
    timestamp BIGINT,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (wacid, event)
);
"""
_FIELDS = ("wacid", "event", "phone_number_id", "direction", "status", "duration_s",
           "start_time", "end_time", "timestamp")


class MetaCallEventStore:
    """The ``meta_call_event`` table in the CDR database (same database, its own connection)."""

    def __init__(self, path: Location) -> None:
        self._db = open_database(path, application="wa-esl webhook")
        self._db.create_schema(_SCHEMA)
        self._cdr_table = False

    def record(self, event: CallEvent, received_at: int) -> bool:
        """Store the event (committed on return); ``False`` when this wacid's event was known."""
        values = [getattr(event, name) for name in _FIELDS]
        result = self._db.execute(
            f"INSERT INTO meta_call_event ({', '.join(_FIELDS)}, received_at) "
            f"VALUES ({', '.join('?' * (len(_FIELDS) + 1))}) ON CONFLICT DO NOTHING",
            (*values, received_at))
        if result.rowcount == 1 and event.event == "terminate" and event.end_time:
            self._end_lost_call(event.wacid, event.end_time)
        return result.rowcount == 1

    def _end_lost_call(self, wacid: str, end_time: int) -> None:
        """A call closed 'lost' (its media node died, esl/cdr.py) gets its end from Meta:
        nobody else saw it end. Any other record keeps its own end."""
        self._cdr_table = self._cdr_table or self._db.has_table("cdr")
        if self._cdr_table:
            self._db.execute("UPDATE cdr SET end_at = COALESCE(end_at, ?) "
                             "WHERE wacid = ? AND state = 'lost'", (epoch_iso(end_time), wacid))

    def for_wacid(self, wacid: str) -> list[CallEvent]:
        result = self._db.execute(
            f"SELECT {', '.join(_FIELDS)} FROM meta_call_event WHERE wacid = ? ORDER BY timestamp",
            (wacid,))
        return [CallEvent(*row) for row in result.rows]

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class Reconciliation:
    """Meta's ``terminate`` beside our CDR: what each says, and where they disagree."""

    wacid: str
    meta_status: str | None
    meta_duration_s: int | None
    our_answered: bool | None
    our_duration_s: float | None
    mismatches: tuple[str, ...]
    cdr: bool = True  # False: Meta's event names a wacid no CDR of ours has


def reconcile(record: CallRecord, events: list[CallEvent], tolerance_s: int) -> Reconciliation | None:
    """Compare Meta's terminate event with our record; ``None`` when Meta sent none (yet)."""
    terminate = next((e for e in events if e.event == "terminate"), None)
    if terminate is None or record.wacid is None:
        return None
    # An ended record knows; one still active, missed or lost (its end never seen) knows only
    # an answer it saw: without one, whether it was answered is unknown, not "no".
    answered = record.answer_at is not None if record.state == "ended" else (
        True if record.answer_at is not None else None)
    ours = record.fs_duration_s
    problems = []
    meta_completed = (terminate.status or "").upper() == "COMPLETED"
    if answered is not None and terminate.status is not None and meta_completed != answered:
        problems.append(
            f"Meta says {terminate.status} but our CDR says "
            f"{'answered' if answered else 'not answered'}")
    if answered and terminate.duration_s is not None and ours is not None \
            and abs(terminate.duration_s - ours) > tolerance_s:
        problems.append(
            f"Meta's duration {terminate.duration_s} s vs ours {ours:.0f} s "
            f"(more than {tolerance_s} s apart)")
    return Reconciliation(record.wacid, terminate.status, terminate.duration_s, answered, ours,
                          tuple(problems))


def without_cdr(wacid: str, events: list[CallEvent]) -> Reconciliation | None:
    """Meta's terminate for a wacid we have no CDR of (it failed at Meta, or ours is not written).

    A failed call that never reached us is no disagreement; a call Meta says COMPLETED (and
    bills) that we have no record of is one.
    """
    terminate = next((e for e in events if e.event == "terminate"), None)
    if terminate is None:
        return None
    completed = (terminate.status or "").upper() == "COMPLETED"
    problems = (f"Meta says {terminate.status} but we have no CDR of this call",) if completed \
        else ()
    return Reconciliation(wacid, terminate.status, terminate.duration_s, None, None, problems,
                          cdr=False)

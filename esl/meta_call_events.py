"""Meta's own account of each call (``calls`` webhooks), kept beside our CDRs and compared.

Why keep Meta's events in a table of their own instead of writing them into the CDR row: the
``terminate`` post may arrive before FreeSWITCH's hangup has produced our record, or after, or for
a call we never saw (it failed at Meta). Keyed by wacid, the event waits in its table and the
comparison happens when a call is looked at, so both orders reconcile the same way and nothing
is dropped for arriving early. A call has one event of each kind: a retried post is kept once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from esl.call_permissions import BUSY_TIMEOUT_MS
from esl.cdr import CallRecord
from esl.webhook_events import CallEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta_call_event (
    wacid TEXT NOT NULL,
    event TEXT NOT NULL,
    phone_number_id TEXT NOT NULL,
    direction TEXT,
    status TEXT,
    duration_s INTEGER,
    start_time INTEGER,
    end_time INTEGER,
    timestamp INTEGER,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (wacid, event)
);
"""
_FIELDS = ("wacid", "event", "phone_number_id", "direction", "status", "duration_s",
           "start_time", "end_time", "timestamp")


class MetaCallEventStore:
    """The ``meta_call_event`` table in the CDR database (same file, its own connection)."""

    def __init__(self, path: Path) -> None:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, event: CallEvent, received_at: int) -> bool:
        """Store the event (committed on return); ``False`` when this wacid's event was known."""
        values = [getattr(event, name) for name in _FIELDS]
        cursor = self._db.execute(
            f"INSERT OR IGNORE INTO meta_call_event ({', '.join(_FIELDS)}, received_at) "
            f"VALUES ({', '.join('?' * (len(_FIELDS) + 1))})", (*values, received_at))
        return cursor.rowcount == 1

    def for_wacid(self, wacid: str) -> list[CallEvent]:
        cursor = self._db.execute(
            f"SELECT {', '.join(_FIELDS)} FROM meta_call_event WHERE wacid = ? ORDER BY timestamp",
            (wacid,))
        return [CallEvent(*row) for row in cursor.fetchall()]

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
    answered = record.answer_at is not None if record.state != "active" else None
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

"""Call permission requests the business sent, kept beside the CDRs for wa-esl's metrics.

Why a table: requests are sent by ``provision permission request``, a short-lived command with
no metrics endpoint, while the long-running ``wa-esl`` has one. So the command records each
request it sent here (the CDR database, ``[esl] cdr_db``) and ``wa-esl`` exports the count read
from the file at scrape time (esl/prometheus.py): the figure survives restarts of either side,
counts requests sent from any shell on the host, and needs no push gateway. Beside it, the
replies Meta posted (``call_permission_event``, written by the webhook receiver through
esl/call_permissions.py) are counted the same way, so requests and replies are read together.

Keyed by Meta's message id (``wamid...``): recording the same request twice counts it once.
"""

from __future__ import annotations

from pathlib import Path

from esl.database import Location, open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS permission_request (
    message_id TEXT PRIMARY KEY,
    business_number TEXT NOT NULL,
    user_wa_id TEXT NOT NULL,
    sent_at BIGINT NOT NULL
);
"""


class PermissionRequestLog:
    """The ``permission_request`` table; the file and table are created when missing."""

    def __init__(self, path: Location) -> None:
        self.path = path
        if isinstance(path, Path) and not path.parent.exists():
            raise FileNotFoundError(f"no directory {path.parent} for the CDR database")
        self._db = open_database(path, application="wa-sip permission requests")
        self._db.create_schema(_SCHEMA)

    def record(self, message_id: str, business_number: str, user_wa_id: str,
               sent_at: int) -> bool:
        """Store one sent request (committed on return); ``False`` when it was stored already."""
        result = self._db.execute(
            "INSERT INTO permission_request (message_id, business_number, user_wa_id, sent_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (message_id, business_number, user_wa_id, sent_at))
        return result.rowcount == 1

    def last_sent(self, business_number: str, user_wa_id: str) -> int | None:
        """When the newest request to this user from this number was sent (epoch s), or None."""
        rows = self._db.execute(
            "SELECT MAX(sent_at) FROM permission_request WHERE business_number = ? AND "
            "user_wa_id = ?", (business_number, user_wa_id)).rows
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def close(self) -> None:
        self._db.close()


def permission_counts(path: Location) -> tuple[int, int]:
    """(requests sent, replies received) as stored in the database at ``path``.

    Read-only (a scrape must never create or change the file, nor any table); a table not
    created yet counts 0. Raises ``sqlite3.Error`` (PostgreSQL: ``DatabaseError``, one of them)
    when the database cannot be read at all.
    """
    db = open_database(path, application="wa-esl metrics", read_only=True)
    try:
        counts = []
        for table in ("permission_request", "call_permission_event"):
            counts.append(int(db.execute(f"SELECT COUNT(*) FROM {table}").rows[0][0])
                          if db.has_table(table) else 0)
    finally:
        db.close()
    return counts[0], counts[1]

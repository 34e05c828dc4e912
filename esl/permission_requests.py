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

import sqlite3
from pathlib import Path

from esl.call_permissions import BUSY_TIMEOUT_MS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS permission_request (
    message_id TEXT PRIMARY KEY,
    business_number TEXT NOT NULL,
    user_wa_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL
);
"""


class PermissionRequestLog:
    """The ``permission_request`` table; the file and table are created when missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def record(self, message_id: str, business_number: str, user_wa_id: str,
               sent_at: int) -> bool:
        """Store one sent request (committed on return); ``False`` when it was stored already."""
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO permission_request (message_id, business_number, user_wa_id, "
            "sent_at) VALUES (?, ?, ?, ?)", (message_id, business_number, user_wa_id, sent_at))
        return cursor.rowcount == 1

    def last_sent(self, business_number: str, user_wa_id: str) -> int | None:
        """When the newest request to this user from this number was sent (epoch s), or None."""
        row = self._db.execute(
            "SELECT MAX(sent_at) FROM permission_request WHERE business_number = ? AND "
            "user_wa_id = ?", (business_number, user_wa_id)).fetchone()
        return row[0] if row and row[0] is not None else None

    def close(self) -> None:
        self._db.close()


def permission_counts(path: Path) -> tuple[int, int]:
    """(requests sent, replies received) as stored in the database at ``path``.

    Read-only (a scrape must never create or change the file); a table not created yet counts
    0. Raises ``sqlite3.Error`` when the file cannot be read at all.
    """
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                         timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        tables = {name for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        sent = (db.execute("SELECT COUNT(*) FROM permission_request").fetchone()[0]
                if "permission_request" in tables else 0)
        replies = (db.execute("SELECT COUNT(*) FROM call_permission_event").fetchone()[0]
                   if "call_permission_event" in tables else 0)
    finally:
        db.close()
    return int(sent), int(replies)

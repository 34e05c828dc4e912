"""What the business knows of each user's call permission, kept beside the CDRs.

Why a table of its own in the CDR database: a permission reaches us two ways, on Meta's
``messages`` webhook (``call_permission_reply``) and from a Graph ``call_permissions`` lookup, and
pre-flight must use the newest of either before it spends a Graph request. The webhook receiver
and the controller are separate processes writing the same SQLite file, so every connection waits
on a lock (``busy_timeout``) instead of failing, and a row is committed before its writer answers
(Meta retries a webhook that did not get a 2xx, so nothing is lost when the file is briefly busy).

Meta retries the same webhook post: ``record`` takes the message id as ``event_id`` and says
``False`` when it has been stored already, so a retry never counts twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from esl.database import BUSY_TIMEOUT_MS, Location, open_database

__all__ = ["BUSY_TIMEOUT_MS", "CallPermission", "CallPermissionStore", "PermissionStoreError"]

STATUSES = frozenset({"granted", "rejected", "expired", "no_permission", "pending"})
"""Meta's words for a permission's state (``permission.status`` and the reply's outcome)."""

SOURCES = frozenset({"webhook", "graph"})


class PermissionStoreError(Exception):
    """A permission that cannot be stored as given (bad status or source)."""


@dataclass(frozen=True)
class CallPermission:
    business_number: str  # +E164 of the business number
    user_wa_id: str  # the user's WhatsApp id (digits)
    status: str  # one of STATUSES
    expiration_time: int | None  # epoch seconds; None when permanent (or unknown)
    is_permanent: bool
    response_source: str | None  # "user_action" | "automatic" | None
    source: str  # "webhook" | "graph"
    recorded_at: int  # epoch seconds

    def usable(self, now: int) -> bool:
        """Granted and not yet expired at ``now`` (Meta sends no webhook when one expires)."""
        if self.status != "granted":
            return False
        if self.is_permanent:
            return True
        return self.expiration_time is None or now < self.expiration_time


FIELDS = tuple(field.name for field in dataclasses.fields(CallPermission))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS call_permission (
    business_number TEXT NOT NULL,
    user_wa_id TEXT NOT NULL,
    {", ".join(f"{name} {kind}" for name, kind in (
        ("status", "TEXT NOT NULL"), ("expiration_time", "BIGINT"),
        ("is_permanent", "BIGINT NOT NULL"), ("response_source", "TEXT"),
        ("source", "TEXT NOT NULL"), ("recorded_at", "BIGINT NOT NULL"),
    ))},
    PRIMARY KEY (business_number, user_wa_id)
);
CREATE TABLE IF NOT EXISTS call_permission_event (
    event_id TEXT PRIMARY KEY,
    recorded_at BIGINT NOT NULL
);
"""
_COLUMNS = ", ".join(FIELDS)
_UPSERT = (
    f"INSERT INTO call_permission ({_COLUMNS}) VALUES ({', '.join(':' + n for n in FIELDS)}) "
    "ON CONFLICT(business_number, user_wa_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in FIELDS[2:])
    # An older answer (a slow Graph lookup, a retried webhook) never replaces a newer one.
    + " WHERE excluded.recorded_at >= call_permission.recorded_at"
)


class CallPermissionStore:
    """The ``call_permission`` table in the CDR database (SQLite or PostgreSQL); one
    connection per process."""

    def __init__(self, path: Location, *, defer: bool = False) -> None:
        """``defer``: a PostgreSQL database unreachable now does not fail the open; its table
        is created once it answers, and reads until then raise DatabaseUnreachable (wa-esl's
        pre-flight, started during a database outage)."""
        self.path = path
        self._db = open_database(path, defer=defer)
        self._db.create_schema(_SCHEMA)

    def record(self, permission: CallPermission, *, event_id: str | None = None) -> bool:
        """Store ``permission``; committed on return. ``False`` when ``event_id`` was seen.

        The event id and the permission are written in one transaction, so a crash between them
        cannot mark a retry as seen while its permission is lost. Raises ``sqlite3.Error`` when
        the database cannot be written (the caller answers 5xx and Meta retries; a
        PostgreSQL fault is ``esl.database.DatabaseError``, one of them).
        """
        if permission.status not in STATUSES:
            raise PermissionStoreError(f"unknown permission status {permission.status!r}")
        if permission.source not in SOURCES:
            raise PermissionStoreError(f"unknown permission source {permission.source!r}")
        values = {name: getattr(permission, name) for name in FIELDS}
        values["is_permanent"] = int(permission.is_permanent)
        with self._db.transaction():
            if event_id is not None:
                seen = self._db.execute(
                    "INSERT INTO call_permission_event (event_id, recorded_at) VALUES (?, ?) "
                    "ON CONFLICT DO NOTHING", (event_id, permission.recorded_at))
                if seen.rowcount == 0:
                    return False  # nothing else was written: the commit changes nothing
            self._db.execute(_UPSERT, values)
        return True

    def current(self, business_number: str, user_wa_id: str) -> CallPermission | None:
        """The newest permission known for this user and number, or ``None``."""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM call_permission WHERE business_number = ? AND user_wa_id = ?",
            (business_number, user_wa_id)).rows
        if not rows:
            return None
        values = dict(zip(FIELDS, rows[0], strict=True))
        values["is_permanent"] = bool(values["is_permanent"])
        return CallPermission(**values)

    def close(self) -> None:
        self._db.close()

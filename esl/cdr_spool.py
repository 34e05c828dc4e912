"""CDR writes the shared PostgreSQL database did not take, kept on the media node until it does.

Why a spool: with ``[esl] cdr_db`` on PostgreSQL the database is another machine; while it is
unreachable (stopped, restarting, cut off) calls go on, and their CDR writes must neither
break the call's handler nor be lost. Each write the database refused as unreachable
(esl.database.DatabaseUnreachable) is appended here, and every later one too until the spool
is empty again, so the database receives them in the order they were made.

Why replaying is safe: a write is the CDR upsert's parameters as the store made them (node
filled in, an active call's state NULL), and the upsert merges (``COALESCE``: what another
writer knew is kept). Writes replayed in order, even twice after a crash between the
database's commit and the spool's delete, leave the row as if the database had never been
away; a hangup written late still wins over another node's ``lost`` or this node's
``missed`` closing (their state and diagnosis are replaced by the hangup's).

A SQLite file of its own (``[esl] cdr_spool``, made 0600: CDRs hold phone numbers),
``synchronous=FULL``: an appended write is on disk before the call's handler goes on, so a
crash or a power cut of the node loses nothing spooled. Bounded (``cdr_spool_max_records``):
a full spool takes no more writes (the store counts and reports each one dropped) rather than
filling the node's disk.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from esl.database import SqliteDatabase

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cdr_write (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_uuid TEXT NOT NULL,
    spooled_at REAL NOT NULL,
    params TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class SpooledWrite:
    seq: int
    call_uuid: str
    params: dict[str, object]


class CdrSpoolError(Exception):
    """The spool file cannot be opened (the message names it and why)."""


class CdrSpool:
    """The spool file, one per media node; used from the controller's event loop thread only."""

    def __init__(self, path: Path, *, max_records: int) -> None:
        self.path = path
        self.max_records = max_records
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600, exist_ok=True)  # CDRs hold numbers: the node's own, unshared
            self._db = SqliteDatabase(path)
            self._db.execute("PRAGMA synchronous=FULL")  # each append on disk before we go on
            self._db.create_schema(_SCHEMA)
            self._count = int(self._db.execute("SELECT count(*) FROM cdr_write").rows[0][0])
        except (sqlite3.Error, OSError) as exc:
            raise CdrSpoolError(f"CDR spool {path}: cannot open: {exc}") from None

    def __len__(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self.max_records

    def append(self, params: Mapping[str, object], spooled_at: float) -> bool:
        """Keep one write (its upsert parameters); False when the spool is full."""
        if self.full:
            return False
        self._db.execute(
            "INSERT INTO cdr_write (call_uuid, spooled_at, params) VALUES (?, ?, ?)",
            (str(params["call_uuid"]), spooled_at, json.dumps(dict(params))))
        self._count += 1
        return True

    def oldest(self, limit: int) -> list[SpooledWrite]:
        """The first ``limit`` writes, in the order they were made."""
        rows = self._db.execute(
            "SELECT seq, call_uuid, params FROM cdr_write ORDER BY seq LIMIT ?", (limit,)).rows
        return [SpooledWrite(int(seq), call_uuid, json.loads(params))
                for seq, call_uuid, params in rows]

    def writes_for(self, call_uuid: str) -> list[SpooledWrite]:
        """One call's writes, in the order they were made."""
        rows = self._db.execute("SELECT seq, call_uuid, params FROM cdr_write WHERE "
                                "call_uuid = ? ORDER BY seq", (call_uuid,)).rows
        return [SpooledWrite(int(seq), uuid, json.loads(params)) for seq, uuid, params in rows]

    def remove_through(self, seq: int) -> None:
        """Forget the writes up to ``seq``: the database committed them."""
        removed = self._db.execute("DELETE FROM cdr_write WHERE seq <= ?", (seq,)).rowcount
        self._count = max(0, self._count - removed)

    def call_uuids(self) -> set[str]:
        """The calls with a write waiting here."""
        return {row[0] for row in self._db.execute("SELECT DISTINCT call_uuid FROM cdr_write").rows}

    def close(self) -> None:
        self._db.close()

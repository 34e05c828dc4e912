"""The SQLite credential store that Kamailio's htable module loads.

Kamailio only ever reads HA1 digests from here; provisioning writes them. Every write is one
transaction (SQLite is atomic per transaction, and the file is opened in WAL mode so the edge can
reload while a sync runs), which is what makes a crash or Ctrl-C mid-sync harmless.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from provisioning.templates_dir import credentials_schema

META_REALM = "wa.meta.vc"


class StoreError(Exception):
    """The store file cannot be opened or written; the message names the file."""


class WriteOutcome(Enum):
    UNCHANGED = "unchanged"
    CREATED = "created"
    UPDATED = "updated"


@dataclass(frozen=True)
class Credential:
    """What the edge needs for one business number: HA1 for each realm in use."""

    business_number: str
    ha1: str
    ha1_meta: str


def ha1(username: str, realm: str, password: str) -> str:
    """RFC 2617 HA1 for MD5, the only algorithm Meta documents."""
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


def credential_for(business_number: str, password: str, realm: str) -> Credential:
    """Digest material for `business_number` (+E164); the user name is its digits, as Meta sends."""
    digits = business_number.removeprefix("+")
    return Credential(business_number, ha1(digits, realm, password), ha1(digits, META_REALM, password))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CredentialStore:
    """One SQLite file; create it with `open_store`, which also applies the schema."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        try:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: {error}") from None

    def get(self, business_number: str) -> Credential | None:
        digits = business_number.removeprefix("+")
        rows = dict(self._db.execute(
            "SELECT key_name, key_value FROM wa_creds WHERE key_name IN (?, ?)",
            (f"{digits}:ha1", f"{digits}:ha1_meta")).fetchall())
        if f"{digits}:ha1" not in rows:
            return None
        return Credential(business_number, rows[f"{digits}:ha1"], rows.get(f"{digits}:ha1_meta", ""))

    def put(self, credential: Credential, realm: str, reason: str = "sync") -> WriteOutcome:
        """Write one number's credential; the replaced one goes to history first."""
        return self.put_many([credential], realm, reason)[credential.business_number]

    def put_many(self, credentials: list[Credential], realm: str,
                 reason: str = "sync") -> dict[str, WriteOutcome]:
        """Write several numbers in one transaction: all land, or none do."""
        outcomes: dict[str, WriteOutcome] = {}
        with self._transaction() as cursor:
            for credential in credentials:
                old = self.get(credential.business_number)
                if old == credential:
                    outcomes[credential.business_number] = WriteOutcome.UNCHANGED
                    continue
                if old is not None:
                    cursor.execute(
                        "INSERT INTO wa_credential_history (business_number, ha1, ha1_meta,"
                        " retired_at, reason) VALUES (?, ?, ?, ?, ?)",
                        (old.business_number, old.ha1, old.ha1_meta, _now(), reason))
                digits = credential.business_number.removeprefix("+")
                for key, value in ((f"{digits}:ha1", credential.ha1),
                                   (f"{digits}:ha1_meta", credential.ha1_meta)):
                    cursor.execute(
                        "INSERT INTO wa_creds (key_name, key_value) VALUES (?, ?)"
                        " ON CONFLICT(key_name) DO UPDATE SET key_value = excluded.key_value",
                        (key, value))
                cursor.execute(
                    "INSERT INTO wa_credential_meta (business_number, realm, meta_realm, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT(business_number) DO UPDATE SET"
                    " realm = excluded.realm, meta_realm = excluded.meta_realm,"
                    " updated_at = excluded.updated_at",
                    (credential.business_number, realm, META_REALM, _now()))
                outcomes[credential.business_number] = (
                    WriteOutcome.CREATED if old is None else WriteOutcome.UPDATED)
        return outcomes

    def remove(self, business_number: str) -> bool:
        digits = business_number.removeprefix("+")
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM wa_creds WHERE key_name IN (?, ?)",
                           (f"{digits}:ha1", f"{digits}:ha1_meta"))
            removed = cursor.rowcount > 0
            cursor.execute("DELETE FROM wa_credential_meta WHERE business_number = ?",
                           (business_number,))
        return removed

    def history(self, business_number: str) -> list[tuple[str, str]]:
        """(retired_at, reason) of each retired credential, oldest first; no digests."""
        return list(self._db.execute(
            "SELECT retired_at, reason FROM wa_credential_history WHERE business_number = ?"
            " ORDER BY id", (business_number,)).fetchall())


def open_store(path: Path) -> CredentialStore:
    """Open (creating if needed, mode 0600) the store at `path` and apply the schema."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(credentials_schema())
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"{path}: {error}") from None
    return CredentialStore(connection, path)

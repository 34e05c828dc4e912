"""The SQLite credential store that Kamailio's htable module loads.

Kamailio only ever reads HA1 digests from here; provisioning writes them. Every write is one
transaction (SQLite is atomic per transaction, and the file is opened in WAL mode so the edge can
reload while a sync runs), which is what makes a crash or Ctrl-C mid-sync harmless.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from provisioning.credential_sql import (
    META_REALM,
    Credential,
    SqlCredentialStore,
    StoreError,
    WriteOutcome,
    credential_for,
    ha1,
)
from provisioning.templates_dir import credentials_schema

__all__ = ["META_REALM", "Credential", "CredentialStore", "StoreError", "WriteOutcome",
           "credential_for", "ha1", "open_store"]


class CredentialStore(SqlCredentialStore):
    """One SQLite file; create it with `open_store`, which also applies the schema."""

    PARAM = "?"

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

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Cursor]:
        try:
            yield self._db.cursor()
        except sqlite3.Error as error:
            raise StoreError(f"{self.path}: {error}") from None


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

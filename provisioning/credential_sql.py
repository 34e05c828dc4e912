"""The credential store's reads and writes, written once for SQLite and PostgreSQL.

Both stores hold the same tables (Kamailio's htable layout in `wa_creds`, a meta row per
number, a history row per replaced credential) and obey the same rule: one transaction per
`put_many`, so an edge reloading mid-sync sees either a number's old pair or its new one. Only
connecting, the transaction itself and the parameter marker differ; the subclasses supply those.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, ClassVar, Protocol

META_REALM = "wa.meta.vc"


class StoreError(Exception):
    """The store cannot be opened or written; the message names it (never its password)."""


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
    ha1_meta_sha256: str = ""
    """SHA-256 HA1 for realm wa.meta.vc (RFC 7616/8760): Meta's 407 offers SHA-256 first and
    the edge answers it when this is there (a store written before it: MD5)."""


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """RFC 7616 HA1 = H(username:realm:password), H = MD5 or SHA-256."""
    text = f"{username}:{realm}:{password}".encode()
    if algorithm == "SHA-256":
        return hashlib.sha256(text).hexdigest()
    return hashlib.md5(text).hexdigest()


def credential_for(business_number: str, password: str, realm: str) -> Credential:
    """Digest material for `business_number` (+E164); the user name is its digits, as Meta sends."""
    digits = business_number.removeprefix("+")
    return Credential(business_number, ha1(digits, realm, password),
                      ha1(digits, META_REALM, password),
                      ha1(digits, META_REALM, password, "SHA-256"))


class Cursor(Protocol):
    """The slice of a DB-API cursor both drivers share (sqlite3, psycopg)."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, parameters: Sequence[Any], /) -> Any: ...

    def fetchall(self) -> list[Any]: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _keys(business_number: str) -> tuple[str, str, str]:
    digits = business_number.removeprefix("+")
    return f"{digits}:ha1", f"{digits}:ha1_meta", f"{digits}:ha1_meta_sha256"


class SqlCredentialStore(ABC):
    """Reads and writes over `_transaction()` (writes) and `_reading()` (reads)."""

    PARAM: ClassVar[str]  # "?" for sqlite3, "%s" for psycopg

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A write transaction; rolled back on any exception, errors raised as StoreError."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads, errors raised as StoreError."""

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, text: str) -> str:
        return text.replace("?", self.PARAM)

    def _read(self, cursor: Cursor, numbers: Sequence[str]) -> dict[str, Credential]:
        keys = [key for number in numbers for key in _keys(number)]
        if not keys:
            return {}
        marks = ", ".join("?" * len(keys))
        cursor.execute(self._sql(f"SELECT key_name, key_value FROM wa_creds WHERE key_name IN ({marks})"),
                       keys)
        rows = {str(name): str(value) for name, value in cursor.fetchall()}
        found = {}
        for number in numbers:
            key_ha1, key_meta, key_sha256 = _keys(number)
            if key_ha1 in rows:
                found[number] = Credential(number, rows[key_ha1], rows.get(key_meta, ""),
                                           rows.get(key_sha256, ""))
        return found

    def get(self, business_number: str) -> Credential | None:
        with self._reading() as cursor:
            return self._read(cursor, [business_number]).get(business_number)

    def put(self, credential: Credential, realm: str, reason: str = "sync") -> WriteOutcome:
        """Write one number's credential; the replaced one goes to history first."""
        return self.put_many([credential], realm, reason)[credential.business_number]

    def put_many(self, credentials: list[Credential], realm: str,
                 reason: str = "sync") -> dict[str, WriteOutcome]:
        """Write several numbers in one transaction: all land, or none do."""
        outcomes: dict[str, WriteOutcome] = {}
        with self._transaction() as cursor:
            existing = self._read(cursor, [c.business_number for c in credentials])
            for credential in credentials:
                old = existing.get(credential.business_number)
                if old == credential:
                    outcomes[credential.business_number] = WriteOutcome.UNCHANGED
                    continue
                if old is not None:
                    cursor.execute(self._sql(
                        "INSERT INTO wa_credential_history (business_number, ha1, ha1_meta,"
                        " retired_at, reason) VALUES (?, ?, ?, ?, ?)"),
                        (old.business_number, old.ha1, old.ha1_meta, _now(), reason))
                key_ha1, key_meta, key_sha256 = _keys(credential.business_number)
                for key, value in ((key_ha1, credential.ha1), (key_meta, credential.ha1_meta),
                                   (key_sha256, credential.ha1_meta_sha256)):
                    if key == key_sha256 and not value:
                        continue  # a credential made without it (older callers): MD5 only
                    cursor.execute(self._sql(
                        "INSERT INTO wa_creds (key_name, key_value) VALUES (?, ?)"
                        " ON CONFLICT (key_name) DO UPDATE SET key_value = excluded.key_value"),
                        (key, value))
                cursor.execute(self._sql(
                    "INSERT INTO wa_credential_meta (business_number, realm, meta_realm, updated_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (business_number) DO UPDATE SET"
                    " realm = excluded.realm, meta_realm = excluded.meta_realm,"
                    " updated_at = excluded.updated_at"),
                    (credential.business_number, realm, META_REALM, _now()))
                existing[credential.business_number] = credential
                outcomes[credential.business_number] = (
                    WriteOutcome.CREATED if old is None else WriteOutcome.UPDATED)
        return outcomes

    def remove(self, business_number: str) -> bool:
        """Forget a number's credential (its history stays); True if it was there."""
        with self._transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM wa_creds WHERE key_name IN (?, ?, ?)"),
                           _keys(business_number))
            removed = cursor.rowcount > 0
            cursor.execute(self._sql("DELETE FROM wa_credential_meta WHERE business_number = ?"),
                           (business_number,))
        return removed

    def history(self, business_number: str) -> list[tuple[str, str]]:
        """(retired_at, reason) of each retired credential, oldest first; no digests."""
        with self._reading() as cursor:
            cursor.execute(self._sql("SELECT retired_at, reason FROM wa_credential_history"
                                     " WHERE business_number = ? ORDER BY id"), (business_number,))
            return [(str(at), str(reason)) for at, reason in cursor.fetchall()]

"""The credential store on PostgreSQL, for sites whose edge nodes share one store.

Same tables and same behaviour as the SQLite store (credential_store.py): HA1 pairs in
Kamailio's htable layout, a history row for each replaced credential, one transaction per
`put_many` so a Kamailio node reloading mid-sync sees either the old or the new pair. A
transaction-level advisory lock keeps two concurrent `provision sync` runs from interleaving.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

from provisioning.credential_store import META_REALM, Credential, StoreError, WriteOutcome
from provisioning.templates_dir import templates_dir

ADVISORY_LOCK_KEY = 0x7761_7369  # "wasi": serialises writers across nodes and runs


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def postgres_schema() -> str:
    return (templates_dir() / "kamailio" / "credentials-schema-postgres.sql").read_text(encoding="utf-8")


class PostgresCredentialStore:
    """One connection; open it with `open_postgres_store`."""

    def __init__(self, connection: psycopg.Connection[tuple[str, ...]], url: str) -> None:
        self._db = connection
        self.location = redact_url(url)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Cursor[tuple[str, ...]]]:
        try:
            with self._db.transaction(), self._db.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                yield cursor
        except psycopg.Error as error:
            raise StoreError(f"{self.location}: {str(error).strip()}") from None

    def _read(self, cursor: psycopg.Cursor[tuple[str, ...]], numbers: list[str]) -> dict[str, Credential]:
        keys = [f"{n.removeprefix('+')}:{suffix}" for n in numbers for suffix in ("ha1", "ha1_meta")]
        cursor.execute("SELECT key_name, key_value FROM wa_creds WHERE key_name = ANY(%s)", (keys,))
        rows: dict[str, str] = {str(row[0]): str(row[1]) for row in cursor.fetchall()}
        found = {}
        for number in numbers:
            digits = number.removeprefix("+")
            if f"{digits}:ha1" in rows:
                found[number] = Credential(number, rows[f"{digits}:ha1"], rows.get(f"{digits}:ha1_meta", ""))
        return found

    def get(self, business_number: str) -> Credential | None:
        with self._transaction() as cursor:
            return self._read(cursor, [business_number]).get(business_number)

    def put(self, credential: Credential, realm: str, reason: str = "sync") -> WriteOutcome:
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
                    cursor.execute(
                        "INSERT INTO wa_credential_history (business_number, ha1, ha1_meta, retired_at,"
                        " reason) VALUES (%s, %s, %s, %s, %s)",
                        (old.business_number, old.ha1, old.ha1_meta, _now(), reason))
                digits = credential.business_number.removeprefix("+")
                for key, value in ((f"{digits}:ha1", credential.ha1),
                                   (f"{digits}:ha1_meta", credential.ha1_meta)):
                    cursor.execute(
                        "INSERT INTO wa_creds (key_name, key_value) VALUES (%s, %s)"
                        " ON CONFLICT (key_name) DO UPDATE SET key_value = EXCLUDED.key_value",
                        (key, value))
                cursor.execute(
                    "INSERT INTO wa_credential_meta (business_number, realm, meta_realm, updated_at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (business_number) DO UPDATE SET"
                    " realm = EXCLUDED.realm, meta_realm = EXCLUDED.meta_realm,"
                    " updated_at = EXCLUDED.updated_at",
                    (credential.business_number, realm, META_REALM, _now()))
                existing[credential.business_number] = credential
                outcomes[credential.business_number] = (
                    WriteOutcome.CREATED if old is None else WriteOutcome.UPDATED)
        return outcomes

    def remove(self, business_number: str) -> bool:
        digits = business_number.removeprefix("+")
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM wa_creds WHERE key_name IN (%s, %s)",
                           (f"{digits}:ha1", f"{digits}:ha1_meta"))
            removed = cursor.rowcount > 0
            cursor.execute("DELETE FROM wa_credential_meta WHERE business_number = %s", (business_number,))
        return removed

    def history(self, business_number: str) -> list[tuple[str, str]]:
        with self._transaction() as cursor:
            cursor.execute("SELECT retired_at, reason FROM wa_credential_history"
                           " WHERE business_number = %s ORDER BY id", (business_number,))
            return [(str(a), str(b)) for a, b in cursor.fetchall()]


def open_postgres_store(url: str, connect_timeout: int = 10) -> PostgresCredentialStore:
    """Connect to `url` (postgresql:// or postgres://) and create the tables if missing."""
    try:
        connection: psycopg.Connection[tuple[str, ...]] = psycopg.connect(
            url, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.Error as error:
        raise StoreError(f"{redact_url(url)}: {str(error).strip()}") from None
    store = PostgresCredentialStore(connection, url)
    with store._transaction() as cursor:
        cursor.execute(postgres_schema().encode())  # our own file: several statements, no parameters
    return store

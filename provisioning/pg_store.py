"""The credential store on PostgreSQL, for sites whose edge nodes share one store.

Same tables and same behaviour as the SQLite store (credential_store.py): HA1 pairs in
Kamailio's htable layout, a history row for each replaced credential, one transaction per
`put_many` so a Kamailio node reloading mid-sync sees either the old or the new pair. A
transaction-level advisory lock keeps two concurrent `provision sync` runs from interleaving.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from provisioning.credential_sql import SqlCredentialStore, StoreError
from provisioning.templates_dir import templates_dir
from siteconfig.database_url import redact_url as redact_url  # re-exported: store_backend
from siteconfig.database_url import scrub

ADVISORY_LOCK_KEY = 0x7761_7369  # "wasi": serialises writers across nodes and runs


def _problem(url: str, error: Exception) -> str:
    """`error` as a StoreError message: the redacted URL and the driver's text without secrets."""
    return f"{redact_url(url)}: {scrub(url, str(error).strip())}"


def postgres_schema() -> str:
    return (templates_dir() / "kamailio" / "credentials-schema-postgres.sql").read_text(encoding="utf-8")


class PostgresCredentialStore(SqlCredentialStore):
    """One connection; open it with `open_postgres_store`."""

    PARAM = "%s"

    def __init__(self, connection: psycopg.Connection[tuple[str, ...]], url: str) -> None:
        self._db = connection
        self._url = url
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
            raise StoreError(_problem(self._url, error)) from None

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Cursor[tuple[str, ...]]]:
        try:
            with self._db.cursor() as cursor:
                yield cursor
        except psycopg.Error as error:
            raise StoreError(_problem(self._url, error)) from None


def open_postgres_store(url: str, connect_timeout: int = 10) -> PostgresCredentialStore:
    """Connect to `url` (postgresql:// or postgres://) and create the tables if missing."""
    try:
        connection: psycopg.Connection[tuple[str, ...]] = psycopg.connect(
            url, autocommit=True, connect_timeout=connect_timeout)
    except psycopg.Error as error:
        raise StoreError(_problem(url, error)) from None
    store = PostgresCredentialStore(connection, url)
    with store._transaction() as cursor:
        cursor.execute(postgres_schema().encode())  # our own file: several statements, no parameters
    return store

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
from urllib.parse import unquote

import psycopg

from provisioning.credential_sql import SqlCredentialStore, StoreError
from provisioning.templates_dir import templates_dir

ADVISORY_LOCK_KEY = 0x7761_7369  # "wasi": serialises writers across nodes and runs


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&]*)")


def _userinfo_end(url: str) -> int:
    """Index of the '@' that ends USER[:PASSWORD] (the last one before the query), or -1."""
    start = url.find("://") + 3 if "://" in url else 0
    return url.rfind("@", start, len(url.split("?", 1)[0]))


def url_secrets(url: str) -> list[str]:
    """The password(s) in `url`, as written and percent-decoded, for scrubbing driver messages."""
    found = [m.group(2) for m in _QUERY_PASSWORD.finditer(url)]
    at = _userinfo_end(url)
    if at >= 0:
        userinfo = url[url.find("://") + 3 if "://" in url else 0:at]
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            # libpq splits an unencoded '@' itself and quotes the rest as a host name
            found += [password, *(part for part in password.split("@") if len(part) >= 3)]
    return [text for secret in found if secret for text in {secret, unquote(secret)}]


def redact_url(url: str) -> str:
    """The URL without its password (in USER:PASSWORD@ or ?password=), for messages."""
    at = _userinfo_end(url)
    if at >= 0:
        start = url.find("://") + 3 if "://" in url else 0
        user, colon, _ = url[start:at].partition(":")
        if colon:
            url = f"{url[:start]}{user}:***{url[at:]}"
    return _QUERY_PASSWORD.sub(r"\1***", url)


def _problem(url: str, error: Exception) -> str:
    """`error` as a StoreError message: the redacted URL and the driver's text without secrets."""
    text = str(error).strip()
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return f"{redact_url(url)}: {text}"


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

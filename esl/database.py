"""The CDR database behind one small interface: a SQLite file, or a PostgreSQL database.

Why one interface and not two stores: the CDR, the heartbeat, Meta's call events and the call
permissions are the same tables with the same upserts on both engines (``INSERT ... ON CONFLICT
... DO UPDATE``, ``COALESCE(excluded.x, t.x)``, ``ON CONFLICT DO NOTHING`` mean the same in
SQLite 3.24+ and PostgreSQL 9.5+), so every store writes its SQL once, in SQLite's spelling
(``?`` and ``:name`` parameters), and :class:`PostgresDatabase` rewrites only the placeholders.
What differs lives here: how to connect, the schema lock, added columns, the clock.

Both commit every statement on return (autocommit) unless it runs in :meth:`transaction`, so
a CDR is durable before the controller moves on. PostgreSQL schema creation runs under a
transaction-level advisory lock, so two nodes starting at once do not race on
``CREATE TABLE IF NOT EXISTS`` (which is not atomic there). A connection PostgreSQL dropped is
reopened once for the next statement outside a transaction; every statement here is an
idempotent upsert or a read, so running it again is safe.

Messages never carry the URL's password: :class:`DatabaseError` is scrubbed, and a
:class:`~siteconfig.database_url.PostgresUrl` prints without it. ``DatabaseError`` derives from
``sqlite3.Error`` so every handler written for the SQLite store catches PostgreSQL faults too;
:class:`DatabaseUnreachable`, its subclass, marks the faults a later retry can cure, and
:class:`DatabaseRefused`, its own subclass, a connection PostgreSQL refused for this
configuration (password, role, database): an outage to a running node, fatal at start.

Opened with ``defer=True`` (wa-esl's stores), an unreachable PostgreSQL does not fail the
open: the schema statements the store asks for are kept and run, in order, before the first
statement that finds the database answering, so a media node starts and takes calls during a
database outage (its CDR writes spooled, esl/cdr_spool.py) and its tables are created or
checked as soon as the database is back, before anything else is written to them.
"""

from __future__ import annotations

import functools
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siteconfig.database_url import PostgresUrl, redact_url, scrub

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5_000
"""How long a SQLite write waits for another process's lock before it fails."""
SCHEMA_LOCK_KEY = 0x7761_6364  # "wacd": serialises schema creation across nodes
PG_CONNECT_TIMEOUT_S = 5
PG_STATEMENT_TIMEOUT_MS = 5_000
"""A statement PostgreSQL has not answered in 5 s fails (the controller's loop waits on it)."""
PG_RETRY_AFTER_S = 5.0
"""After a failed connect, statements fail at once for this long instead of each waiting out
a connect timeout: a database outage costs the controller's loop one timeout per 5 s, not one
per call."""

Params = Sequence[object] | Mapping[str, object]
Location = Path | PostgresUrl


class DatabaseError(sqlite3.Error):
    """The database could not be read or written; the message names it without a password."""


class DatabaseUnreachable(DatabaseError):
    """PostgreSQL did not run the statement for a reason outside the statement: no connection
    (refused, dropped, within the retry delay), an operational fault of the server (statement
    timeout, shutdown, disk full) or a read-only standby answering during a failover. The same
    statement may succeed later unchanged, so a CDR write that failed so is kept and tried
    again (esl/cdr_spool.py); any other DatabaseError (a refused SQL or value) is a bug to
    report, not to retry."""


class DatabaseRefused(DatabaseUnreachable):
    """PostgreSQL answered and refused the connection this URL asks for: authentication
    failed (or no password given), no such role or database, no ``pg_hba.conf`` entry, a
    role without LOGIN or CONNECT, SSL required and not offered, a connection option libpq
    rejects; or, for a store opened with ``defer=True``, the deferred schema statements were
    refused (no CREATE privilege). A configuration that cannot work as it is, not an outage:
    at start it is fatal (wa-esl exits saying so). It derives from DatabaseUnreachable for a
    node already running: the password changed on the server under it is cured on the server
    or by a restart with the right one, and the CDR writes meanwhile are kept in the spool."""


REFUSED_CONNECTION = re.compile(
    r"authentication failed for user|no password supplied|no pg_hba\.conf entry|"
    r"pg_hba\.conf rejects connection|role \S+ does not exist|database \S+ does not exist|"
    r"is not permitted to log in|permission denied for database|"
    r"server does not support SSL, but SSL was required|invalid \S+ value|"
    r"invalid connection option")
"""libpq's words (English) for a connection refused for its configuration. psycopg gives no
SQLSTATE for a failed connection (checked with psycopg 3.3 and libpq 18: ``sqlstate`` None,
the server's code stays inside libpq), so the text is all there is. Anything else, such as
a connection refused or timed out, a host name that does not resolve (DNS may be the part
that is down), "the database system is starting up", "too many clients", is an outage; a
server whose messages are not in English makes a refusal look like one (wa-esl then starts,
warns with the server's words and spools)."""


def first_line(error: Exception) -> str:
    """An error's first line (psycopg's messages go on with hints on more lines)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@dataclass(frozen=True)
class Result:
    rows: list[tuple[Any, ...]]
    rowcount: int


class Database:
    """What the stores use; open one with :func:`open_database`."""

    location: Location
    postgres: bool = False
    now_epoch: str
    """SQL for the database's clock in epoch seconds (PostgreSQL's own: one clock for all nodes)."""

    def execute(self, sql: str, params: Params = ()) -> Result:
        raise NotImplementedError

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield  # pragma: no cover

    def create_schema(self, ddl: str) -> None:
        """Run ``CREATE ... IF NOT EXISTS`` statements (``;``-separated, no parameters)."""
        raise NotImplementedError

    def add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> None:
        """Add the columns an older table lacks (a release added them)."""
        raise NotImplementedError

    def has_table(self, table: str) -> bool:
        raise NotImplementedError

    @property
    def unreachable_at_open(self) -> str | None:
        """Why the database could not be reached when opened with ``defer=True`` (its schema
        statements still wait for it); None once they have run, or when it answered."""
        return None

    def close(self) -> None:
        raise NotImplementedError


class SqliteDatabase(Database):
    """A SQLite file in WAL mode; several processes of one host share it (busy_timeout)."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.location = path
        self.now_epoch = "((julianday('now') - 2440587.5) * 86400.0)"
        if read_only:
            self._db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
            return
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")

    def execute(self, sql: str, params: Params = ()) -> Result:
        cursor = self._db.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        return Result(rows, cursor.rowcount)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def create_schema(self, ddl: str) -> None:
        self._db.executescript(ddl)

    def add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> None:
        present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in present:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def has_table(self, table: str) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                (table,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()


_TOKEN = re.compile(r"'(?:[^']|'')*'|::|\?|%|(?<![\w:]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=256)
def postgres_sql(sql: str) -> str:
    """SQLite's ``?`` / ``:name`` placeholders in psycopg's ``%s`` / ``%(name)s`` spelling
    (quoted literals and ``::`` casts left alone, a literal ``%`` doubled)."""

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        if match.group(1):
            return f"%({match.group(1)})s"
        return text

    return _TOKEN.sub(replace, sql)


class PostgresDatabase(Database):
    """One psycopg connection (autocommit), reopened once when PostgreSQL dropped it."""

    postgres = True

    def __init__(self, url: PostgresUrl, *, application: str = "wa-esl",
                 defer: bool = False) -> None:
        import psycopg  # only sites with a PostgreSQL CDR database load the driver

        self._psycopg = psycopg
        self.location = url
        self._url = url.secret_url
        self.now_epoch = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"
        self._application = application
        self._in_transaction = False
        self._retry_at = 0.0
        self._last_failure = ""
        self._last_refused = False
        self._db: Any = None
        self._deferred: list[tuple[str, Any]] | None = None
        """Schema statements waiting for the database (``defer=True``, unreachable at open)."""
        self._preparing = False
        try:
            self._db = self._connect()
        except DatabaseRefused:
            raise  # a configuration that cannot work: no use waiting for it
        except DatabaseUnreachable:
            if not defer:
                raise
            self._deferred = []

    @property
    def unreachable_at_open(self) -> str | None:
        return self._last_failure if self._deferred is not None else None

    def _connect(self) -> Any:
        if time.monotonic() < self._retry_at:
            kind = DatabaseRefused if self._last_refused else DatabaseUnreachable
            raise kind(f"{redact_url(self._url)}: "
                       f"{'refused' if self._last_refused else 'unreachable'} "
                       f"({self._last_failure}); next try within {PG_RETRY_AFTER_S:.0f} s")
        try:
            return self._psycopg.connect(
                self._url, autocommit=True, connect_timeout=PG_CONNECT_TIMEOUT_S,
                application_name=self._application[:63],
                options=f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS}",
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3)
        except self._psycopg.Error as error:
            self._retry_at = time.monotonic() + PG_RETRY_AFTER_S
            self._last_failure = scrub(self._url, first_line(error))
            self._last_refused = bool(REFUSED_CONNECTION.search(str(error))) or not isinstance(
                error, self._psycopg.OperationalError)
            if self._last_refused:
                raise DatabaseRefused(f"{redact_url(self._url)}: "
                                      f"{scrub(self._url, str(error).strip())}") from None
            raise self._error(error) from None

    def _error(self, error: Exception) -> DatabaseError:
        transient = (self._psycopg.OperationalError, self._psycopg.errors.ReadOnlySqlTransaction)
        kind = DatabaseUnreachable if isinstance(error, transient) else DatabaseError
        return kind(f"{redact_url(self._url)}: {scrub(self._url, str(error).strip())}")

    def _open(self) -> None:
        """Connected, and the deferred schema statements run (before any other statement)."""
        if self._in_transaction:
            return
        if self._db is None or self._db.closed:
            self._db = self._connect()
        if self._deferred is None or self._preparing:
            return
        self._preparing = True
        try:
            for kind, argument in self._deferred:
                if kind == "schema":
                    self.create_schema(argument)
                else:
                    self.add_columns(*argument)
        except DatabaseUnreachable:
            raise  # all idempotent: run again, whole, at the next statement
        except DatabaseError as error:
            raise DatabaseRefused(f"cannot create or check the tables: {error}") from None
        finally:
            self._preparing = False
        self._deferred = None
        log.info("CDR database %s answers: its tables are created or checked",
                 redact_url(self._url))

    def execute(self, sql: str, params: Params = ()) -> Result:
        query = postgres_sql(sql)
        for attempt in (1, 2):
            self._open()
            try:
                with self._db.cursor() as cursor:
                    cursor.execute(query, params or None)
                    rows = cursor.fetchall() if cursor.description else []
                    return Result(rows, cursor.rowcount)
            except self._psycopg.OperationalError as error:
                if attempt == 2 or self._in_transaction or not self._db.closed:
                    raise self._error(error) from None
            except self._psycopg.Error as error:
                raise self._error(error) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._open()
        try:
            with self._db.transaction():
                self._in_transaction = True
                try:
                    yield
                finally:
                    self._in_transaction = False
        except self._psycopg.Error as error:
            raise self._error(error) from None

    def create_schema(self, ddl: str) -> None:
        if self._deferred is not None and not self._preparing:
            self._deferred.append(("schema", ddl))
            return
        with self.transaction():
            self.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
            for statement in ddl.split(";"):
                if statement.strip():
                    self.execute(statement)

    def add_columns(self, table: str, columns: Sequence[tuple[str, str]]) -> None:
        if self._deferred is not None and not self._preparing:
            self._deferred.append(("columns", (table, columns)))
            return
        with self.transaction():
            self.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
            for name, kind in columns:
                self.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")

    def has_table(self, table: str) -> bool:
        return self.execute("SELECT to_regclass(?) IS NOT NULL", (table,)).rows[0][0] is True

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def open_database(location: Location, *, application: str = "wa-esl",
                  read_only: bool = False, defer: bool = False) -> Database:
    """The database at ``location`` (a SQLite path or a PostgreSQL URL); raises DatabaseError
    (or ``sqlite3.Error`` / ``OSError`` for a SQLite file that cannot be opened).

    ``defer``: a PostgreSQL database unreachable now is opened all the same (its schema
    statements wait for it, see :class:`PostgresDatabase`); DatabaseRefused is still raised.
    """
    if isinstance(location, PostgresUrl):
        return PostgresDatabase(location, application=application, defer=defer)
    return SqliteDatabase(Path(location), read_only=read_only)

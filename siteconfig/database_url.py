"""Database locations in the site config: a SQLite file or a PostgreSQL URL, never its password.

``[esl] cdr_db`` takes either: a path (one node, its own SQLite file) or
``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`` (every media node of a site writing one
database). A URL is kept as a :class:`PostgresUrl`, whose ``str()`` and ``repr()`` leave the
password out, so the location can go into any message or log line as it is; only
:attr:`PostgresUrl.secret_url` (for the driver) holds it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&]*)")


def is_postgres_url(text: str) -> bool:
    return text.startswith(POSTGRES_SCHEMES)


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


def scrub(url: str, text: str) -> str:
    """`text` (a driver's message) with every spelling of `url`'s password replaced by ***."""
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class PostgresUrl:
    """A validated ``postgresql://`` URL; printing it never shows the password."""

    __slots__ = ("secret_url",)

    def __init__(self, url: str) -> None:
        problem = postgres_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        self.secret_url = url

    def __str__(self) -> str:
        return redact_url(self.secret_url)

    def __repr__(self) -> str:
        return f"PostgresUrl({redact_url(self.secret_url)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PostgresUrl) and other.secret_url == self.secret_url

    def __hash__(self) -> int:
        return hash(self.secret_url)


def postgres_url_problem(url: str) -> str | None:
    """Why `url` is no usable PostgreSQL URL (the message never quotes the password), or None."""
    if not is_postgres_url(url):
        return "must start with postgresql:// (or postgres://)"
    rest = url.split("://", 1)[1].split("?", 1)[0]
    at = rest.rfind("@")
    hostpart = rest[at + 1:] if at >= 0 else rest
    host, slash, database = hostpart.partition("/")
    if not host or host.startswith(":"):
        return (f"{redact_url(url)}: no host (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE; "
                "a local socket: postgresql://USER@%2Frun%2Fpostgresql/DATABASE)")
    if not slash or not database:
        return f"{redact_url(url)}: no database name (postgresql://USER@HOST[:PORT]/DATABASE)"
    if at < 0 and "password=" not in url.lower() and "user=" not in url.lower():
        return f"{redact_url(url)}: no user (postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
    port = host.rsplit("]", 1)[-1].rpartition(":")[2] if ":" in host.rsplit("]", 1)[-1] else ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return f"{redact_url(url)}: port {port!r} is not a TCP port"
    return None


def parse_location(value: object) -> Path | PostgresUrl:
    """A path, or a PostgreSQL URL when the text starts with postgresql:// or postgres://."""
    if isinstance(value, PostgresUrl | Path):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a file path or a postgresql:// URL")
    if is_postgres_url(value):
        return PostgresUrl(value)
    if "://" in value:
        raise ValueError(f"{value.split('://', 1)[0]}:// is not supported: a SQLite file path, "
                         "or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
    return Path(value)


class _LocationSchema:
    """Pydantic glue: ``Annotated[Path | PostgresUrl, LOCATION]`` validates with parse_location."""

    def __get_pydantic_core_schema__(self, _source: Any,
                                     _handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            parse_location,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: v.secret_url if isinstance(v, PostgresUrl) else str(v)))


LOCATION = _LocationSchema()

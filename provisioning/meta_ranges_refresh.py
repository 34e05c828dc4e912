"""Refresh the site's list of Meta's address ranges from a file or a URL, atomically.

The new list is read whole, parsed (siteconfig/meta_ranges.py: a plain list, RADB whois output
or RIPEstat JSON) and checked before anything is written; the site's file is then replaced in
one rename, so a failed download or a malformed answer leaves the old list in place, never half
a file. A list that shrinks to less than half of the old one is refused unless allowed: with
meta_only, a truncated list would lock Meta out.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from siteconfig.atomic_file import replace_file
from siteconfig.meta_ranges import RangesError, collapse, parse_ranges, read_ranges_file

MAX_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT_S = 20.0
USER_AGENT = "wa-sip provision meta-ranges refresh"


class RefreshError(Exception):
    """The ranges could not be refreshed; nothing was written."""


@dataclass(frozen=True)
class RefreshOutcome:
    path: Path
    ipv4: int
    ipv6: int
    added: list[str]
    removed: list[str]


def read_source(source: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """The text at `source`: an http(s):// URL, a file:// URL or a local path."""
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"User-Agent": USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body: bytes = response.read(MAX_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise RefreshError(f"{source} answered HTTP {error.code} {error.reason}") from None
        except urllib.error.URLError as error:
            raise RefreshError(f"cannot fetch {source}: {error.reason}") from None
        except (TimeoutError, OSError) as error:
            raise RefreshError(f"cannot fetch {source}: {error}") from None
    else:
        path = Path(source.removeprefix("file://"))
        try:
            with path.open("rb") as handle:
                body = handle.read(MAX_BYTES + 1)
        except OSError as error:
            raise RefreshError(f"cannot read {path}: {error.strerror or error}") from None
    if len(body) > MAX_BYTES:
        raise RefreshError(f"{source} is larger than {MAX_BYTES // (1024 * 1024)} MB: not a ranges list")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RefreshError(f"{source} is not UTF-8 text (byte {error.start})") from None


def ranges_document(networks: list[str], source: str, when: datetime) -> str:
    """The file written: where the list came from and when, then one CIDR a line."""
    return (f"# Meta's address ranges (AS32934), refreshed by `provision meta-ranges refresh`.\n"
            f"# Source: {source}\n# Fetched: {when.strftime('%Y-%m-%d %H:%M:%S UTC')}\n"
            f"# {len(networks)} ranges; one CIDR a line.\n" + "".join(f"{n}\n" for n in networks))


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` in one rename (0644); on any error the old file stays."""
    try:
        replace_file(path, text, 0o644, create_folder=True)
    except OSError as error:
        raise RefreshError(f"cannot write {path}: {error.strerror or error}") from None


def refresh_ranges(source: str, target: Path, allow_shrink: bool = False,
                   timeout: float = DEFAULT_TIMEOUT_S) -> RefreshOutcome:
    """Read Meta's ranges from `source`, check them, and replace `target` with them."""
    try:
        v4, v6 = collapse(parse_ranges(read_source(source, timeout)))
    except RangesError as error:
        raise RefreshError(f"{source}: {error}") from None
    fresh = [str(n) for n in [*v4, *v6]]
    if not fresh:
        raise RefreshError(f"{source} lists no ranges: nothing written")
    old: list[str] = []
    if target.exists():
        try:
            old = [str(n) for n in read_ranges_file(target)]
        except RangesError:
            old = []  # an unreadable old list is replaced, not compared
    if old and len(fresh) * 2 < len(old) and not allow_shrink:
        raise RefreshError(f"{source} has {len(fresh)} ranges, less than half of the {len(old)} in "
                           f"{target}: refusing (a truncated list would lock Meta out); check it, "
                           "then pass --allow-shrink")
    write_atomically(target, ranges_document(fresh, source, datetime.now(UTC)))
    return RefreshOutcome(target, len(v4), len(v6),
                          added=[n for n in fresh if old and n not in old],
                          removed=[n for n in old if n not in fresh])

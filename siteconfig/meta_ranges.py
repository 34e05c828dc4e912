"""Meta's address ranges (AS32934): the shipped list, and the forms a refreshed list comes in.

One ground-floor place for where Meta connects from, as `siteconfig/` is for the site's own
settings: the nftables admission rules (`provisioning/render_nftables.py`), the refresh command
and `doctor` read these functions, never their own copies.

A list is text, one CIDR a line with `#` comments (the shipped `meta_ranges.txt`, a site's own
file), or what the usual sources print: RADB's whois output (`route:` / `route6:` lines) or
RIPEstat's announced-prefixes JSON (`data.prefixes[].prefix`), or a JSON list of strings.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SHIPPED_RANGES_FILE = Path(__file__).resolve().parent / "meta_ranges.txt"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A prefix wider than this would make a good part of the internet "Meta": refused as a mistake.
WIDEST_PREFIX = {4: 8, 6: 16}


class RangesError(ValueError):
    """A ranges list that cannot be used; the message says where (line, entry) and why."""


def parse_network(text: str, where: str = "") -> Network:
    """One CIDR (a bare address is a /32 or /128); host bits set are an error, not masked."""
    label = f"{where}: " if where else ""
    try:
        network = ipaddress.ip_network(text.strip())
    except ValueError as error:
        raise RangesError(f"{label}{text.strip()!r} is not an IPv4 or IPv6 CIDR ({error})") from None
    if network.prefixlen < WIDEST_PREFIX[network.version]:
        raise RangesError(f"{label}{network} is wider than /{WIDEST_PREFIX[network.version]}: "
                          "that is not one organisation's range")
    return network


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDR strings from a site config list; errors name the entry's index."""
    return [parse_network(value, f"[{index}]") for index, value in enumerate(values)]


def _json_prefixes(document: Any) -> list[str]:
    if isinstance(document, list) and all(isinstance(item, str) for item in document):
        return document
    if isinstance(document, dict):
        holder = document.get("data", document)
        prefixes = holder.get("prefixes") if isinstance(holder, dict) else None
        if isinstance(prefixes, list):
            found = [p.get("prefix") if isinstance(p, dict) else p for p in prefixes]
            if all(isinstance(p, str) for p in found):
                return [p for p in found if isinstance(p, str)]
    raise RangesError("JSON that is neither a list of CIDR strings nor RIPEstat's "
                      "announced-prefixes (data.prefixes[].prefix)")


def parse_ranges(text: str) -> list[Network]:
    """Every network in a ranges document (plain list, RADB whois output or JSON), in order."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise RangesError(f"not valid JSON: {error}") from None
        prefixes = _json_prefixes(document)
        return [parse_network(p, f"prefix {index}") for index, p in enumerate(prefixes)]
    lines = text.splitlines()
    whois = any(line.startswith(("route:", "route6:")) for line in lines)
    networks = []
    for number, line in enumerate(lines, start=1):
        content = line.split("#", 1)[0].strip()
        if whois:
            key, _, value = content.partition(":")
            if key not in ("route", "route6"):
                continue
            content = value.strip()
        if content:
            networks.append(parse_network(content, f"line {number}"))
    return networks


def collapse(networks: Iterable[Network]) -> tuple[list[ipaddress.IPv4Network], list[ipaddress.IPv6Network]]:
    """IPv4 and IPv6 networks with overlaps and neighbours merged (what an interval set holds)."""
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


def read_ranges_file(path: Path) -> list[Network]:
    """The networks in a ranges file; an unreadable, malformed or empty file is a RangesError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RangesError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise RangesError(f"{path} is not UTF-8 text (byte {error.start})") from None
    try:
        networks = parse_ranges(text)
    except RangesError as error:
        raise RangesError(f"{path}: {error}") from None
    if not networks:
        raise RangesError(f"{path} lists no ranges")
    return networks


def shipped_ranges() -> list[Network]:
    """Meta's published ranges as shipped with the bundle (see the file's header for its source)."""
    return read_ranges_file(SHIPPED_RANGES_FILE)

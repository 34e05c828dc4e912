"""What the kernel holds of the admission rules: `nft -j list table inet wa_sip`, read back.

`doctor` compares it with what `provision render` writes for the same site config (the Meta sets
and the port), so a ruleset that was never loaded, or one left from older ranges, is found.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from provisioning.render_nftables import META_SETS, TABLE_FAMILY, TABLE_NAME, MetaSets
from siteconfig.meta_ranges import collapse

NFT_TIMEOUT_S = 10.0


class NftUnavailable(Exception):
    """nft cannot be asked here (missing, not root, or it failed); the message says which."""


@dataclass(frozen=True)
class LoadedTable:
    sets: MetaSets
    ports: frozenset[int]


def _element_networks(element: Any) -> Iterator[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    if isinstance(element, dict) and "elem" in element:  # an element with a timeout or comment
        element = element["elem"].get("val")
    if isinstance(element, str):
        yield ipaddress.ip_network(element)
    elif isinstance(element, dict) and "prefix" in element:
        yield ipaddress.ip_network(f"{element['prefix']['addr']}/{element['prefix']['len']}")
    elif isinstance(element, dict) and "range" in element:
        first, last = (ipaddress.ip_address(a) for a in element["range"])
        yield from ipaddress.summarize_address_range(first, last)


def _dports(node: Any) -> Iterator[int]:
    """Every `tcp dport N` match anywhere in the rules' JSON."""
    if isinstance(node, dict):
        match = node.get("match")
        if isinstance(match, dict):
            left = match.get("left")
            if (isinstance(left, dict) and left.get("payload", {}).get("field") == "dport"
                    and isinstance(match.get("right"), int)):
                yield match["right"]
        for value in node.values():
            yield from _dports(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dports(value)


def parse_table(document: dict[str, Any]) -> LoadedTable:
    """The Meta sets and the matched ports of `nft -j list table inet wa_sip` output."""
    networks: dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {4: [], 6: []}
    ports: set[int] = set()
    for entry in document.get("nftables", []):
        named_set = entry.get("set")
        if isinstance(named_set, dict):
            for version, name in META_SETS.items():
                if named_set.get("name") == name:
                    for element in named_set.get("elem", []):
                        networks[version].extend(_element_networks(element))
        rule = entry.get("rule")
        if isinstance(rule, dict):
            ports.update(_dports(rule.get("expr", [])))
    v4, v6 = collapse([*networks[4], *networks[6]])
    return LoadedTable(MetaSets(v4, v6), frozenset(ports))


def loaded_table(nft: Sequence[str] = ("nft",)) -> LoadedTable | None:
    """The loaded wa_sip table, None when there is none; NftUnavailable when nft cannot tell."""
    if shutil.which(nft[0]) is None:
        raise NftUnavailable(f"{nft[0]} is not installed (Debian: apt-get install nftables)")
    if os.geteuid() != 0:
        raise NftUnavailable("reading the kernel's nftables needs root (CAP_NET_ADMIN): run doctor "
                             "as root on the edge host")
    try:
        result = subprocess.run([*nft, "-j", "list", "table", TABLE_FAMILY, TABLE_NAME],
                                capture_output=True, text=True, timeout=NFT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NftUnavailable(f"nft did not answer: {error}") from None
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return None
        raise NftUnavailable(f"nft failed: {result.stderr.strip() or result.returncode}")
    try:
        return parse_table(json.loads(result.stdout))
    except (ValueError, KeyError, TypeError) as error:
        raise NftUnavailable(f"cannot read nft's JSON: {error}") from None

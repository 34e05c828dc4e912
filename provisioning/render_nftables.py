"""Render the admission ruleset in front of the Meta-facing TLS port: OUT/nftables/wa-sip.nft.

One table of its own (`table inet wa_sip`), replaced whole on every `nft -f` and never touching
another table. What the rules decide is in templates/nftables/wa-sip.nft.j2; this module only
gathers the figures from [security.admission] and Meta's ranges (siteconfig/meta_ranges.py).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import jinja2

from provisioning.render import RenderError, replace_folder, template_environment
from siteconfig.meta_ranges import SHIPPED_RANGES_FILE, RangesError, collapse
from siteconfig.model import SiteConfig

TABLE_FAMILY, TABLE_NAME = "inet", "wa_sip"
META_SETS = {4: "meta_v4", 6: "meta_v6"}
RULESET_NAME = "wa-sip.nft"


@dataclass(frozen=True)
class MetaSets:
    """Meta's ranges as the interval sets hold them: merged, IPv4 and IPv6 apart."""

    v4: list[ipaddress.IPv4Network]
    v6: list[ipaddress.IPv6Network]


def meta_sets(cfg: SiteConfig) -> MetaSets:
    """The contents of the meta_v4 / meta_v6 sets for this site (RenderError if unusable)."""
    try:
        v4, v6 = collapse(cfg.security.admission.networks())
    except RangesError as error:
        raise RenderError(f"security.admission: {error}") from None
    return MetaSets(v4, v6)


def ranges_source(cfg: SiteConfig) -> str:
    admission = cfg.security.admission
    if admission.meta_ranges is not None:
        return "security.admission.meta_ranges"
    return str(admission.meta_ranges_file or SHIPPED_RANGES_FILE)


def ipv6_source_key(prefix: int) -> str:
    """The nft expression that names one IPv6 'source' for the per-source limits."""
    if prefix == 128:
        return "ip6 saddr"
    mask = ipaddress.IPv6Network(f"::/{prefix}").netmask
    return f"ip6 saddr and {mask}"


def nftables_ruleset(cfg: SiteConfig, path: Path) -> str:
    """The text of wa-sip.nft; `path` is where it will live (named in its load instructions)."""
    admission = cfg.security.admission
    sets = meta_sets(cfg)
    context = {
        "path": str(path),
        "port": cfg.listen.tls_socket()[1],
        "v4": [str(n) for n in sets.v4],
        "v6": [str(n) for n in sets.v6],
        "ranges_source": ranges_source(cfg),
        "meta_only": admission.meta_only,
        "meta_connections": admission.meta_connections,
        "other_connections": admission.other_budget(cfg.security.connections.tls_max_connections),
        "per_source_connections": admission.per_source_connections,
        "per_source_new_per_second": admission.per_source_new_per_second,
        "per_source_new_burst": admission.per_source_new_burst,
        "ipv6_source_prefix": admission.ipv6_source_prefix,
        "v6_source": ipv6_source_key(admission.ipv6_source_prefix),
    }
    try:
        return template_environment().get_template(f"nftables/{RULESET_NAME}.j2").render(context)
    except jinja2.TemplateError as error:
        raise RenderError(f"template nftables/{RULESET_NAME}.j2: {error}") from None


def render_nftables(cfg: SiteConfig, out: Path) -> Path | None:
    """Write OUT/nftables/wa-sip.nft and return its path; None when admission is disabled."""
    if not cfg.security.admission.enabled:
        return None
    target = out.resolve() / "nftables"
    path = target / RULESET_NAME
    replace_folder(target, {RULESET_NAME: nftables_ruleset(cfg, path)})
    return path

"""The site config and credentials every set-up of one bench run shares.

The bench starts from examples/site.toml, as the lab does, and moves sockets, certificates and
the credential store onto loopback. Two things differ from the lab, both for load: one
FreeSWITCH node (the SIPp UAS), and `security.allowed_sources` = loopback, so pike (which would
throttle 500 calls/s from one address) is not in play, as in a production edge that lists
Meta's prefixes.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.certs import TestCa, make_test_ca
from lab.edge import EXAMPLE_CONFIG, merge
from lab.processes import free_port
from provisioning.credential_store import credential_for, open_store
from provisioning.in_dialog_keys import ensure_key_file
from siteconfig.model import SiteConfig

BENCH_PASSWORD = "bench-sip-password-1"
META_USER = "+15550123456"


@dataclass(frozen=True)
class BenchPorts:
    """Loopback ports; every set-up of one run uses the same ones."""

    tls: int = field(default_factory=free_port)
    plain: int = field(default_factory=free_port)  # BENCH-ONLY plain TCP listener for Meta's leg
    internal: int = field(default_factory=free_port)
    freeswitch: int = field(default_factory=free_port)
    meta_sipp: int = field(default_factory=free_port)
    stunnel: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)  # Kamailio's /metrics: on, as in production
    front_backend: int = field(default_factory=free_port)  # HAProxy's side of Kamailio (5.6)
    outbound_tls: int = field(default_factory=free_port)  # Kamailio's own TLS socket toward Meta


@dataclass(frozen=True)
class BenchSite:
    config: SiteConfig
    ports: BenchPorts
    ca: TestCa
    folder: Path
    host: str = "127.0.0.1"  # this edge's address (bench-edge-site's second edge: 127.0.0.2)

    @property
    def business_number(self) -> str:
        return self.config.numbers[0].business_number

    @property
    def ruri_user(self) -> str:
        number = self.config.numbers[0]
        return number.business_number + "".join(
            f";{key}={value}" for key, value in number.request_uri_user_params.items())


def bench_site(folder: Path, ports: BenchPorts, metrics: bool = True, host: str = "127.0.0.1",
               cluster: dict[str, Any] | None = None, ca: TestCa | None = None) -> BenchSite:
    """Site config on loopback with its test CA and a credential store holding the HA1.

    `metrics`: the edge's /metrics endpoint on (as a production edge runs) or off, so one run
    each measures what the counters cost. `host`, `cluster`, `ca`: one edge of a site of
    several (bench-edge-site): its own loopback address, the site's `[cluster]` section with
    this edge's `this_edge`, the site's CA; the credential store and the in-dialog key file
    are `folder`'s, so edges given the same folder share them, as a site's edges do."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = ca or make_test_ca(folder / "ca")
    raw: dict[str, Any] = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    leaf = ca.issue("edge" if host == "127.0.0.1" else f"edge-{host}", [raw["site"]["sip_domain"]])
    loopback: dict[str, Any] = {
        "tls": {"certificate": str(leaf.certificate), "private_key": str(leaf.private_key),
                "ca_list": str(ca.certificate)},
        "listen": {"tls": f"{host}:{ports.tls}", "internal": f"{host}:{ports.internal}",
                   # the HAProxy-side sockets on free ports (not 5062/5063: a lab may hold them)
                   "front_backend": f"{host}:{ports.front_backend}",
                   "outbound_tls": f"{host}:{ports.outbound_tls}"},
        "credentials": {"store": f"sqlite:///{folder / 'credentials.sqlite'}"},
        "freeswitch": {"sets": [{"id": 1, "algorithm": "priority", "nodes": [
            {"uri": f"sip:127.0.0.1:{ports.freeswitch}", "priority": 10}]}]},
        "security": {"allowed_sources": ["127.0.0.0/8"], "pike_requests_per_second": 0},
        "bic": {"meta_server": "127.0.0.1:9"},
        "metrics": {"edge_listen": f"{host}:{ports.metrics}" if metrics else None},
        # the direct path: SIPp's SDP through the edge untouched, the edge's own cost measured
        # (bench/media/rtpengine measures calls through rtpengine)
        "media": {"anchor": "freeswitch"},
        "edge": {"in_dialog_key_file": str(folder / "in-dialog-keys.json")},
    }
    if cluster is not None:
        loopback["cluster"] = cluster
    config = SiteConfig.model_validate(merge(raw, loopback))
    ensure_key_file(config.edge.in_dialog_key_file)
    store = open_store(config.credentials.sqlite_path())
    try:
        store.put_many([credential_for(n.business_number, BENCH_PASSWORD, config.site.sip_domain)
                        for n in config.numbers], config.site.sip_domain)
    finally:
        store.close()
    return BenchSite(config, ports, ca, folder, host)

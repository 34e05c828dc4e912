"""The edge's view of the site config, read from the JSON file that `provision render` writes.

The edge does not parse the TOML site config itself: it would need pydantic inside Kamailio.
The renderer has validated everything; this module only turns the JSON into typed values.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port, transport) of a FreeSWITCH node: host lower-case without brackets, transport
# lower-case ("udp" unless the dispatcher URI says otherwise).
NodeAddress = tuple[str, int, str]


@dataclass(frozen=True)
class NumberSettings:
    business_number: str
    phone_number_id: str
    srtp_mode: str
    sdes_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",)
    additional_codecs: tuple[str, ...] = ()  # G.711 enabled at Meta: offered to Meta with Opus


@dataclass(frozen=True)
class MediaAnchorSettings:
    """Who anchors media toward Meta: FreeSWITCH itself, or rtpengine next to the edge."""

    anchor: str = "freeswitch"  # or "rtpengine"
    inside: str = "RTP"  # toward FreeSWITCH under rtpengine: "RTP" or "SDES"

    @property
    def rtpengine(self) -> bool:
        return self.anchor == "rtpengine"


def media_settings_from_dict(raw: object) -> MediaAnchorSettings:
    """An edge-settings.json without "media" (rendered before rtpengine) = FreeSWITCH anchors."""
    if not isinstance(raw, dict):
        return MediaAnchorSettings()
    return MediaAnchorSettings(str(raw.get("anchor", "freeswitch")), str(raw.get("inside", "RTP")))


def number_from_dict(raw: dict[str, Any]) -> NumberSettings:
    suites = raw.get("sdes_suites") or ("AES_CM_128_HMAC_SHA1_80",)
    return NumberSettings(str(raw["business_number"]), str(raw["phone_number_id"]),
                          str(raw["srtp_mode"]), tuple(str(s) for s in suites),
                          tuple(str(c) for c in raw.get("additional_codecs") or ()))


@dataclass(frozen=True)
class RouteSettings:
    match: dict[str, str]
    freeswitch_set: int | None
    context: str | None


@dataclass(frozen=True)
class BicSettings:
    """Business-initiated calls: who may originate, where Meta is, what happens to a bad From."""

    enabled: bool = True
    meta_server_host: str = "wa.meta.vc"
    meta_server_port: int = 5061
    trusted_sources: tuple[IPNetwork, ...] = ()
    from_mode: str = "refuse"
    default_number: str | None = None

    @property
    def destination_uri(self) -> str:
        """Where the INVITE is sent ($du); the request URI keeps Meta's host name."""
        host = self.meta_server_host
        if ":" in host:
            host = f"[{host}]"
        return f"sip:{host}:{self.meta_server_port};transport=tls"


def bic_settings_from_dict(raw: object) -> BicSettings:
    """An edge-settings.json without "bic" (rendered before business-initiated calls) = defaults."""
    if raw is None:
        return BicSettings()
    assert isinstance(raw, dict)
    sources = raw.get("trusted_sources", [])
    assert isinstance(sources, list)
    default = raw.get("default_number")
    return BicSettings(
        enabled=bool(raw.get("enabled", True)),
        meta_server_host=str(raw.get("meta_server_host", "wa.meta.vc")),
        meta_server_port=int(str(raw.get("meta_server_port", 5061))),
        trusted_sources=tuple(ipaddress.ip_network(s, strict=False) for s in sources),
        from_mode=str(raw.get("from_mode", "refuse")),
        default_number=str(default) if default else None,
    )


@dataclass(frozen=True)
class FrontSettings:
    """HAProxy terminates Meta's TLS (Kamailio 5.6): Meta's connections arrive on the TCP
    socket "meta", and the edge presets its Record-Route with the public TLS address."""

    haproxy: bool = False
    public_route: str = ""  # host:port;transport=tls;r2=on, the address Meta reaches
    internal_route: str = ""  # host:port;r2=on, the internal UDP socket


def front_settings_from_dict(raw: object) -> FrontSettings:
    if not isinstance(raw, dict) or not raw.get("haproxy"):
        return FrontSettings()
    return FrontSettings(True, str(raw["public_route"]), str(raw["internal_route"]))


@dataclass(frozen=True)
class ClusterSettings:
    """[cluster]: the other edges' DMQ sockets, and the table of nonces' accepted nc."""

    dmq_peers: frozenset[tuple[str, int]] = frozenset()
    nonce_table: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.dmq_peers)


def cluster_settings_from_dict(raw: object) -> ClusterSettings:
    """No "cluster" (a single edge, or rendered before [cluster]): no DMQ, auth's own nc check."""
    if not isinstance(raw, dict):
        return ClusterSettings()
    peers = raw.get("dmq_peers") or []
    assert isinstance(peers, list)
    return ClusterSettings(frozenset((str(host), int(port)) for host, port in peers),
                           str(raw.get("nonce_table", "")))


@dataclass(frozen=True)
class EdgeSettings:
    sip_domain: str
    accepted_domains: frozenset[str]
    auth_mode: str
    challenge_code: int
    failure_limit: int
    numbers: dict[str, NumberSettings]
    routes: tuple[RouteSettings, ...]
    default_set: int
    default_context: str
    set_algorithms: dict[int, int]
    allowed_sources: tuple[IPNetwork, ...]
    pike: bool
    payload_max_length: int
    meta_header_max_length: int
    freeswitch_nodes: frozenset[NodeAddress]
    meta_host_name: str = "wa.meta.vc"
    bic: BicSettings = BicSettings()
    kamailio_version: str = "5.6"
    www_challenge: bool = False
    """The Kamailio has the explicit 401/407 auth calls (6.0+); 5.6 has auth_challenge and
    pv_auth_check, which challenge an INVITE with 407 (provisioning/kamailio_features.py)."""
    front: FrontSettings = FrontSettings()
    """Who terminates Meta's TLS, and the Record-Route addresses when it is HAProxy."""
    media: MediaAnchorSettings = MediaAnchorSettings()
    in_dialog_key_file: str = ""
    """[edge] in_dialog_key_file: the site's Record-Route MAC keys (kemi/dialog_mac.py)."""
    probe_timeout_s: float = 5.0
    """[freeswitch] invite_timeout, tm's fr_timer: how long before a dispatcher probe fails."""
    cluster: ClusterSettings = ClusterSettings()


def settings_from_dict(raw: dict[str, object]) -> EdgeSettings:
    """Build settings from the rendered JSON; KeyError/TypeError mean a stale or foreign file."""
    numbers_raw = raw["numbers"]
    routes_raw = raw["routes"]
    sets_raw = raw["set_algorithms"]
    sources_raw = raw["allowed_sources"]
    accepted_raw = raw["accepted_domains"]
    nodes_raw = raw["freeswitch_nodes"]
    assert isinstance(numbers_raw, dict) and isinstance(routes_raw, list)
    assert isinstance(sets_raw, dict) and isinstance(sources_raw, list)
    assert isinstance(accepted_raw, list) and isinstance(nodes_raw, list)
    sip_domain = str(raw["sip_domain"]).lower()
    return EdgeSettings(
        sip_domain=sip_domain,
        accepted_domains=frozenset([sip_domain, *(str(d).lower() for d in accepted_raw)]),
        auth_mode=str(raw["auth_mode"]),
        challenge_code=int(str(raw["challenge_code"])),
        failure_limit=int(str(raw["failure_limit"])),
        numbers={digits: number_from_dict(n) for digits, n in numbers_raw.items()},
        routes=tuple(RouteSettings(r["match"], r.get("freeswitch_set"), r.get("context"))
                     for r in routes_raw),
        default_set=int(str(raw["default_set"])),
        default_context=str(raw["default_context"]),
        set_algorithms={int(k): int(v) for k, v in sets_raw.items()},
        allowed_sources=tuple(ipaddress.ip_network(s, strict=False) for s in sources_raw),
        pike=bool(raw["pike"]),
        payload_max_length=int(str(raw["payload_max_length"])),
        meta_header_max_length=int(str(raw["meta_header_max_length"])),
        freeswitch_nodes=frozenset((str(host).lower(), int(port), str(transport).lower())
                                   for host, port, transport in nodes_raw),
        meta_host_name=str(raw.get("meta_host_name", "wa.meta.vc")),
        bic=bic_settings_from_dict(raw.get("bic")),
        **kamailio_settings(raw.get("kamailio")),
        front=front_settings_from_dict(raw.get("tls_front")),
        media=media_settings_from_dict(raw.get("media")),
        in_dialog_key_file=str(raw.get("in_dialog_key_file") or ""),
        probe_timeout_s=float(str(raw.get("probe_timeout_s") or 5.0)),
        cluster=cluster_settings_from_dict(raw.get("cluster")),
    )


def kamailio_settings(raw: object) -> dict[str, Any]:
    """The rendered target Kamailio's version and features (absent: 5.6's)."""
    if not isinstance(raw, dict):
        return {}
    return {"kamailio_version": str(raw.get("version", "5.6")),
            "www_challenge": bool(raw.get("www_challenge", False))}


def load_settings(path: Path) -> EdgeSettings:
    with path.open(encoding="utf-8") as handle:
        return settings_from_dict(json.load(handle))

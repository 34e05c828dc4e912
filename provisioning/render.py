"""Render the Kamailio side of the bundle from templates/ into OUT/kamailio/.

Files are written to a temporary folder and moved into place only when all of them rendered,
so a failed render never leaves a half-written configuration for Kamailio to load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jinja2

from kemi.metrics import METRICS as PROM_METRICS
from provisioning.kamailio_features import (
    OLDEST,
    KamailioFeatures,
    features_for,
    installed_features,
)
from provisioning.render_haproxy import CONFIG_NAME as HAPROXY_CONFIG
from provisioning.render_haproxy import PEM_NAME as HAPROXY_PEM
from provisioning.render_haproxy import HaproxyRenderError, haproxy_files
from provisioning.render_rtpengine import render_rtpengine
from provisioning.templates_dir import KEMI_DIR, credentials_schema, templates_dir
from siteconfig.listen_address import parse_listen_address
from siteconfig.model import SiteConfig, split_host_port
from siteconfig.secret_source import SecretError, load_secret

DS_ALGORITHMS = {"hash-callid": 0, "round-robin": 4, "priority": 8}
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DMQ_SOCKET = "dmq"  # kamailio.cfg: the socket the edges' DMQ uses (kemi/edge.py reads it)
NONCE_TABLE = "wa_nonce"  # kamailio.cfg: nonce -> highest nc accepted, with [cluster] only
NONCE_SECRET_MIN = 16


class RenderError(Exception):
    """A template failed or the output folder cannot be written."""


@dataclass(frozen=True)
class RenderOptions:
    """Knobs that belong to a deployment (or a test), not to the site config."""

    workers: int = 4
    log_level: int = 2
    probe_interval: int = 10
    probe_failures: int = 2
    """Failed OPTIONS probes in a row before a node is marked down (dispatcher's
    ds_probing_threshold). Marking a node down also ends, with a BYE to Meta, every call the edge
    relayed to it (kemi/media_loss.py), so one lost UDP probe or one slow answer from a busy
    FreeSWITCH must not do it: two in a row. (Kamailio's own default, 1, would.) New calls do not
    wait for it: a node silent on an INVITE fails over on invite_timeout anyway."""
    auth_secret: str | None = None
    kamailio: KamailioFeatures | None = None
    """The Kamailio the output is for; None = the one installed here (the oldest supported,
    5.6, when none is), see target_features."""


def cluster_nonce_secret(cfg: SiteConfig) -> str | None:
    """The auth module's `secret` for a site of several edges, None for a single edge.

    Each edge's auth module signs its nonces with this secret, so every edge of the site must
    have the same one for a nonce issued by one to verify on another. Rendered as a hash of the
    site's secret (hex: safe inside kamailio.cfg's quotes, and not the file's text itself);
    no message ever quotes either.
    """
    cluster = cfg.cluster
    if not cluster.enabled:
        return None
    try:
        secret, _warnings = load_secret(
            "cluster nonce secret", cluster.nonce_secret_env, cluster.nonce_secret_file,
            "or set cluster.nonce_secret_file (the same secret on every edge of the site)")
    except SecretError as error:
        raise RenderError(str(error)) from None
    if len(secret) < NONCE_SECRET_MIN:
        raise RenderError(f"the cluster nonce secret is shorter than {NONCE_SECRET_MIN} "
                          "characters: make one with `openssl rand -hex 32`")
    return hashlib.sha256(b"wa-sip auth nonce secret\0" + secret.encode()).hexdigest()


def cluster_context(cfg: SiteConfig) -> dict[str, object]:
    """kamailio.cfg's view of [cluster]: this edge's DMQ socket and the peers' addresses."""
    cluster = cfg.cluster
    if not cluster.enabled:
        return {"cluster": False}
    own = cluster.own_socket()
    return {"cluster": True, "dmq_listen": socket_text(*own),
            "dmq_server_address": f"sip:{socket_text(*own)}",
            "dmq_peers": [f"sip:{socket_text(*peer)}" for peer in cluster.peer_sockets()],
            # the peers' internal sockets (their DMQ address, this edge's internal port): the
            # second Record-Route entry of a call another edge took names one of them
            "peer_internal": [socket_text(host, cfg.listen.internal_socket()[1])
                              for host, _ in cluster.peer_sockets()],
            # a nonce is valid nonce_expire s after it was issued (+ auth's 3 s drift)
            "nonce_table_expire": cfg.auth.nonce_expire + 10}


def target_features(options: RenderOptions) -> KamailioFeatures:
    """The Kamailio a render is for: the one named, else the one installed, else 5.6 (whose
    output every supported Kamailio loads, less what 6.0 adds)."""
    return options.kamailio or installed_features() or features_for(OLDEST)


def check_supported(cfg: SiteConfig, features: KamailioFeatures) -> None:
    """Refuse a site config that asks for what the target Kamailio cannot do."""
    if cfg.auth.challenge_code == 401 and not features.www_challenge:
        raise RenderError(f"auth.challenge_code = 401 needs Kamailio 6.0 or later; this render "
                          f"is for Kamailio {features.text}, which challenges with 407 only "
                          "(set challenge_code = 407, or render for a newer Kamailio)")


def tls_front(cfg: SiteConfig, features: KamailioFeatures) -> str:
    """Who terminates Meta's TLS: "kamailio" or "haproxy" (listen.tls_front; "auto" = HAProxy
    where the target Kamailio's tls module must not face the Internet, i.e. 5.6).

    "kamailio" on such a Kamailio is refused, not warned about: one scanner kills the whole edge
    within a minute, and every address on the Internet is scanned, so a warning would only say
    when the outage comes."""
    choice = cfg.listen.tls_front
    if choice == "auto" and features.tls_faces_internet:
        return "kamailio"
    if choice == "kamailio" and not features.tls_faces_internet:
        raise RenderError(
            f"listen.tls_front = 'kamailio' is refused for Kamailio {features.text}: its tls "
            "module with OpenSSL 3 dies of a double free (tls_init.c) under an ordinary TLS "
            "scan, and the whole edge stops; set tls_front = 'auto' or 'haproxy' (HAProxy "
            "terminates Meta's TLS), or render for Kamailio 6.0 or later")
    front = "haproxy" if choice == "auto" else choice
    if front == "haproxy":
        metrics = cfg.metrics.edge_socket()
        conflict = cfg.listen.front_port_conflict(metrics[1] if metrics else None)
        if conflict is not None:
            raise RenderError(f"HAProxy terminates Meta's TLS for Kamailio {features.text}: "
                              f"{conflict}")
    return front


def socket_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def record_route_addresses(cfg: SiteConfig) -> dict[str, str]:
    """The two Record-Route addresses the edge presets when HAProxy is in front (Kamailio's
    own would name its loopback TCP socket toward Meta): the public TLS address Meta reaches,
    and the internal UDP socket; r2=on so that loose_route takes both off."""
    tls_port = cfg.listen.tls_socket()[1]
    public = socket_text(cfg.listen.public_tls_host(cfg.site.sip_domain), tls_port)
    return {"public_route": f"{public};transport=tls;r2=on",
            "internal_route": f"{socket_text(*cfg.listen.internal_socket())};r2=on"}


def edge_settings(cfg: SiteConfig,
                  features: KamailioFeatures | None = None) -> dict[str, object]:
    """What the KEMI edge reads at start (kemi/settings.py is the other half of this);
    `features`: the Kamailio it runs in (default: the oldest supported)."""
    features = features or features_for(OLDEST)
    haproxy = tls_front(cfg, features) == "haproxy"
    return {
        "kamailio": features.to_settings(),
        "tls_front": {"haproxy": haproxy, **(record_route_addresses(cfg) if haproxy else {})},
        "sip_domain": cfg.site.sip_domain,
        "accepted_domains": cfg.site.accepted_domains,
        "auth_mode": cfg.auth.mode,
        "challenge_code": cfg.auth.challenge_code,
        "failure_limit": cfg.auth.failure_limit,
        "numbers": {n.digits: {"business_number": n.business_number,
                               "phone_number_id": n.phone_number_id,
                               "srtp_mode": n.srtp_mode,
                               "sdes_suites": list(n.sdes_suites),
                               "additional_codecs": list(n.additional_codecs)}
                    for n in cfg.numbers},
        "media": {"anchor": cfg.media.anchor, "inside": cfg.media.rtpengine.inside},
        "routes": [r.model_dump() for r in cfg.routes],
        "default_set": cfg.freeswitch.default_set,
        "default_context": cfg.freeswitch.default_context,
        "set_algorithms": {str(s.id): DS_ALGORITHMS[s.algorithm] for s in cfg.freeswitch.sets},
        "freeswitch_nodes": sorted({node_address(node.uri)
                                    for s in cfg.freeswitch.sets for node in s.nodes}),
        "allowed_sources": cfg.security.allowed_sources,
        "pike": cfg.security.pike_requests_per_second > 0,
        "payload_max_length": cfg.headers.payload_max_length,
        "meta_header_max_length": cfg.headers.meta_header_max_length,
        "meta_host_name": cfg.tls.meta_host_name,
        "in_dialog_key_file": str(cfg.edge.in_dialog_key_file),
        # a dispatcher probe fails after tm's fr_timer (kamailio.cfg): kemi/media_loss.py
        "probe_timeout_s": cfg.freeswitch.invite_timeout,
        # [cluster]: DMQ only from the peers' sockets; the edge keeps the replay check
        # (auth's nonce_count state is per process tree, a nonce from a peer would be stale).
        "cluster": {"dmq_peers": [list(peer) for peer in cfg.cluster.peer_sockets()],
                    "nonce_table": NONCE_TABLE} if cfg.cluster.enabled else None,
        "bic": {
            "enabled": cfg.bic.enabled,
            "meta_server_host": cfg.bic.meta_server_address()[0],
            "meta_server_port": cfg.bic.meta_server_address()[1],
            "trusted_sources": cfg.bic.trusted_sources,
            "from_mode": cfg.bic.from_mode,
            "default_number": cfg.bic.default_number,
        },
    }


def node_address(uri: str) -> tuple[str, int, str]:
    """(host, port, transport) of a dispatcher node URI, as the edge compares in-dialog targets
    with it (kemi/decisions.py next_hop_address: the same defaults)."""
    hostport, *params = uri.removeprefix("sip:").split(";")
    host, port = split_host_port(hostport, 5060)
    transport = next((p.split("=", 1)[1] for p in params
                      if p.lower().startswith("transport=")), "udp")
    return host.strip("[]").lower(), port, transport.lower()


def template_environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_kamailio(cfg: SiteConfig, out: Path, options: RenderOptions | None = None) -> Path:
    """Write OUT/kamailio/{kamailio.cfg,tls.cfg,dispatcher.list,wa_edge.py,...}; return it."""
    options = options or RenderOptions()
    features = target_features(options)
    check_supported(cfg, features)
    front = tls_front(cfg, features)
    target = out.resolve() / "kamailio"
    haproxy_target = out.resolve() / "haproxy"
    tls_host, tls_port = cfg.listen.tls_socket()
    internal_host, internal_port = cfg.listen.internal_socket()
    public_host = cfg.listen.public_tls_host(cfg.site.sip_domain)
    context = {
        "cfg": cfg,
        "kamailio": features,
        "out": str(target),
        "workers": options.workers,
        "log_level": options.log_level,
        "probe_interval": options.probe_interval,
        "probe_failures": options.probe_failures,
        "auth_secret": options.auth_secret or cluster_nonce_secret(cfg),
        "nonce_table": NONCE_TABLE,
        **cluster_context(cfg),
        "tls_listen": socket_text(tls_host, tls_port),
        "tls_port": tls_port,
        "internal_listen": socket_text(internal_host, internal_port),
        "rpc_socket": str(target / "kamailio_rpc.sock"),
        "meta_ca_list": str(cfg.tls.ca_list or SYSTEM_CA_BUNDLE),
        "kemi_parent": str(KEMI_DIR.parent),
        "settings_path": str(target / "edge-settings.json"),
        "metrics_listen": socket_text(*metrics) if (metrics := cfg.metrics.edge_socket()) else "",
        "prom_metrics": PROM_METRICS,
        "front_haproxy": front == "haproxy",
        "front_backend": socket_text(*cfg.listen.front_backend_socket()),
        "outbound_tls": socket_text(*cfg.listen.outbound_tls_socket()),
        # Advertised on the outbound TLS socket (Via toward Meta, and "myself" for Meta's
        # Route): an address, or the name the site gave; never a name Kamailio might fail to
        # resolve at start (it would drop the socket).
        "public_tls": socket_text(public_host, tls_port),
        "advertise_public": bool(cfg.listen.advertise) or public_host != cfg.site.sip_domain,
        "rtpengine_ng": socket_text(*parse_listen_address(cfg.media.rtpengine.ng_listen)),
    }
    env = template_environment()
    files: dict[str, str] = {}
    front_files: dict[str, str] = {}
    try:
        for name in ("kamailio.cfg", "tls.cfg", "dispatcher.list", "wa_edge.py"):
            template = f"kamailio/{name}.j2"
            files[name] = env.get_template(template).render(context)
        template = "haproxy/haproxy.cfg.j2"
        if front == "haproxy":
            front_files = haproxy_files(cfg, features, haproxy_target, env)
    except jinja2.TemplateError as error:
        raise RenderError(f"template {template}: {error}") from None
    except HaproxyRenderError as error:
        raise RenderError(str(error)) from None
    files["edge-settings.json"] = json.dumps(edge_settings(cfg, features), indent=2,
                                             sort_keys=True) + "\n"
    files["credentials-schema.sql"] = credentials_schema()
    replace_folder(target, files)
    render_rtpengine(cfg, out.resolve() / "rtpengine", env, str(context["rtpengine_ng"]))
    if front_files:
        replace_folder(haproxy_target, front_files, private=frozenset({HAPROXY_PEM}))
    else:  # Kamailio faces Meta: no HAProxy file may be left to bind the same port
        for stale in (HAPROXY_CONFIG, HAPROXY_PEM):
            (haproxy_target / stale).unlink(missing_ok=True)
    return target


def replace_folder(target: Path, files: dict[str, str], private: frozenset[str] = frozenset()) -> None:
    """Write all files next to `target`, then swap them in; keep run-time files Kamailio made.

    Files named in `private` hold secrets and are made 0600 instead of 0640.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".render-", dir=target.parent))
        try:
            for name, text in files.items():
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)  # names may hold sub-folders
                path.write_text(text, encoding="utf-8")
                os.chmod(path, 0o600 if name in private else 0o640)
            target.mkdir(exist_ok=True)
            for name in files:
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as error:
        raise RenderError(f"cannot write {target}: {error.strerror or error}") from None

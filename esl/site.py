"""The controller's settings and the FreeSWITCH side, derived from the one site config.

The site TOML is the single source of truth: each number's SRTP mode lives in ``[[numbers]]``
(the edge, Meta's settings and FreeSWITCH must agree on it), the controller's own knobs in
``[esl]``, the FreeSWITCH profile's addresses in ``[freeswitch.profile]``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from esl.fsconfig import FreeswitchSite
from esl.webhook import WebhookConfig
from siteconfig.controller import (
    ControllerSettings,
    GraphAccess,
    NumberSettings,
    SettingsError,
    SrtpMode,
    load_settings,
)
from siteconfig.listen_address import parse_listen_address
from siteconfig.model import ConfigError, SiteConfig, load_config
from siteconfig.secret_source import SecretError, load_secret

INSIDE_SDES_SUITES = ("AES_CM_128_HMAC_SHA1_80",)
"""The suite FreeSWITCH takes from rtpengine when the site keeps SRTP inside ([media.rtpengine]
inside = "SDES")."""


def freeswitch_leg_mode(cfg: SiteConfig, meta_mode: str) -> SrtpMode:
    """What FreeSWITCH sees of a number's media: Meta's mode when FreeSWITCH anchors it; with
    rtpengine, plain RTP (or SDES inside), whatever Meta uses (rtpengine turns one into the
    other)."""
    if cfg.media.anchor == "rtpengine":
        return "SDES" if cfg.media.rtpengine.inside == "SDES" else "RTP"
    return "SDES" if meta_mode == "SDES" else "DTLS"


def controller_settings(cfg: SiteConfig) -> ControllerSettings:
    """``ControllerSettings`` for ``wa-esl`` from a validated site config."""
    esl = cfg.esl
    return ControllerSettings(
        freeswitch=esl.freeswitch,
        listen=esl.listen,
        numbers=tuple(
            NumberSettings(business_number=n.business_number, phone_number_id=n.phone_number_id,
                           srtp_mode=freeswitch_leg_mode(cfg, n.srtp_mode),
                           sdes_suites=tuple(n.sdes_suites) if cfg.media.anchor == "freeswitch"
                           else INSIDE_SDES_SUITES,
                           additional_codecs=tuple(n.additional_codecs),
                           meta_srtp_mode=n.srtp_mode if cfg.media.anchor == "rtpengine"
                           else None)
            for n in cfg.numbers),
        routes=tuple(esl.routes),
        cdr_db=esl.cdr_db,
        cdr_spool=esl.cdr_spool,
        cdr_spool_max_records=esl.cdr_spool_max_records,
        node=esl.node,
        node_lost_after_s=esl.node_lost_after_s,
        media=esl.media,
        reconnect=esl.reconnect,
        linger_s=esl.linger_s,
        metrics_listen=esl.metrics_listen,
        edge_log=esl.edge_log,
        preflight=esl.preflight,
        graph=GraphAccess(base_url=cfg.graph.base_url, api_version=cfg.graph.api_version,
                          token_env=cfg.graph.token_env, token_file=cfg.graph.token_file),
    )


def freeswitch_site(cfg: SiteConfig) -> FreeswitchSite:
    """Addresses of the FreeSWITCH side; the edge's internal socket is its SIP peer.

    Raises ValueError when the edge's internal address cannot be known.
    """
    profile = cfg.freeswitch.profile
    host, port = cfg.listen.internal_socket()
    if host in ("0.0.0.0", "::"):
        raise ValueError(
            "listen.internal is a wildcard address; FreeSWITCH must send its calls to the edge's "
            "real internal address: set listen.internal to it (e.g. 10.0.0.5:5060)")
    proxy = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    edge_networks = tuple(profile.edge_networks)
    if not edge_networks:
        edge_networks = (f"{host}/128" if ":" in host else f"{host}/32",)
    return FreeswitchSite(
        sip_ip=profile.sip_ip,
        rtp_ip=profile.rtp_ip,
        ext_rtp_ip=profile.ext_rtp_ip,
        sip_port=profile.sip_port,
        edge_proxy=proxy,
        edge_networks=edge_networks,
        candidate_networks=tuple(profile.candidate_networks),
        esl_listen_ip=profile.esl_listen_ip,
        esl_allowed_networks=tuple(profile.esl_allowed_networks),
        tls_enabled=profile.tls,
        tls_port=profile.tls_port,
        tls_cert_dir=profile.tls_cert_dir,
        meta_media=cfg.media.anchor == "freeswitch",
    )


def load_controller_settings(path: Path) -> ControllerSettings:
    """Settings for ``wa-esl --config PATH``: a site config (it has ``[site]``) or an ESL-only file.

    Raises SettingsError with every problem, naming the file and key.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return load_settings(path)  # it reports the reading problem in its own words
    if "site" not in document:
        return load_settings(path)
    try:
        return controller_settings(load_config(path))
    except ConfigError as error:
        raise SettingsError(str(error)) from None


class WebhookSetupError(Exception):
    """The site config cannot run the webhook receiver (no [webhook] listen, no secret)."""


def webhook_config(path: Path, environ: Mapping[str, str] | None = None) -> WebhookSetup:
    """The receiver's settings from the site config at ``path``, secrets read from env or files.

    Raises WebhookSetupError naming the key or variable at fault (never quoting a secret).
    """
    try:
        cfg = load_config(path)
    except ConfigError as error:
        raise WebhookSetupError(str(error)) from None
    section = cfg.webhook
    if section.listen is None:
        raise WebhookSetupError(f"{path}: [webhook] listen is not set (address:port to serve on)")
    try:
        secret, warnings = load_secret(
            "Meta app secret", section.app_secret_env, section.app_secret_file,
            "or webhook.app_secret_file in the site config (the app's secret signs every post)",
            environ)
        token, more = load_secret(
            "webhook verify token", section.verify_token_env, section.verify_token_file,
            "or webhook.verify_token_file in the site config (the token you gave Meta)", environ)
    except SecretError as error:
        raise WebhookSetupError(str(error)) from None
    config = WebhookConfig(
        app_secret=secret, verify_token=token, database=cfg.esl.cdr_db,
        numbers_by_id={n.phone_number_id: n.business_number for n in cfg.numbers},
        max_body_bytes=section.max_body_bytes,
        refusal_log_interval_s=section.refusal_log_interval_s)
    return WebhookSetup(config, parse_listen_address(section.listen),
                        parse_listen_address(section.metrics_listen)
                        if section.metrics_listen else None,
                        section.duration_tolerance_s, tuple(warnings + more))


@dataclass(frozen=True)
class WebhookSetup:
    config: WebhookConfig
    listen: tuple[str, int]
    metrics_listen: tuple[str, int] | None
    duration_tolerance_s: int
    warnings: tuple[str, ...]


def duration_tolerance(path: Path) -> int:
    """``[webhook] duration_tolerance_s`` of a site config; 6 s (Meta's billing pulse) otherwise."""
    try:
        return load_config(path).webhook.duration_tolerance_s
    except ConfigError:
        return 6

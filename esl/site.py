"""The controller's settings and the FreeSWITCH side, derived from the one site config.

The site TOML is the single source of truth: each number's SRTP mode lives in ``[[numbers]]``
(the edge, Meta's settings and FreeSWITCH must agree on it), the controller's own knobs in
``[esl]``, the FreeSWITCH profile's addresses in ``[freeswitch.profile]``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from esl.fsconfig import FreeswitchSite
from siteconfig.controller import ControllerSettings, NumberSettings, SettingsError, load_settings
from siteconfig.model import ConfigError, SiteConfig, load_config


def controller_settings(cfg: SiteConfig) -> ControllerSettings:
    """``ControllerSettings`` for ``wa-esl`` from a validated site config."""
    esl = cfg.esl
    return ControllerSettings(
        freeswitch=esl.freeswitch,
        listen=esl.listen,
        numbers=tuple(
            NumberSettings(business_number=n.business_number, srtp_mode=n.srtp_mode,
                           sdes_suites=tuple(n.sdes_suites),
                           additional_codecs=tuple(n.additional_codecs))
            for n in cfg.numbers),
        routes=tuple(esl.routes),
        cdr_db=esl.cdr_db,
        media=esl.media,
        reconnect=esl.reconnect,
        linger_s=esl.linger_s,
        metrics_listen=esl.metrics_listen,
        edge_log=esl.edge_log,
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

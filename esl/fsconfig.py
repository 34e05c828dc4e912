"""The FreeSWITCH side of ``provision render``: template context and output checks.

``templates/freeswitch/*.xml.j2`` take the context built by :func:`freeswitch_context`; the
renderer writes them to ``OUT/freeswitch/`` and should run :func:`check_rendered_xml` on each
result: XML must parse, and every sofia ``<param name>`` must be one FreeSWITCH knows (a typo
in a param name is silently ignored by sofia, which is how "enable-timers=false" ships and
Meta starts refusing re-INVITEs).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from esl.settings import ControllerSettings

TEMPLATES = (
    "sofia_wa_edge.xml",
    "dialplan_whatsapp.xml",
    "acl.conf.xml",
    "event_socket.conf.xml",
    "modules.conf.xml",
)

SOFIA_PROFILE_PARAMS = frozenset(
    {
        "user-agent-string", "context", "dialplan", "sip-ip", "sip-port", "rtp-ip",
        "ext-rtp-ip", "ext-sip-ip", "apply-inbound-acl", "apply-candidate-acl", "auth-calls",
        "codec-prefs", "inbound-codec-prefs", "outbound-codec-prefs",
        "inbound-codec-negotiation", "inbound-late-negotiation", "enable-timer",
        "session-timeout", "minimum-session-expires", "disable-hold", "enable-100rel",
        "dtmf-type", "rfc2833-pt", "liberal-dtmf", "suppress-cng", "rtp-timer-name",
        "rtp-timeout-sec", "rtp-hold-timeout-sec", "tls", "tls-only", "tls-sip-port",
        "tls-cert-dir", "tls-version", "tls-verify-policy", "tls-verify-in-subjects",
        "tls-verify-date", "tls-verify-depth", "sip-trace", "debug", "manage-presence",
        "challenge-realm", "nonce-ttl", "accept-blind-reg", "caller-id-type",
    }
)
"""Sofia profile ``<settings>`` parameter names (sofia.c, config_sofia_profile)."""

SOFIA_GATEWAY_PARAMS = frozenset(
    {
        "proxy", "realm", "username", "password", "register", "caller-id-in-from",
        "register-transport", "from-user", "from-domain", "extension", "extension-in-contact",
        "contact-params", "ping", "retry-seconds", "expire-seconds", "auth-username",
        "outbound-proxy", "register-proxy", "contact-host",
    }
)
"""Sofia ``<gateway>`` parameter names (sofia.c, parse_gateways)."""


@dataclass(frozen=True)
class FreeswitchSite:
    """Addresses the FreeSWITCH side needs that the controller settings do not hold."""

    sip_ip: str
    rtp_ip: str
    edge_proxy: str  # host:port of the Kamailio edge's internal listener
    edge_networks: tuple[str, ...]
    candidate_networks: tuple[str, ...]
    sip_port: int = 5080
    ext_rtp_ip: str = ""
    esl_listen_ip: str = "127.0.0.1"
    esl_allowed_networks: tuple[str, ...] = ("127.0.0.1/32",)
    tls_enabled: bool = False
    tls_port: int = 5081
    tls_cert_dir: str = "/etc/freeswitch/tls"


def freeswitch_context(settings: ControllerSettings, site: FreeswitchSite) -> dict[str, object]:
    """The Jinja context of every ``templates/freeswitch`` template."""
    return {
        "gateway_name": settings.freeswitch.gateway,
        "edge_proxy": site.edge_proxy,
        "sip_ip": site.sip_ip,
        "sip_port": site.sip_port,
        "rtp_ip": site.rtp_ip,
        "ext_rtp_ip": site.ext_rtp_ip,
        "codecs": list(settings.media.codecs),
        "media_timeout_ms": settings.media.media_timeout_ms,
        "tls": {"enabled": site.tls_enabled, "port": site.tls_port, "cert_dir": site.tls_cert_dir},
        "numbers": [n.model_dump() for n in settings.numbers],
        "controller_socket": f"{settings.listen.host}:{settings.listen.port}",
        "edge_networks": list(site.edge_networks),
        "candidate_networks": list(site.candidate_networks),
        "esl": {
            "listen_ip": site.esl_listen_ip,
            "port": settings.freeswitch.port,
            "password": settings.freeswitch.password.get_secret_value(),
            "allowed_networks": list(site.esl_allowed_networks),
        },
    }


def check_rendered_xml(name: str, text: str) -> list[str]:
    """Problems in one rendered file: XML syntax, unknown sofia parameter names."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return [f"{name}: not well-formed XML: {exc}"]
    problems = []
    for profile in root.iter("profile"):
        for param in profile.iterfind("settings/param"):
            param_name = param.get("name", "")
            if param_name not in SOFIA_PROFILE_PARAMS:
                problems.append(f"{name}: unknown sofia profile param {param_name!r}")
        for param in profile.iterfind("gateways/gateway/param"):
            param_name = param.get("name", "")
            if param_name not in SOFIA_GATEWAY_PARAMS:
                problems.append(f"{name}: unknown sofia gateway param {param_name!r}")
    return problems

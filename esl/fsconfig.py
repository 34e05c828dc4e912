"""The FreeSWITCH side of ``provision render``: template context and output checks.

``templates/freeswitch/*.xml.j2`` take the context built by :func:`freeswitch_context`; the
renderer writes them to ``OUT/freeswitch/`` and should run :func:`check_rendered_xml` on each
result: XML must parse, and every sofia ``<param name>`` must be one FreeSWITCH knows (a typo
in a param name is silently ignored by sofia, which is how "enable-timers=false" ships and
Meta starts refusing re-INVITEs).
"""

from __future__ import annotations

import posixpath
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from siteconfig.controller import ControllerSettings

TEMPLATES = (
    "freeswitch.xml",
    "vars.xml",
    "autoload_configs/switch.conf.xml",
    "autoload_configs/modules.conf.xml",
    "autoload_configs/console.conf.xml",
    "autoload_configs/logfile.conf.xml",
    "autoload_configs/acl.conf.xml",
    "autoload_configs/event_socket.conf.xml",
    "autoload_configs/sofia.conf.xml",
    "autoload_configs/opus.conf.xml",
    "sip_profiles/wa-edge.xml",
    "dialplan/whatsapp.xml",
)
"""The rendered configuration folder, as FreeSWITCH's own conf/ lays it out; ``freeswitch.xml``
includes every other file by name (``-conf DIR`` is all FreeSWITCH needs)."""


@dataclass(frozen=True)
class Module:
    name: str
    why: str


BASE_MODULES = (
    Module("mod_console", "log to the console when run in the foreground (-nf)"),
    Module("mod_logfile", "freeswitch.log in the -log folder"),
    Module("mod_event_socket", "the Event Socket wa-esl connects to"),
    Module("mod_sofia", "SIP: the wa-edge profile and gateway"),
    Module("mod_commands", "API commands wa-esl uses (originate, uuid_exists, uuid_kill, ...)"),
    Module("mod_dptools", "dialplan applications (socket, answer, park, bridge, silence_stream://)"),
    Module("mod_dialplan_xml", "the whatsapp dialplan context"),
    Module("mod_opus", "OPUS 48 kHz: Meta offers and expects it on every call"),
)
IVR_MODULES = (
    Module("mod_sndfile", "IVR routes: playback of WAV files"),
    Module("mod_tone_stream", "IVR routes: tone_stream:// prompts"),
)
CODEC_MODULES = {"OPUS": "mod_opus"}  # PCMU/PCMA are built into the core


def required_modules(settings: ControllerSettings) -> list[Module]:
    """The modules the site's settings need, and only those (ivr routes add file formats)."""
    modules = list(BASE_MODULES)
    if any(route.target.action == "ivr" for route in settings.routes):
        modules += IVR_MODULES
    return modules


CORE_DEFAULTS: dict[str, object] = {
    "loglevel": "info",
    "logfile_levels": "info,notice,warning,err,crit,alert",
    "max_sessions": 1000,
    "sessions_per_second": 200,
    "rtp_start_port": 16384,
    "rtp_end_port": 32768,
}
"""switch.conf values: enough sessions per second for bench-esl's real-switch phase."""

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
        "rtcp-audio-interval-msec",
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
    meta_media: bool = True
    """FreeSWITCH terminates Meta's ICE and SRTP itself ([media] anchor = "freeswitch"): the
    profile carries the ICE candidate ACL. False behind rtpengine: the plain profile, plain RTP
    from rtpengine, no ICE, DTLS or WebRTC setting."""


def freeswitch_context(settings: ControllerSettings, site: FreeswitchSite) -> dict[str, object]:
    """The Jinja context of every ``templates/freeswitch`` template."""
    return {
        "modules": required_modules(settings),
        "core": CORE_DEFAULTS,
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
        "meta_media": site.meta_media,
        "esl": {
            "listen_ip": site.esl_listen_ip,
            "port": settings.freeswitch.port,
            "password": settings.freeswitch.password.get_secret_value(),
            "allowed_networks": list(site.esl_allowed_networks),
        },
    }


_INCLUDE = re.compile(r'<X-PRE-PROCESS\s+cmd="include"\s+data="([^"]+)"')


def check_complete(files: dict[str, str]) -> list[str]:
    """Problems with the folder as a whole: an include that names no rendered file.

    FreeSWITCH only logs "No files to include" and starts without it, e.g. without the profile.
    """
    problems = []
    for name, text in files.items():
        folder = posixpath.dirname(name)
        for target in _INCLUDE.findall(text):
            path = posixpath.normpath(posixpath.join(folder, target))
            if path not in files:
                problems.append(f"{name}: includes {target}, which is not rendered")
    return problems


def check_rendered_xml(name: str, text: str) -> list[str]:
    """Problems in one rendered file: XML syntax, unknown sofia parameter names."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        return [f"{name}: not well-formed XML: {exc}"]
    problems: list[str] = []
    if root.tag == "configuration" and root.get("name") != "sofia.conf":
        return problems  # other modules' <profile>s (logfile.conf) have their own params
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

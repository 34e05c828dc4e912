"""`provision doctor`: the checks Meta's FAQ asks a human to make, automated.

Each finding is pass / warn / fail with its cause and the fix, so the output can be read by
someone who never saw the FAQ: TLS as Meta sees it (chain, host name, expiry, no client
certificate request), TCP reachability, SIP status and this app's server on Meta, app
authorization symptoms, the From domain business-initiated calls will carry versus the
configured hostname, SRTP agreement between Meta and FreeSWITCH, the store/edge credentials,
and the media anchor ([media] anchor: rtpengine answering and on an interface Meta reaches, or,
on the direct path, a FreeSWITCH carrying patch 0001 for DTLS numbers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from graphapi.client import GraphClient
from graphapi.errors import GraphError
from provisioning import kamailio_rpc
from provisioning.credential_store import StoreError, credential_for
from provisioning.freeswitch_patch import ICE_LITE_PATCH, PatchState, patch_state
from provisioning.kamailio_features import KamailioFeatures
from provisioning.nftables_state import NftUnavailable, loaded_table
from provisioning.redis_probe import RedisProbeError, keyspace_events, standby_ready
from provisioning.render import RenderError
from provisioning.render_nftables import RULESET_NAME, meta_sets
from provisioning.rtpengine_metrics import MetricsError, fetch_metrics
from provisioning.rtpengine_ng import NgError, ping
from provisioning.settings_model import (
    DEFAULT_SRTP,
    SettingsFormatError,
    codecs_text,
    parse_settings,
)
from provisioning.store_backend import CredentialBackend
from provisioning.tls_probe import TlsProbe
from siteconfig.listen_address import parse_listen_address
from siteconfig.model import Number, SiteConfig


class Level(Enum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    subject: str
    cause: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "level": self.level.value, "subject": self.subject,
                "cause": self.cause, "fix": self.fix}


def tls_findings(probe: TlsProbe, expiry_days: int) -> list[Finding]:
    subject = f"{probe.server_name} via {probe.host}:{probe.port}"
    if not probe.reachable:
        return [Finding("tcp", Level.FAIL, subject, f"cannot open a TCP connection: {probe.connect_error}",
                        "check that Kamailio listens on the TLS socket and that the firewall lets "
                        "Meta's prefixes (AS32934) in on this port")]
    found = [Finding("tcp", Level.PASS, subject, "TCP connection accepted")]
    if probe.handshake_error:
        return [*found, Finding("tls.handshake", Level.FAIL, subject,
                                f"TLS handshake failed: {probe.handshake_error}",
                                "check tls.certificate / tls.private_key and Kamailio's tls.cfg")]
    if probe.chain_ok:
        found.append(Finding("tls.chain", Level.PASS, subject, "certificate chain verifies"))
    else:
        found.append(Finding("tls.chain", Level.FAIL, subject,
                             f"certificate chain does not verify: {probe.chain_error}",
                             "serve the full chain (leaf first, then intermediates) from a public CA"))
    if probe.hostname_ok:
        found.append(Finding("tls.hostname", Level.PASS, subject, f"certificate covers {probe.server_name}"))
    else:
        found.append(Finding("tls.hostname", Level.FAIL, subject,
                             f"certificate names {probe.names} do not cover {probe.server_name} "
                             "(openssl: verify error:num=62:hostname mismatch)",
                             f"get a certificate whose SAN includes {probe.server_name}"))
    days = probe.days_left()
    if days is not None:
        when = probe.not_after.date().isoformat() if probe.not_after else "?"
        if days <= 0:
            found.append(Finding("tls.expiry", Level.FAIL, subject, f"certificate expired on {when}",
                                 "renew the certificate and reload Kamailio's TLS (tls.reload)"))
        elif days <= expiry_days:
            found.append(Finding("tls.expiry", Level.WARN, subject,
                                 f"certificate expires in {days:.0f} days ({when})",
                                 "renew it now; then run `kamcmd tls.reload`"))
        else:
            found.append(Finding("tls.expiry", Level.PASS, subject, f"certificate valid until {when}"))
    if probe.client_cert_requested is None:
        found.append(Finding("tls.client_certificate", Level.WARN, subject, probe.client_cert_note,
                             "install openssl to check this"))
    elif probe.client_cert_requested:
        found.append(Finding("tls.client_certificate", Level.FAIL, subject,
                             "the server requests a client certificate; Meta would present one "
                             "whose name fails and the call setup breaks",
                             "set verify_certificate = no and require_certificate = no in the "
                             "[server:default] profile of tls.cfg"))
    else:
        found.append(Finding("tls.client_certificate", Level.PASS, subject,
                             "no client certificate requested"))
    return found


def from_domain_matches(from_domain: str, hostname: str) -> bool:
    """Meta accepts a BIC From domain equal to the configured hostname or a parent domain of it."""
    from_domain, hostname = from_domain.lower().rstrip("."), hostname.lower().rstrip(".")
    return hostname == from_domain or hostname.endswith("." + from_domain)


def graph_auth_finding(subject: str, error: GraphError) -> Finding:
    if error.auth_problem:
        return Finding("graph.authorization", Level.FAIL, subject, error.explain(),
                       "give the app whatsapp_business_management and whatsapp_business_messaging "
                       "on the number's WhatsApp Business Account, with a valid system-user token")
    return Finding("graph.settings", Level.FAIL, subject, error.explain(),
                   "retry later; give Meta support the fbtrace_id if it persists")


async def number_findings(client: GraphClient, cfg: SiteConfig, app_id: str, number: Number,
                          store: CredentialBackend | None, rpc_sockets: list[Path]) -> list[Finding]:
    subject = number.business_number
    try:
        settings = parse_settings(await client.get_settings(number.phone_number_id, True))
    except GraphError as error:
        return [graph_auth_finding(subject, error)]
    except SettingsFormatError as error:
        return [Finding("graph.settings", Level.FAIL, subject, f"unexpected settings answer: {error}")]
    found = []
    if settings.sip_status == "ENABLED":
        found.append(Finding("sip.status", Level.PASS, subject, "SIP is ENABLED on Meta"))
    else:
        found.append(Finding("sip.status", Level.FAIL, subject, f"SIP is {settings.sip_status} on Meta: "
                             "calls do not reach the edge", "run provision apply"))
    ours = settings.server_for(app_id)
    others = settings.other_apps(app_id)
    if others:
        found.append(Finding("sip.other_apps", Level.WARN, subject,
                             f"apps {sorted({o.app_id for o in others})} also have servers; Meta ends "
                             "calls on a BYE from any of them",
                             "remove the other app's server with its own token, or stop serving the "
                             "number from this app"))
    if ours is None:
        found.append(Finding("sip.server", Level.FAIL, subject, f"no SIP server for app {app_id}",
                             "run provision apply (if another app configured it, that app's server "
                             "gets the calls)"))
        return found
    if ours.hostname == cfg.site.sip_domain:
        found.append(Finding("sip.server", Level.PASS, subject, f"server {ours.hostname}:{ours.port}"))
    else:
        found.append(Finding("sip.server", Level.FAIL, subject,
                             f"Meta sends calls to {ours.hostname}, the edge serves {cfg.site.sip_domain}",
                             "run provision apply, or fix site.sip_domain"))
    if ours.port != cfg.graph.server_port:
        found.append(Finding("sip.server.port", Level.WARN, subject,
                             f"Meta uses port {ours.port}, the config says {cfg.graph.server_port}",
                             "run provision apply or fix graph.server_port"))
    if ours.password is None:
        found.append(Finding("graph.authorization", Level.FAIL, subject,
                             "Graph returns no SIP password for this app (Meta answers BICs with "
                             "'403 The app [ID] configured for SIP server X is not authorized')",
                             "give the app whatsapp_business_messaging"))
    for domain in [cfg.site.sip_domain, *cfg.site.accepted_domains]:
        if from_domain_matches(domain, ours.hostname):
            found.append(Finding("bic.from_domain", Level.PASS, subject,
                                 f"From domain {domain} matches {ours.hostname}"))
        else:
            level = Level.FAIL if domain == cfg.site.sip_domain else Level.WARN
            found.append(Finding("bic.from_domain", level, subject,
                                 f"a business-initiated call with From domain {domain} gets 403 "
                                 f"'SIP server {domain} does not match' (Meta has {ours.hostname})",
                                 "use the configured hostname (or a parent domain of it) in From"))
    meta_srtp = settings.srtp or DEFAULT_SRTP
    if meta_srtp == number.srtp_mode:
        found.append(Finding("srtp", Level.PASS, subject, f"Meta and FreeSWITCH both use {meta_srtp}"))
    else:
        found.append(Finding("srtp", Level.FAIL, subject,
                             f"Meta uses {meta_srtp}{'' if settings.srtp else ' (default)'}, FreeSWITCH "
                             f"is set for {number.srtp_mode}: calls get no audio",
                             "run provision apply (sets Meta to the config), or change srtp_mode "
                             "in [[numbers]] and re-render FreeSWITCH"))
    found.append(_codecs_finding(number, settings.effective_codecs))
    if store is not None and ours.password is not None:
        found.append(_store_finding(cfg, number, store, ours.password.get_secret_value(), rpc_sockets))
    return found


def _codecs_finding(number: Number, at_meta: frozenset[str]) -> Finding:
    """What Meta offers beside Opus (audio.additional_codecs) against the number's additional_codecs.

    A mismatch is a warning, not a failure: Opus is on both sides either way, so calls have audio;
    what is lost is G.711 end to end (FreeSWITCH transcodes instead) or, when Meta has a codec the
    config lacks, that codec in business-initiated offers (the edge keeps only what the config says).
    """
    subject = number.business_number
    wanted = frozenset(number.additional_codecs)
    if at_meta == wanted:
        return Finding("codecs", Level.PASS, subject, f"Meta offers {codecs_text(at_meta)}, as configured")
    return Finding("codecs", Level.WARN, subject,
                   f"Meta offers {codecs_text(at_meta)}, the config says {codecs_text(wanted)}: "
                   "no G.711 end to end for the codecs that differ (Opus still works)",
                   "run provision apply (sets audio.additional_codecs from additional_codecs)")


def _store_finding(cfg: SiteConfig, number: Number, store: CredentialBackend, password: str,
                   rpc_sockets: list[Path]) -> Finding:
    subject = number.business_number
    expected = credential_for(number.business_number, password, cfg.site.sip_domain)
    try:
        stored = store.get(number.business_number)
    except StoreError as error:
        return Finding("store", Level.FAIL, subject, str(error), "check credentials.store")
    if stored != expected:
        return Finding("store", Level.FAIL, subject,
                       "the store has no credential for this number" if stored is None else
                       "the store's credential is not Meta's current password",
                       "run provision sync")
    for rpc in rpc_sockets:
        try:
            loaded = kamailio_rpc.call(rpc, "htable.get", "wa_creds", f"{number.digits}:ha1")
        except kamailio_rpc.RpcError as error:
            return Finding("edge", Level.WARN, subject, f"cannot ask Kamailio: {error}",
                           "check the --rpc-socket path and that Kamailio runs")
        value = loaded.get("item", {}).get("value") if isinstance(loaded, dict) else None
        if value != expected.ha1:
            return Finding("edge", Level.FAIL, subject, f"Kamailio at {rpc} has not loaded the current "
                           "credential", "run provision sync --rpc-socket ... (it reloads the htable)")
    return Finding("store", Level.PASS, subject, "store (and edge) hold Meta's current credential")


def kamailio_findings(cfg: SiteConfig, features: KamailioFeatures | None,
                      binary: str = "") -> list[Finding]:
    """Which Kamailio the edge runs here, what that version lacks and what stands in for it, and
    whether the site config asks for something it cannot do."""
    if features is None:
        return [Finding("kamailio", Level.WARN, "kamailio", "no Kamailio 5.6 or later found on "
                        "this machine", "run scripts/install-kamailio, or run doctor on the edge")]
    subject = f"Kamailio {features.text}" + (f" at {binary}" if binary else "")
    if cfg.auth.challenge_code == 401 and not features.www_challenge:
        return [Finding("kamailio", Level.FAIL, subject, "auth.challenge_code = 401 needs "
                        "Kamailio 6.0 or later", "set auth.challenge_code = 407, or install 6.0+")]
    lacks = features.lacks()
    cause = "has every feature the edge uses"
    if lacks:
        cause = "what this version lacks, and what stands in: " + "; ".join(lacks)
    return [Finding("kamailio", Level.PASS, subject, cause)]


def media_findings(cfg: SiteConfig) -> list[Finding]:
    """[media] anchor = "rtpengine": does the rtpengine the edge is rendered for answer ng ping?

    A dead rtpengine refuses every call (503, rtpengine_unreachable): better found here.
    """
    if cfg.media.anchor != "rtpengine":
        return [Finding("media", Level.PASS, "media anchor", "FreeSWITCH anchors the media "
                        "(DTLS numbers need its patch 0001; [media] anchor = \"rtpengine\" "
                        "takes them with a stock FreeSWITCH)")]
    listen = cfg.media.rtpengine.ng_listen
    subject = f"rtpengine at {listen}"
    host, port = parse_listen_address(listen)
    try:
        ping(host, port)
    except NgError as error:
        return [Finding("media.rtpengine", Level.FAIL, subject, f"{error}: every call is refused "
                        "with 503 (rtpengine_unreachable)",
                        "start rtpengine with OUT/rtpengine/rtpengine.conf (provision render "
                        "writes it), e.g. rtpengine --config-file=... --config-section=rtpengine")]
    return [Finding("media.rtpengine", Level.PASS, subject, "rtpengine answers ng ping"),
            *rtpengine_metrics_findings(cfg), *rtpengine_redis_findings(cfg)]


def rtpengine_redis_findings(cfg: SiteConfig) -> list[Finding]:
    """[media.rtpengine] redis set: does that Redis answer, and publish the keyspace events the
    other edges' rtpengines keep this edge's calls from (redis_probe.py says why it matters)?

    A warning: calls work without Redis (rtpengine starts with no-redis-required), but an edge
    lost then loses its calls' media."""
    address = cfg.media.rtpengine.redis_address()
    if address is None:
        return []
    host, port, db = address
    subject = f"rtpengine's Redis at {host}:{port} (database {db})"
    try:
        events = keyspace_events(host, port)
    except RedisProbeError as error:
        return [Finding("media.rtpengine.redis", Level.WARN, subject, f"{error}: nothing of "
                        "this edge's calls is replicated; if the edge is lost their media is too",
                        "start Redis there (Debian's redis-server), reachable from every edge")]
    if not standby_ready(events):
        return [Finding("media.rtpengine.redis", Level.WARN, subject,
                        f"notify-keyspace-events is {events!r}: no standby rtpengine hears of "
                        "this edge's calls, so none can carry their media when the edge is lost",
                        "set notify-keyspace-events K$g in redis.conf (or CONFIG SET)")]
    return [Finding("media.rtpengine.redis", Level.PASS, subject,
                    f"answers, keyspace events {events!r} (what a standby rtpengine reads)")]


DIRECT_PATH_FIX = ('set [media] anchor = "rtpengine" (rtpengine faces Meta, a stock FreeSWITCH '
                   "takes plain RTP), or run FreeSWITCH built with patches/freeswitch/0001 on every "
                   "node (README, \"FreeSWITCH patch\"), or make these numbers SDES at Meta and in "
                   "[[numbers]]")


def direct_path_findings(cfg: SiteConfig, freeswitch: str | None) -> list[Finding]:
    """[media] anchor = "freeswitch" with DTLS numbers: does the FreeSWITCH here carry 0001?

    Stock FreeSWITCH never starts DTLS with Meta's ICE-lite media servers (0001's header says
    why): the call is answered, then silent until Meta ends it. ``freeswitch``: the binary
    installed on this host (provisioning/freeswitch_binary.py), None when there is none.
    """
    dtls = [n.business_number for n in cfg.numbers if n.srtp_mode == "DTLS"]
    if cfg.media.anchor != "freeswitch" or not dtls:
        return []
    shown = ", ".join(dtls[:3]) + (f" and {len(dtls) - 3} more" if len(dtls) > 3 else "")
    subject = f"DTLS numbers {shown}"
    if freeswitch is None:
        return [Finding("media.freeswitch", Level.WARN, subject, "no FreeSWITCH on this host to "
                        "check for patches/freeswitch/0001, which DTLS numbers need when "
                        "FreeSWITCH faces Meta ([media] anchor = \"freeswitch\")",
                        "run provision doctor where FreeSWITCH runs, or " + DIRECT_PATH_FIX)]
    state = patch_state(freeswitch, ICE_LITE_PATCH)
    if state is PatchState.CARRIED:
        return [Finding("media.freeswitch", Level.PASS, subject,
                        f"{freeswitch} carries patches/freeswitch/0001 (DTLS with Meta's ICE-lite)")]
    if state is PatchState.OTHER:
        return [Finding("media.freeswitch", Level.WARN, subject,
                        f"{freeswitch} records another version of patches/freeswitch/0001 than "
                        "this bundle's: DTLS calls may get no audio",
                        "rebuild FreeSWITCH with this bundle's patches and record them, or "
                        + DIRECT_PATH_FIX)]
    return [Finding("media.freeswitch", Level.FAIL, subject,
                    f"{freeswitch} does not carry patches/freeswitch/0001: a stock FreeSWITCH "
                    "facing Meta ([media] anchor = \"freeswitch\") never starts DTLS with Meta's "
                    "ICE-lite media servers, so these numbers' calls are answered and stay silent",
                    DIRECT_PATH_FIX)]


def rtpengine_interface_findings(cfg: SiteConfig) -> list[Finding]:
    """[media] anchor = "rtpengine": is its media interface one Meta can reach?

    127.0.0.1 (the setting's default) only works in the lab, where Meta's stand-in is on the
    same host; a site whose TLS listener Meta reaches is not the lab.
    """
    if cfg.media.anchor != "rtpengine":
        return []
    rtp = cfg.media.rtpengine
    tls_host = cfg.listen.tls_socket()[0]
    try:
        lab = ipaddress.ip_address(tls_host).is_loopback
    except ValueError:
        lab = tls_host == "localhost"
    if lab or not ipaddress.ip_address(rtp.interface).is_loopback:
        return []
    return [Finding("media.rtpengine.interface", Level.WARN, f"rtpengine interface {rtp.interface}",
                    "rtpengine binds Meta's media to a loopback address: Meta cannot reach it, "
                    "so calls are set up and stay silent",
                    "set [media.rtpengine] interface to this host's address Meta reaches (a "
                    "private one behind 1:1 NAT with advertise = the public address)")]


def rtpengine_metrics_findings(cfg: SiteConfig) -> list[Finding]:
    """[media.rtpengine] metrics_listen set: does rtpengine serve /metrics there?

    A warning, not a failure: calls work without it, but Prometheus sees no media figures.
    """
    listen = cfg.media.rtpengine.metrics_listen
    if listen is None:
        return []
    subject = f"rtpengine /metrics at {listen}"
    try:
        fetch_metrics(listen)
    except MetricsError as error:
        return [Finding("media.rtpengine.metrics", Level.WARN, subject, f"{error}: Prometheus "
                        "gets no session, packet or error figures of rtpengine",
                        "start rtpengine from the rendered OUT/rtpengine/rtpengine.conf (its "
                        "listen-http line) after provision render")]
    return [Finding("media.rtpengine.metrics", Level.PASS, subject,
                    "rtpengine serves its Prometheus metrics")]


def worst(findings: list[Finding]) -> Level:
    levels = {f.level for f in findings}
    return Level.FAIL if Level.FAIL in levels else Level.WARN if Level.WARN in levels else Level.PASS


# ---- admission: the nftables rules in front of the TLS port (render_nftables.py) ---------------


def admission_findings(cfg: SiteConfig, nft: Sequence[str] = ("nft",)) -> list[Finding]:
    """Is `table inet wa_sip` loaded, and does it hold the Meta ranges and port rendered now?"""
    if not cfg.security.admission.enabled:
        return []
    subject = "table inet wa_sip"
    reload_fix = f"provision render, then nft -f OUT/nftables/{RULESET_NAME} (as root)"
    try:
        expected = meta_sets(cfg)
        loaded = loaded_table(nft)
    except RenderError as error:
        return [Finding("admission", Level.FAIL, subject, str(error), "fix security.admission")]
    except NftUnavailable as error:
        return [Finding("admission", Level.WARN, subject, f"cannot check the admission rules: {error}",
                        "run provision doctor as root on the edge host, with nftables installed")]
    if loaded is None:
        return [Finding("admission", Level.FAIL, subject,
                        "the admission rules are not loaded: anyone can fill the TLS port's "
                        "connection cap and lock Meta out", reload_fix)]
    found = []
    for label, want, have in (("IPv4", expected.v4, loaded.sets.v4), ("IPv6", expected.v6, loaded.sets.v6)):
        if want == have:
            found.append(Finding("admission.meta_ranges", Level.PASS, subject,
                                 f"{label}: the loaded Meta set matches the config ({len(want)} ranges)"))
        else:
            missing = sorted(set(map(str, want)) - set(map(str, have)))
            extra = sorted(set(map(str, have)) - set(map(str, want)))
            found.append(Finding("admission.meta_ranges", Level.FAIL, subject,
                                 f"{label}: the loaded Meta set differs from the config (missing "
                                 f"{', '.join(missing[:5]) or 'none'}; not in the config "
                                 f"{', '.join(extra[:5]) or 'none'})", reload_fix))
    port = cfg.listen.tls_socket()[1]
    if port in loaded.ports:
        found.append(Finding("admission.port", Level.PASS, subject, f"rules judge TCP port {port}"))
    else:
        found.append(Finding("admission.port", Level.FAIL, subject,
                             f"the loaded rules judge port(s) {sorted(loaded.ports)}, the TLS port "
                             f"is {port}", reload_fix))
    return found

"""The site configuration: one TOML file, validated before anything is rendered or called.

Every command reads the same file, so a mistake is reported once, up front, with the key that
holds it ("numbers[2].business_number: ...") instead of surfacing later as a Kamailio start
failure or a Graph API error.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from siteconfig.controller import (
    E164_PATTERN,
    SDES_SUITES,
    SPOOL_MAX_RECORDS,
    CdrLocation,
    FreeswitchSettings,
    ListenSettings,
    MediaSettings,
    NodeName,
    PreflightSettings,
    ReconnectSettings,
    check_cdr_spool,
    default_node_name,
)
from siteconfig.controller import Route as ControllerRoute
from siteconfig.listen_address import parse_listen_address
from siteconfig.meta_ranges import Network, RangesError, parse_networks, read_ranges_file, shipped_ranges

E164 = re.compile(E164_PATTERN)
HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
# RFC 3261 "param-unreserved" plus unreserved: what may stand in a user-part parameter unescaped.
USER_PARAM_TOKEN = re.compile(r"^[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+$")
META_PARAM_LIMIT = 128


class ConfigError(Exception):
    """A site config that cannot be used; `problems` lists `key: what is wrong` lines."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def split_host_port(value: str, default_port: int) -> tuple[str, int]:
    """Split `host:port`, `[v6]:port` or a bare host; raise ValueError on nonsense."""
    host, port = value, default_port
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"unclosed IPv6 bracket in {value!r}")
        host, rest = value[1:end], value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {value!r}")
            port = int(rest[1:])
    elif value.count(":") == 1:
        host, port_text = value.split(":")
        port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1-65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not HOSTNAME.match(host):
            raise ValueError(f"{host!r} is neither an IP address nor a host name") from None
    return host, port


class SiteSection(Strict):
    sip_domain: str = Field(
        description="The hostname configured as this app's SIP server on Meta; also the realm.")
    accepted_domains: list[str] = Field(
        default_factory=list,
        description="Other request-URI hosts accepted on Meta's INVITEs (the sip_domain always is).")

    @field_validator("accepted_domains")
    @classmethod
    def _accepted(cls, values: list[str]) -> list[str]:
        return [cls._domain(value) for value in values]

    @field_validator("sip_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if not HOSTNAME.match(value) or "." not in value:
            raise ValueError("must be a fully qualified host name such as sip.example.com")
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return value.lower()
        raise ValueError("must be a host name, not an IP address (Meta's TLS check needs a name)")


class TlsSection(Strict):
    certificate: Path = Field(description="PEM chain for sip_domain, leaf first.")
    private_key: Path
    ca_list: Path | None = Field(
        default=None, description="CA bundle that verifies Meta's certificate (in-dialog, BIC).")
    meta_host_name: str = "wa.meta.vc"


class ListenSection(Strict):
    tls: str = Field(default="0.0.0.0:5061", description="Meta-facing TLS socket.")
    internal: str = Field(default="127.0.0.1:5060", description="UDP socket toward FreeSWITCH.")
    advertise: str | None = Field(
        default=None, description="Public name or address advertised on the TLS socket.")
    tls_front: Literal["auto", "kamailio", "haproxy"] = Field(
        default="auto", description="Who terminates Meta's TLS on listen.tls: 'kamailio' (its tls "
        "module), 'haproxy' (HAProxy in TCP mode hands Meta's connections and address to "
        "Kamailio with the PROXY protocol), or 'auto': HAProxy where the target Kamailio's tls "
        "module is not safe on a socket the Internet reaches (5.6), else Kamailio.")
    front_backend: str = Field(
        default="127.0.0.1:5062", description="With HAProxy in front: the TCP socket where "
        "Kamailio takes Meta's connections from HAProxy (PROXY protocol); loopback or an "
        "internal address, never reachable from outside.")
    outbound_tls: str = Field(
        default="127.0.0.1:5063", description="With HAProxy in front: Kamailio's own TLS socket, "
        "used only for the connections the edge opens toward Meta; nothing connects to it.")

    @field_validator("tls", "internal")
    @classmethod
    def _socket(cls, value: str) -> str:
        split_host_port(value, 5061)
        return value

    @field_validator("front_backend", "outbound_tls")
    @classmethod
    def _inside_socket(cls, value: str) -> str:
        host, _ = parse_listen_address(value)
        address = ipaddress.ip_address(host)
        if address.is_unspecified or address.is_global:
            raise ValueError(f"{value!r}: must be a loopback or internal address (Kamailio's "
                             "socket behind HAProxy must not be reachable from outside)")
        return value

    def tls_socket(self) -> tuple[str, int]:
        return split_host_port(self.tls, 5061)

    def front_backend_socket(self) -> tuple[str, int]:
        return parse_listen_address(self.front_backend)

    def outbound_tls_socket(self) -> tuple[str, int]:
        return parse_listen_address(self.outbound_tls)

    def front_port_conflict(self, metrics_port: int | None) -> str | None:
        """With HAProxy in front: a sentence naming the key whose port another socket of the
        edge already uses, or None."""
        taken = {"listen.tls": self.tls_socket()[1], "listen.internal": self.internal_socket()[1]}
        if metrics_port is not None:
            taken["metrics.edge_listen"] = metrics_port
        for key, port in (("listen.front_backend", self.front_backend_socket()[1]),
                          ("listen.outbound_tls", self.outbound_tls_socket()[1])):
            other = next((k for k, p in taken.items() if p == port), None)
            if other is not None:
                return f"{key} uses port {port}, as {other} does: give it a port of its own"
            taken[key] = port
        return None

    def public_tls_host(self, sip_domain: str) -> str:
        """The host Meta reaches the TLS port at, for Record-Route: listen.advertise, else
        listen.tls's address, else (a wildcard address) the SIP domain."""
        if self.advertise:
            return self.advertise
        host = self.tls_socket()[0]
        try:
            if ipaddress.ip_address(host).is_unspecified:
                return sip_domain
        except ValueError:
            pass
        return host

    def internal_socket(self) -> tuple[str, int]:
        return split_host_port(self.internal, 5060)


class AuthSection(Strict):
    mode: Literal["challenge", "none"] = Field(
        default="challenge",
        description="'none' is Meta's documented unauthenticated mode: use only with allowed_sources.")
    challenge_code: Literal[401, 407] = Field(
        default=407, description="407 (Proxy-Authenticate) or 401 (WWW-Authenticate): Meta "
        "answers both; the edge then checks Proxy-Authorization or Authorization.")
    nonce_expire: Annotated[int, Field(ge=5, le=3600)] = 30
    failure_limit: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=10, description="Failed digests from one source address before it is locked out.")
    lockout_seconds: Annotated[int, Field(ge=10, le=86400)] = 300


# Shared memory one accepted TLS connection holds once its handshake is done (Kamailio 6.1.4,
# OpenSSL 3, ssl_release_buffers on): 75.6 KB measured on loopback, rounded up. A raw TCP
# connection still in its handshake holds about 17 KB.
TLS_CONNECTION_SHM_KB = 80
# Connections may take at most this share of shared memory: transactions, dialogs, the
# credential table and the TLS contexts need the rest.
CONNECTIONS_SHM_SHARE = 0.5


class ConnectionLimits(Strict):
    """Limits on the TLS connections the Meta-facing socket accepts (rendered as Kamailio core
    and tls parameters). Meta holds a few long-lived connections per proxy address, so
    anything idle before its first SIP message, or piling up from one address, is an attacker
    spending the edge's shared memory; without limits about 750 idle connections from one
    address filled 64 MB and every new handshake, Meta's included, failed."""

    shared_memory_mb: Annotated[int, Field(ge=32, le=65536)] = Field(
        default=64, description="Kamailio shared memory (shm_mem_size); the limits are sized from it.")
    max_connections: Annotated[int, Field(ge=16, le=1000000)] | None = Field(
        default=None, description="TLS connections at once, all sources; default: half of "
        "shared_memory_mb at 80 KB per connection (409 for 64 MB).")
    per_source: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=32, description="Connections at once from one IP address (tcp_accept_iplimit).")
    first_message_timeout: Annotated[int, Field(ge=1, le=60)] = Field(
        default=5, description="Seconds a new connection may take for its TLS handshake and "
        "first complete SIP message before it is closed (tcp_msg_data_timeout).")
    message_read_timeout: Annotated[int, Field(ge=1, le=60)] = Field(
        default=5, description="Seconds to receive the rest of a SIP message once it has "
        "started (tcp_msg_read_timeout): a trickled message is dropped.")
    idle_timeout: Annotated[int, Field(ge=30, le=86400)] = Field(
        default=600, description="Seconds a connection may stay idle between messages.")

    @property
    def connection_budget(self) -> int:
        """How many TLS connections fit in the share of shared memory set aside for them."""
        return int(self.shared_memory_mb * 1024 * CONNECTIONS_SHM_SHARE) // TLS_CONNECTION_SHM_KB

    @property
    def tls_max_connections(self) -> int:
        return self.max_connections if self.max_connections is not None else self.connection_budget

    @model_validator(mode="after")
    def _fits(self) -> ConnectionLimits:
        if self.tls_max_connections > self.connection_budget:
            needed = -(-self.tls_max_connections * TLS_CONNECTION_SHM_KB
                       // int(1024 * CONNECTIONS_SHM_SHARE))
            raise ValueError(
                f"max_connections {self.tls_max_connections} needs about "
                f"{self.tls_max_connections * TLS_CONNECTION_SHM_KB // 1024} MB of shared memory "
                f"at {TLS_CONNECTION_SHM_KB} KB each, more than half of shared_memory_mb "
                f"{self.shared_memory_mb}: lower it to {self.connection_budget} or raise "
                f"shared_memory_mb to {needed}")
        if self.per_source > self.tls_max_connections:
            raise ValueError(f"per_source {self.per_source} is more than max_connections "
                             f"{self.tls_max_connections}")
        return self



# ---- [security.admission]: nftables in front of the Meta-facing TLS port ---------------------


class AdmissionSettings(Strict):
    """Who may open a connection to the Meta-facing TLS port, judged by nftables before TLS
    (`provision render` writes OUT/nftables/wa-sip.nft). Meta's ranges get a connection budget of
    their own; everyone else shares what is left of the edge's total (max_connections) and is
    limited per source, or dropped with meta_only. A cap inside Kamailio or HAProxy cannot tell
    Meta from an attacker: 400 idle connections from 200 addresses filled it."""

    enabled: bool = Field(
        default=True, description="Render the ruleset; doctor checks that it is loaded.")
    meta_ranges: list[str] | None = Field(
        default=None, description="Meta's CIDRs (IPv4 and IPv6), inline; default: meta_ranges_file.")
    meta_ranges_file: Path | None = Field(
        default=None, description="File of Meta's CIDRs, one a line, that `provision meta-ranges "
        "refresh` rewrites; default: the list shipped in siteconfig/meta_ranges.txt.")
    meta_connections: Annotated[int, Field(ge=1, le=1000000)] = Field(
        default=256, description="Concurrent connections from all of Meta's ranges together.")
    other_connections: Annotated[int, Field(ge=1, le=1000000)] | None = Field(
        default=None, description="Concurrent connections from all other sources together; "
        "default: security.connections.max_connections - meta_connections.")
    per_source_connections: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=8, description="Concurrent connections from one non-Meta source address.")
    per_source_new_per_second: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=4, description="New connections per second from one non-Meta source address.")
    per_source_new_burst: Annotated[int, Field(ge=1, le=100000)] = Field(
        default=8, description="New connections one non-Meta source may open at once before "
        "per_source_new_per_second applies.")
    ipv6_source_prefix: Annotated[int, Field(ge=32, le=128)] = Field(
        default=64, description="An IPv6 'source' for the per-source limits is this prefix (a "
        "host gets a /64, so counting /128s would not limit it).")
    meta_only: bool = Field(
        default=False, description="Drop every new connection that is not from Meta's ranges.")

    @field_validator("meta_ranges")
    @classmethod
    def _ranges(cls, values: list[str] | None) -> list[str] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("is empty: Meta could not connect (omit it for the shipped list)")
        try:
            parse_networks(values)
        except RangesError as error:
            raise ValueError(str(error)) from None
        return values

    @model_validator(mode="after")
    def _one_source(self) -> AdmissionSettings:
        if self.meta_ranges is not None and self.meta_ranges_file is not None:
            raise ValueError("set meta_ranges or meta_ranges_file, not both")
        if self.other_connections is not None and self.per_source_connections > self.other_connections:
            raise ValueError(f"per_source_connections {self.per_source_connections} is more than "
                             f"other_connections {self.other_connections}")
        return self

    def networks(self) -> list[Network]:
        """Meta's ranges in effect: inline, the site's file, or the shipped list (RangesError)."""
        if self.meta_ranges is not None:
            return parse_networks(self.meta_ranges)
        if self.meta_ranges_file is not None:
            return read_ranges_file(self.meta_ranges_file)
        return shipped_ranges()

    def other_budget(self, max_connections: int) -> int:
        """Connections all non-Meta sources may hold together."""
        if self.other_connections is not None:
            return self.other_connections
        return max(max_connections - self.meta_connections, 0)

# ---- end of [security.admission] ----------------------------------------------------------------


class SecuritySection(Strict):
    allowed_sources: list[str] = Field(
        default_factory=list, description="CIDR prefixes allowed to send to the TLS socket; empty = any.")
    pike_requests_per_second: Annotated[int, Field(ge=0, le=100000)] = Field(
        default=100, description="Per-source request rate before pike blocks it; 0 disables pike.")
    connections: ConnectionLimits = ConnectionLimits()
    admission: AdmissionSettings = AdmissionSettings()

    @model_validator(mode="after")
    def _admission_fits(self) -> SecuritySection:
        admission, total = self.admission, self.connections.tls_max_connections
        others = admission.other_budget(total)
        if not admission.enabled:
            return self
        if admission.meta_connections + (0 if admission.meta_only else others) > total:
            raise ValueError(
                f"admission.meta_connections {admission.meta_connections}"
                + ("" if admission.meta_only else f" + other_connections {others}")
                + f" is more than connections.max_connections {total}: the others could fill the "
                "edge's cap before Meta's budget is used; lower them or raise max_connections")
        if not admission.meta_only and others < admission.per_source_connections:
            raise ValueError(
                f"admission leaves {others} connections for non-Meta sources, fewer than "
                f"per_source_connections {admission.per_source_connections}: lower "
                "meta_connections, or set meta_only = true")
        return self

    @field_validator("allowed_sources")
    @classmethod
    def _prefixes(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError as error:
                raise ValueError(f"{value!r}: {error}") from None
        return values


class BicSection(Strict):
    """Business-initiated calls: FreeSWITCH (or another trusted node) calls a WhatsApp user."""

    enabled: bool = True
    meta_server: str = Field(
        default="wa.meta.vc:5061",
        description="Meta's SIP server, host:port; the TLS name checked is tls.meta_host_name.")
    trusted_sources: list[str] = Field(
        default_factory=list,
        description="CIDR prefixes that may originate calls, besides the freeswitch.sets nodes.")
    from_mode: Literal["refuse", "rewrite"] = Field(
        default="refuse",
        description="A From that is not a configured number at an accepted domain: refuse it, "
        "or rewrite it (domain to sip_domain, unknown user to default_number).")
    default_number: str | None = Field(
        default=None, description="+E164 caller for rewritten unknown From users (from_mode = rewrite).")

    @field_validator("meta_server")
    @classmethod
    def _server(cls, value: str) -> str:
        split_host_port(value, 5061)
        return value

    @field_validator("trusted_sources")
    @classmethod
    def _trusted(cls, values: list[str]) -> list[str]:
        return SecuritySection._prefixes(values)

    def meta_server_address(self) -> tuple[str, int]:
        return split_host_port(self.meta_server, 5061)


class HeadersSection(Strict):
    payload_max_length: Annotated[int, Field(ge=16, le=4096)] = Field(
        default=512, description="Longest CTA / deep-link payload forwarded to FreeSWITCH.")
    meta_header_max_length: Annotated[int, Field(ge=16, le=8192)] = 1024


class CredentialsSection(Strict):
    store: str = Field(
        default="sqlite:///var/lib/wa-sip/credentials.sqlite",
        description="Where Kamailio reads SIP credentials: sqlite:///ABSOLUTE/PATH, or "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB for several edge nodes sharing one store.")

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.startswith("sqlite:///"):
            return value
        if value.startswith(("postgresql://", "postgres://")) and "/" in value.split("://", 1)[1]:
            return value
        raise ValueError("must be sqlite:///ABSOLUTE/PATH or postgresql://USER@HOST[:PORT]/DATABASE")

    @property
    def is_postgres(self) -> bool:
        return self.store.startswith(("postgresql://", "postgres://"))

    def sqlite_path(self) -> Path:
        return Path("/" + self.store.removeprefix("sqlite:///").lstrip("/"))

    def kamailio_db_url(self) -> str:
        """The store's URL as Kamailio's db modules spell it (db_postgres wants postgres://)."""
        if self.is_postgres:
            return "postgres://" + self.store.split("://", 1)[1]
        return self.store


class GraphSection(Strict):
    """How `provision` talks to Meta's Graph API; the token itself never lives in this file."""

    base_url: str = Field(default="https://graph.facebook.com",
                          description="Graph's base URL (a stand-in's in tests).")
    api_version: str = Field(default="v21.0", description="v17.0 is the documented minimum.")
    app_id: str | None = Field(
        default=None, description="This app's id (picks our SIP server entry); default: GET /app.")
    token_env: str = Field(default="WA_GRAPH_TOKEN",
                           description="Environment variable that holds the access token.")
    token_file: Path | None = Field(default=None, description="File holding the access token (0600).")
    server_port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=5061, description="The port configured on Meta for this app's SIP server.")
    concurrency: Annotated[int, Field(ge=1, le=256)] = 16
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 6

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("must be http(s)://HOST[:PORT] without a path")
        return value.rstrip("/")

    @field_validator("api_version")
    @classmethod
    def _version(cls, value: str) -> str:
        match = re.match(r"^v(\d+)\.(\d+)$", value)
        if not match or int(match.group(1)) < 17:
            raise ValueError("must look like v21.0 and be v17.0 or newer")
        return value

    @field_validator("app_id")
    @classmethod
    def _app_id(cls, value: str | None) -> str | None:
        if value is not None and not value.isdigit():
            raise ValueError("must be the numeric Meta app id")
        return value


REDIS_URL = re.compile(r"^redis://(?P<host>\[[0-9A-Fa-f:.]+\]|[0-9.]+):(?P<port>[0-9]{1,5})"
                       r"/(?P<db>[0-9]{1,3})$")


def parse_redis_url(value: str) -> tuple[str, int, int]:
    """``redis://IP:PORT/DB`` -> (IP, port, DB), or ValueError saying what is wrong."""
    if "@" in value:
        raise ValueError(f"{value!r}: no password in the URL (it would show in rtpengine's "
                         "command line and the rendered file); give rtpengine the variable "
                         "RTPENGINE_REDIS_AUTH_PW in its environment instead")
    match = REDIS_URL.match(value)
    if match is None:
        raise ValueError(f"{value!r}: write redis://IP:PORT/DB (an IP literal: rtpengine "
                         "resolves no names here), e.g. redis://10.0.0.5:6379/1")
    host, port, db = match["host"].strip("[]"), int(match["port"]), int(match["db"])
    address = ipaddress.ip_address(host)
    if address.is_unspecified or address.is_global or not 0 < port < 65536:
        raise ValueError(f"{value!r}: Redis holds every call's SRTP master keys; give a "
                         "loopback or private address (and a port 1..65535)")
    if db > 255:
        raise ValueError(f"{value!r}: database {db}: 0..255")
    return host, port, db


class RtpengineStandby(Strict):
    """Another edge's rtpengine whose calls this one keeps ready ([media.rtpengine] redis):
    rtpengine subscribes to that edge's Redis database and holds a copy of each of its calls,
    sockets bound on that edge's floating media address, so when the address moves here
    (keepalived/VRRP) the calls' media goes on through this rtpengine."""

    interface: str = Field(description="That edge's floating media address ([media.rtpengine] "
                           "interface on that edge); bound here before it moves (the host needs "
                           "net.ipv4.ip_nonlocal_bind = 1).")
    advertise: str | None = Field(default=None, description="That edge's advertise, if set.")
    redis_db: Annotated[int, Field(ge=0, le=255)] = Field(
        description="The Redis database that edge writes its calls to (its redis URL's DB).")

    @field_validator("interface", "advertise")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value


class RtpengineSection(Strict):
    """rtpengine next to the edge (Debian's rtpengine-daemon), when [media] anchor = "rtpengine"."""

    ng_listen: str = Field(
        default="127.0.0.1:2223", description="rtpengine's ng control socket (address:port): "
        "loopback or a private address only, never where Meta or the Internet can reach it.")
    interface: str = Field(
        default="127.0.0.1", description="The address rtpengine binds media sockets to.")
    advertise: str | None = Field(
        default=None, description="The public address written into SDP toward Meta when "
        "`interface` is a private one behind 1:1 NAT; unset: interface itself.")
    port_min: Annotated[int, Field(ge=1024, le=65535)] = 30000
    port_max: Annotated[int, Field(ge=1024, le=65535)] = 40000
    timeout_s: Annotated[int, Field(ge=5, le=3600)] = 60
    """No media at all for this long: rtpengine ends the session (Meta ends a call after 20 s
    without the business's first packet, 30 s mid-call, so a longer timeout only frees leaks)."""
    silent_timeout_s: Annotated[int, Field(ge=5, le=86400)] = 3600
    final_timeout_s: Annotated[int, Field(ge=0, le=86400)] = 14400
    """Hard cap on a session (0: none); the dialog module's default timeout is the same 4 h."""
    inside: Literal["RTP", "SDES"] = Field(
        default="RTP", description="Toward FreeSWITCH: plain RTP/AVP, or SDES when the site "
        "wants SRTP inside too.")
    metrics_listen: str | None = Field(
        default=None, description="rtpengine's own HTTP listener (listen-http, address:port), "
        "whose GET /metrics Prometheus scrapes (sessions, packets, errors, MOS, transcoding); "
        "loopback or a private address only: the same listener serves rtpengine's CLI (/cli/: "
        "list, terminate) and ng over WebSocket. Unset: off.")
    redis: str | None = Field(
        default=None, description="rtpengine's own replication: redis://IP:PORT/DB, the "
        "database this edge's rtpengine writes each call to (SDES and DTLS-derived SRTP keys, "
        "ports, peers), one database per edge of the site, a private or loopback address (the "
        "keys are in it). With `standby` another edge's rtpengine keeps this edge's calls and "
        "carries their media once this edge's floating `interface` moves to it. Unset: off.")
    standby: list[RtpengineStandby] = Field(
        default_factory=list, description="The other edges whose calls this rtpengine keeps "
        "ready (needs `redis`): one entry per edge, its floating address and Redis database.")

    @field_validator("redis")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value is not None:
            parse_redis_url(value)
        return value

    @model_validator(mode="after")
    def _standby(self) -> RtpengineSection:
        if self.standby and self.redis is None:
            raise ValueError("standby needs redis (the database this edge writes its own "
                             "calls to; the other edges' calls come from theirs)")
        if self.redis is None:
            return self
        own_db = parse_redis_url(self.redis)[2]
        dbs = [entry.redis_db for entry in self.standby]
        if own_db in dbs or len(set(dbs)) != len(dbs):
            raise ValueError(f"standby redis_db {dbs}: each edge writes a database of its "
                             f"own (this edge's is {own_db}); no two alike")
        addresses = [self.interface, *(entry.interface for entry in self.standby)]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"interface and standby interfaces {addresses}: each edge's "
                             "floating media address differs")
        return self

    def redis_address(self) -> tuple[str, int, int] | None:
        """(IP, port, DB) of `redis`, or None."""
        return None if self.redis is None else parse_redis_url(self.redis)

    @field_validator("ng_listen", "metrics_listen")
    @classmethod
    def _private_control(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, _port = parse_listen_address(value)
        address = ipaddress.ip_address(host)
        if not (address.is_loopback or address.is_private) or address.is_unspecified:
            raise ValueError(f"{value}: rtpengine's control sockets (ng, and the HTTP one "
                             "with /metrics and /cli/) take commands from anyone who reaches "
                             "them; give a loopback or private address")
        return value

    @field_validator("interface", "advertise")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _ports(self) -> RtpengineSection:
        if self.port_max - self.port_min < 3:
            raise ValueError(f"port_min {self.port_min} .. port_max {self.port_max}: at least "
                             "4 ports (two per call leg)")
        return self


class MediaSection(Strict):
    """Who anchors the media toward Meta.

    ``rtpengine`` (the default): rtpengine next to the edge does ICE, DTLS and SRTP toward Meta
    and hands FreeSWITCH plain RTP, so a stock FreeSWITCH takes DTLS numbers (Meta's default
    srtp_mode). It is the default because stock FreeSWITCH (SignalWire's packages) never starts
    DTLS against Meta's ICE-lite servers, and Debian ships rtpengine (`rtpengine-daemon`) while
    it ships no FreeSWITCH at all.
    ``freeswitch``: the direct path, FreeSWITCH terminates Meta's SRTP itself; SDES numbers work
    with a stock FreeSWITCH, DTLS numbers only with patches/freeswitch/0001 (provision doctor
    fails such a site).
    """

    anchor: Literal["freeswitch", "rtpengine"] = "rtpengine"
    rtpengine: RtpengineSection = RtpengineSection()


class WebhookSection(Strict):
    """`wa-esl webhook`: Meta's webhook posts (permission replies, call events); off unless listen.

    The app secret (it signs every post: X-Hub-Signature-256) and the verify token (Meta's
    subscription challenge) never live in this file: a variable or a 0600 file holds each.
    """

    listen: str | None = Field(
        default=None, description="address:port the receiver serves (behind the site's HTTPS "
        "reverse proxy: Meta only posts to https://); unset: no receiver.")
    app_secret_env: str = "WA_APP_SECRET"
    app_secret_file: Path | None = None
    verify_token_env: str = "WA_WEBHOOK_VERIFY_TOKEN"
    verify_token_file: Path | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=4 * 1024 * 1024)] = 256 * 1024
    refusal_log_interval_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Refused posts are counted always but logged at most once per interval (a flood of
    forged posts must not flood the log)."""
    metrics_listen: str | None = Field(
        default=None, description="The receiver's own Prometheus endpoint (address:port; keep it "
        "internal, never the port Meta posts to); unset: off.")
    duration_tolerance_s: Annotated[int, Field(ge=0, le=600)] = 6
    """How far Meta's call duration may differ from ours before `call show` flags it (Meta
    bills in 6-second pulses)."""

    @field_validator("listen", "metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen_address(value)
        return value


class FreeswitchNode(Strict):
    uri: str = Field(description="sip:HOST:PORT of a FreeSWITCH profile facing the edge.")
    priority: int = 0

    @field_validator("uri")
    @classmethod
    def _sip_uri(cls, value: str) -> str:
        if not value.startswith("sip:"):
            raise ValueError("must be a sip: URI such as sip:10.0.0.10:5080")
        split_host_port(value.removeprefix("sip:").split(";", 1)[0], 5060)
        return value


class FreeswitchSet(Strict):
    id: Annotated[int, Field(ge=1, le=65535)]
    algorithm: Literal["priority", "round-robin", "hash-callid"] = "priority"
    nodes: Annotated[list[FreeswitchNode], Field(min_length=1)]


class FreeswitchProfile(Strict):
    """The FreeSWITCH side that `provision render` writes into OUT/freeswitch/.

    Defaults use FreeSWITCH's own `$${local_ip_v4}`, so one rendered profile fits every node.
    """

    sip_ip: str = "$${local_ip_v4}"
    sip_port: Annotated[int, Field(ge=1, le=65535)] = 5080
    rtp_ip: str = "$${local_ip_v4}"
    ext_rtp_ip: str = Field(default="", description="Public RTP address when FreeSWITCH is behind NAT.")
    edge_networks: list[str] = Field(
        default_factory=list,
        description="Who may send SIP to the profile; default: the edge's internal address.")
    candidate_networks: list[str] = Field(
        default_factory=list,
        description="ICE candidate ACL; empty = FreeSWITCH's wan.auto (public addresses, as Meta's are).")
    esl_listen_ip: str = "127.0.0.1"
    esl_allowed_networks: list[str] = Field(default_factory=lambda: ["127.0.0.1/32"])
    tls: bool = Field(default=False, description="TLS between the edge and FreeSWITCH (internal).")
    tls_port: Annotated[int, Field(ge=1, le=65535)] = 5081
    tls_cert_dir: str = "/etc/freeswitch/tls"

    @field_validator("sip_ip", "rtp_ip", "esl_listen_ip")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("$${") and value.endswith("}"):
            return value
        ipaddress.ip_address(value)
        return value

    @field_validator("ext_rtp_ip")
    @classmethod
    def _ext_address(cls, value: str) -> str:
        return cls._address(value) if value else value

    @field_validator("edge_networks", "candidate_networks", "esl_allowed_networks")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(v, strict=False)) for v in values]


class FreeswitchSection(Strict):
    profile: FreeswitchProfile = FreeswitchProfile()
    sets: Annotated[list[FreeswitchSet], Field(min_length=1)]
    default_set: int = 1
    default_context: str = "whatsapp"
    invite_timeout: Annotated[int, Field(ge=1, le=120)] = Field(
        default=5, description="Seconds without a reply before the next node is tried.")

    @model_validator(mode="after")
    def _sets_unique(self) -> FreeswitchSection:
        ids = [s.id for s in self.sets]
        if len(ids) != len(set(ids)):
            raise ValueError("freeswitch.sets ids must be unique")
        if self.default_set not in ids:
            raise ValueError(f"default_set {self.default_set} is not one of the sets {ids}")
        return self


class Number(Strict):
    business_number: str = Field(description="The WhatsApp business number, +E164.")
    phone_number_id: str = Field(description="Graph API phone number id.")
    srtp_mode: Literal["DTLS", "SDES"] = "DTLS"
    sdes_suites: list[str] = Field(
        default_factory=lambda: ["AES_CM_128_HMAC_SHA1_80"],
        description="SDES crypto suites FreeSWITCH offers/accepts, when srtp_mode = SDES.")
    additional_codecs: list[Literal["PCMU", "PCMA"]] = Field(
        default_factory=list,
        description="G.711 codecs Meta offers beside Opus for this number (audio.additional_codecs, "
                    "set by provision apply; [] = Opus only); business-initiated offers carry OPUS "
                    "and these only, and the edge keeps them in the SDP toward Meta.")
    request_uri_user_params: dict[str, str] = Field(default_factory=dict)

    @field_validator("additional_codecs", mode="before")
    @classmethod
    def _g711_only(cls, codecs: object) -> object:
        """Meta accepts PCMU and PCMA here (any case in the file); Opus is always on, never listed."""
        if not isinstance(codecs, list):
            return codecs
        names = [c.upper() if isinstance(c, str) else c for c in codecs]
        if "OPUS" in names:
            raise ValueError("list only PCMU and/or PCMA: Opus is always on at Meta and is not "
                             "an additional codec")
        unknown = [c for c in names if c not in ("PCMU", "PCMA")]
        if unknown:
            raise ValueError(f"{unknown}: Meta's audio.additional_codecs takes PCMU and PCMA only")
        if len(set(names)) != len(names):
            raise ValueError(f"{codecs}: each codec once")
        return names

    @field_validator("sdes_suites")
    @classmethod
    def _suites(cls, suites: list[str]) -> list[str]:
        unknown = [s for s in suites if s not in SDES_SUITES]
        if not suites or unknown:
            raise ValueError(f"unknown or no SDES suites {unknown}; known: {', '.join(SDES_SUITES)}")
        return suites

    @field_validator("business_number")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not E164.match(value):
            raise ValueError("must be +E164: a '+', then 7 to 15 digits, no spaces")
        return value

    @field_validator("phone_number_id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError("must be the numeric Graph phone number id")
        return value

    @field_validator("request_uri_user_params")
    @classmethod
    def _params(cls, values: dict[str, str]) -> dict[str, str]:
        for key, value in values.items():
            for what, text in (("key", key), ("value", value)):
                if not text or len(text) > META_PARAM_LIMIT:
                    raise ValueError(f"{what} {text!r}: 1 to {META_PARAM_LIMIT} characters")
                if not USER_PARAM_TOKEN.match(text):
                    raise ValueError(f"{what} {text!r}: only URI-safe characters (no ; = @ space)")
        return values

    @property
    def digits(self) -> str:
        """The digest user name Meta uses: the number without '+'."""
        return self.business_number[1:]


class Route(Strict):
    """First match wins; `match` keys are business_number or request-URI user parameter names."""

    match: dict[str, str]
    freeswitch_set: int | None = None
    context: str | None = None


class EslSection(Strict):
    """The ESL controller (`wa-esl`); numbers and their SRTP modes come from [[numbers]]."""

    model_config = ConfigDict(hide_input_in_errors=True)  # cdr_db may hold a password

    freeswitch: FreeswitchSettings = FreeswitchSettings()
    listen: ListenSettings = ListenSettings()
    routes: list[ControllerRoute] = Field(default_factory=list)
    cdr_db: CdrLocation = Field(
        default=Path("/var/lib/wa-sip/cdr.sqlite3"),
        description="The CDR database: a SQLite file (one media node), or "
        "postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE, shared by every media node of the "
        "site so `wa-esl call show` answers for a call of any node.")
    node: NodeName = Field(
        default_factory=default_node_name,
        description="This media node's name in the CDRs and its heartbeat (default: the host "
        "name); unique per node of a site.")
    node_lost_after_s: Annotated[int, Field(ge=3, le=3600)] = Field(
        default=15, description="With a shared database: a node whose controller wrote no "
        "heartbeat for this long is lost, and another node closes its active calls as 'lost'.")
    cdr_spool: Path = Field(
        default=Path("/var/lib/wa-sip/cdr-spool.sqlite3"),
        description="With cdr_db on PostgreSQL: this media node's own file for the CDR writes "
        "made while the database is unreachable, replayed in order when it answers.")
    cdr_spool_max_records: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=SPOOL_MAX_RECORDS, description="The spool's bound (about 4 writes a call); a "
        "write beyond it is dropped, counted (wasip_esl_cdr_spool_dropped_total) and warned.")
    media: MediaSettings = MediaSettings()
    reconnect: ReconnectSettings = ReconnectSettings()
    linger_s: Annotated[int, Field(ge=1)] = 30
    metrics_listen: str | None = Field(
        default=None, description="Prometheus endpoint of wa-esl (address:port); unset: off.")
    edge_log: Path | None = Field(
        default=None, description="Kamailio's log file holding the edge's call lines.")
    preflight: PreflightSettings = PreflightSettings()
    """The call-permission check before each business-initiated call (Graph access: [graph])."""

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen_address(value)
        return value

    @model_validator(mode="after")
    def _spool_apart(self) -> EslSection:
        check_cdr_spool(self.cdr_spool, self.cdr_db)
        return self


class MetricsSection(Strict):
    """Prometheus endpoints; each is off unless its address is set."""

    edge_listen: str | None = Field(
        default=None, description="Kamailio's /metrics (xhttp_prom) on its own TCP socket, "
        "address:port; keep it internal: Meta's TLS socket never serves it.")

    @field_validator("edge_listen")
    @classmethod
    def _edge_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen_address(value)
        return value

    def edge_socket(self) -> tuple[str, int] | None:
        return parse_listen_address(self.edge_listen) if self.edge_listen else None


# ---- [cluster]: several edges of one site share digest state over Kamailio's DMQ ------------


class ClusterSection(Strict):
    """The edges of one site (issue 20): empty `edges` = a single edge, nothing changes.

    With edges listed, each edge's Kamailio loads dmq on its own private socket (`this_edge`),
    replicates the digest lockout and the nonce replay table (htable dmqreplicate) to the
    others, and shares the auth module's nonce secret, so a nonce one edge issued verifies on
    any other. The same `edges` list goes into every edge's config; only `this_edge` differs.
    """

    edges: list[str] = Field(
        default_factory=list, description="Every edge's DMQ socket, address:port (UDP; IP "
        "literals, loopback or private only: DMQ is plain SIP without authentication, so it "
        "is accepted from these addresses only, never on Meta's port).")
    this_edge: str | None = Field(
        default=None, description="Which of `edges` is this edge (its DMQ socket).")
    nonce_secret_file: Path | None = Field(
        default=None, description="File holding the site's nonce secret (0600, one line, at "
        "least 16 characters, e.g. `openssl rand -hex 32`), the same on every edge.")
    nonce_secret_env: str = Field(
        default="WA_SIP_NONCE_SECRET", description="Variable holding the nonce secret when "
        "nonce_secret_file is unset.")

    @field_validator("edges")
    @classmethod
    def _edges(cls, values: list[str]) -> list[str]:
        sockets = [cls._private_socket(value) for value in values]
        if len(set(sockets)) != len(sockets):
            raise ValueError("an edge is listed twice")
        if len(values) == 1:
            raise ValueError("one edge is no cluster: list every edge of the site (this one "
                             "included), or none")
        return values

    @field_validator("this_edge")
    @classmethod
    def _this(cls, value: str | None) -> str | None:
        if value is not None:
            cls._private_socket(value)
        return value

    @staticmethod
    def _private_socket(value: str) -> tuple[str, int]:
        host, port = parse_listen_address(value)
        address = ipaddress.ip_address(host)
        if address.is_unspecified or not (address.is_loopback or address.is_private):
            raise ValueError(f"{value!r}: DMQ needs a loopback or private address (it carries "
                             "the digest lockout and nonce state unauthenticated)")
        return address.compressed, port

    @model_validator(mode="after")
    def _complete(self) -> ClusterSection:
        if not self.edges:
            if self.this_edge is not None:
                raise ValueError("this_edge is set but edges is empty")
            return self
        if self.this_edge is None:
            raise ValueError("edges is set: this_edge must name which one is this edge")
        if self._private_socket(self.this_edge) not in self.edge_sockets():
            raise ValueError(f"this_edge {self.this_edge} is not one of edges")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.edges)

    def edge_sockets(self) -> list[tuple[str, int]]:
        return [self._private_socket(value) for value in self.edges]

    def own_socket(self) -> tuple[str, int]:
        assert self.this_edge is not None
        return self._private_socket(self.this_edge)

    def peer_sockets(self) -> list[tuple[str, int]]:
        """The other edges' DMQ sockets: where this one notifies and whom it accepts DMQ from."""
        own = self.own_socket() if self.enabled else None
        return [socket for socket in self.edge_sockets() if socket != own]

# ---- end of [cluster] ---------------------------------------------------------------------------

# ---- [edge]: what every edge of the site shares to trust in-dialog requests -------------------


class EdgeSection(Strict):
    """The edge's Record-Route MAC (kemi/dialog_mac.py, issue 20): Meta's in-dialog requests are
    relayed only along a route signed with the site's key, so no edge keeps per-call state and
    any edge of the site (a restarted one too) relays Meta's BYE."""

    in_dialog_key_file: Path = Field(
        default=Path("/etc/wa-sip/in-dialog-keys.json"),
        description="The site's in-dialog MAC keys (JSON, 0600, readable by Kamailio's user), the "
        "same file on every edge; `provision render` creates it when missing, `provision "
        "rotate-in-dialog-key` adds a new key and keeps the old one verifying.")
    in_dialog_key_max_age_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=180, description="`provision doctor` warns when the current key is older.")
    in_dialog_key_keep_hours: Annotated[int, Field(ge=1, le=24 * 30)] = Field(
        default=24, description="After a rotation the old key verifies this long (longer than "
        "the longest call: the dialog timeout is 4 hours).")

    @field_validator("in_dialog_key_file")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError("must be an absolute path (Kamailio does not run in the config's "
                             "folder)")
        return value

# ---- end of [edge] ------------------------------------------------------------------------------


class SiteConfig(Strict):
    model_config = ConfigDict(hide_input_in_errors=True)  # [esl] cdr_db may hold a password

    site: SiteSection
    tls: TlsSection
    listen: ListenSection = ListenSection()
    auth: AuthSection = AuthSection()
    security: SecuritySection = SecuritySection()
    headers: HeadersSection = HeadersSection()
    credentials: CredentialsSection = CredentialsSection()
    freeswitch: FreeswitchSection
    numbers: list[Number] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    esl: EslSection = EslSection()
    bic: BicSection = BicSection()
    graph: GraphSection = GraphSection()
    metrics: MetricsSection = MetricsSection()
    webhook: WebhookSection = WebhookSection()
    media: MediaSection = MediaSection()
    cluster: ClusterSection = ClusterSection()
    edge: EdgeSection = EdgeSection()

    @model_validator(mode="after")
    def _cross_checks(self) -> SiteConfig:
        edge_metrics = self.metrics.edge_socket()
        if edge_metrics is not None and edge_metrics[1] in (
                self.listen.tls_socket()[1], self.listen.internal_socket()[1]):
            raise ValueError(
                f"metrics.edge_listen {self.metrics.edge_listen} shares its port with a SIP "
                "socket (listen.tls / listen.internal): give it a port of its own")
        rtpengine_metrics = self.media.rtpengine.metrics_listen
        if (rtpengine_metrics is not None and self.media.anchor == "rtpengine"
                and parse_listen_address(rtpengine_metrics) == edge_metrics):
            raise ValueError(
                f"media.rtpengine.metrics_listen {rtpengine_metrics} is metrics.edge_listen "
                "too: rtpengine and Kamailio cannot both listen there")
        set_ids = {s.id for s in self.freeswitch.sets}
        for index, route in enumerate(self.routes):
            if route.freeswitch_set is not None and route.freeswitch_set not in set_ids:
                raise ValueError(f"routes[{index}].freeswitch_set {route.freeswitch_set} is not defined")
        default_number = self.bic.default_number
        if default_number is not None and default_number not in {
                n.business_number for n in self.numbers}:
            raise ValueError(f"bic.default_number {default_number} is not one of [[numbers]]")
        dmq_problem = self._dmq_socket_problem()
        if dmq_problem is not None:
            raise ValueError(dmq_problem)
        if self.auth.mode == "none" and not self.security.allowed_sources:
            raise ValueError(
                "auth.mode = 'none' needs security.allowed_sources (Meta's prefixes): "
                "otherwise anyone can place calls into FreeSWITCH")
        return self

    def _dmq_socket_problem(self) -> str | None:
        """cluster.this_edge must be a socket of its own, and never Meta's TLS port."""
        if not self.cluster.enabled:
            return None
        host, port = self.cluster.own_socket()
        if port == self.listen.tls_socket()[1]:
            return (f"cluster.this_edge {self.cluster.this_edge} uses listen.tls's port {port}: "
                    "DMQ must never share Meta's port")
        taken = {"listen.internal": self.listen.internal_socket()}
        if (metrics := self.metrics.edge_socket()) is not None:
            taken["metrics.edge_listen"] = metrics
        for key, (other_host, other_port) in taken.items():
            if other_port == port and other_host in (host, "0.0.0.0", "::"):
                return f"cluster.this_edge {self.cluster.this_edge} is {key}'s socket too"
        return None


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_config(text: str, path: Path) -> SiteConfig:
    """Validate TOML text; `path` resolves relative file names and names the file in errors."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, [f"not valid TOML: {error}"]) from None
    try:
        config = SiteConfig.model_validate(raw)
    except ValidationError as error:
        problems = [f"{_location(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                    for e in error.errors()]
        raise ConfigError(path, problems) from None
    seen: dict[str, int] = {}
    duplicates = []
    for index, number in enumerate(config.numbers):
        if number.business_number in seen:
            duplicates.append(f"numbers[{index}].business_number: {number.business_number} is "
                              f"already listed at numbers[{seen[number.business_number]}]")
        seen.setdefault(number.business_number, index)
    if duplicates:
        raise ConfigError(path, duplicates)
    base = path.parent.resolve()
    tls = config.tls.model_copy(update={
        "certificate": base / config.tls.certificate,
        "private_key": base / config.tls.private_key,
        "ca_list": base / config.tls.ca_list if config.tls.ca_list else None,
    })
    esl = config.esl.model_copy(update={
        "cdr_db": base / config.esl.cdr_db if isinstance(config.esl.cdr_db, Path)
        else config.esl.cdr_db,
        "cdr_spool": base / config.esl.cdr_spool,
        "edge_log": base / config.esl.edge_log if config.esl.edge_log else None})
    graph = config.graph.model_copy(update={
        "token_file": base / config.graph.token_file if config.graph.token_file else None})
    webhook = config.webhook.model_copy(update={
        name: base / value for name in ("app_secret_file", "verify_token_file")
        if (value := getattr(config.webhook, name)) is not None})
    security = _resolve_admission(config.security, base, path)
    cluster = config.cluster.model_copy(update={
        "nonce_secret_file": base / config.cluster.nonce_secret_file
        if config.cluster.nonce_secret_file else None})
    return config.model_copy(update={"tls": tls, "esl": esl, "graph": graph, "security": security,
                                     "webhook": webhook, "cluster": cluster})


def _resolve_admission(security: SecuritySection, base: Path, path: Path) -> SecuritySection:
    """[security.admission]: meta_ranges_file relative to the config, and its list validated."""
    admission = security.admission
    if admission.meta_ranges_file is not None:
        admission = admission.model_copy(update={"meta_ranges_file": base / admission.meta_ranges_file})
    if admission.enabled:
        key = "meta_ranges" if admission.meta_ranges is not None else "meta_ranges_file"
        try:
            admission.networks()
        except RangesError as error:
            raise ConfigError(path, [f"security.admission.{key}: {error}"]) from None
    return security.model_copy(update={"admission": admission})


def load_config(path: Path) -> SiteConfig:
    """Read and validate the site config at `path`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(path, [f"cannot read: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(path, [f"not UTF-8 text (byte {error.start})"]) from None
    return parse_config(text, path)

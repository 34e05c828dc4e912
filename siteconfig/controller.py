"""The controller's settings: one self-contained pydantic model.

Kept free of anything outside ``esl/`` so the site config can later embed it as an ``[esl]``
table unchanged. Values that end up in FreeSWITCH application arguments are validated here
(E.164 numbers, SRTP suite names, dial strings without ``${``), because FreeSWITCH expands
``${...}`` in application data, API calls included.
"""

from __future__ import annotations

import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from siteconfig.database_url import LOCATION, PostgresUrl
from siteconfig.listen_address import parse_listen_address

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
"""A '+', then 7 to 15 digits (the settings and ``esl.bic``; siteconfig.model can import it)."""
E164 = Annotated[str, StringConstraints(pattern=E164_PATTERN)]
CdrLocation = Annotated[Path | PostgresUrl, LOCATION]
"""``cdr_db``: a SQLite file (one node), or a PostgreSQL URL every media node writes."""
SPOOL_MAX_RECORDS = 200_000
"""About 4 writes a call (start, answer, and the end from both connections), so some 50,000
calls; a full end record takes about 1 kB in the spool (measured), the others less: some
150-200 MB of the node's disk at the most."""
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
NodeName = Annotated[str, StringConstraints(pattern=NODE_NAME_PATTERN)]


def default_node_name() -> str:
    """This host's name (its first label when that alone is a valid node name), else 'node'."""
    name = socket.gethostname().split(".", 1)[0]
    return name if re.match(NODE_NAME_PATTERN, name) else "node"
SrtpMode = Literal["SDES", "DTLS", "RTP"]
"""The FreeSWITCH leg's media: Meta's own mode, or plain RTP when rtpengine anchors Meta's
media ([media] anchor = "rtpengine": the site config maps every number to it)."""
G711 = Literal["PCMU", "PCMA"]

SDES_SUITES = (
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
    "AES_CM_192_HMAC_SHA1_80",
    "AES_CM_192_HMAC_SHA1_32",
    "AES_CM_256_HMAC_SHA1_80",
    "AES_CM_256_HMAC_SHA1_32",
    "AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM",
)
"""Suite names FreeSWITCH knows (switch_core_media.c); Meta's integrators use the first."""

_UNSAFE_ARGUMENT = re.compile(r"[\r\n]|\$\{|\$\$\{")


def check_cdr_spool(spool: Path, cdr_db: Path | PostgresUrl) -> None:
    """``cdr_spool`` names a file of its own (ValueError saying why not)."""
    if spool.is_dir():
        raise ValueError(f"cdr_spool: {spool} is a directory; name a file in it")
    if isinstance(cdr_db, Path) and spool.resolve() == cdr_db.resolve():
        raise ValueError("cdr_spool must be a file of its own, not cdr_db")


class SettingsError(Exception):
    """The settings file is missing, not TOML, or fails validation (message says where)."""


def check_safe_argument(value: str, what: str) -> str:
    """Refuse text that FreeSWITCH would expand or that would break a command line."""
    if _UNSAFE_ARGUMENT.search(value):
        raise ValueError(f"{what} must not contain line breaks or ${{...}}: {value!r}")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumberSettings(_Model):
    """One WhatsApp business number and how its media is secured (must match Meta's setting)."""

    business_number: E164
    phone_number_id: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,20}$")] | None = None
    """Graph's id of the number: the call-permission pre-flight asks Graph about it."""
    srtp_mode: SrtpMode = "DTLS"
    sdes_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",)
    additional_codecs: tuple[G711, ...] = ()
    """G.711 codecs enabled on the number at Meta (``audio.additional_codecs``), offered after
    OPUS on business-initiated calls (the offer carries OPUS and these only)."""
    meta_srtp_mode: Literal["SDES", "DTLS"] | None = None
    """Meta's side of the number's media when rtpengine anchors it ([media] anchor =
    "rtpengine"; ``srtp_mode`` is then FreeSWITCH's leg: RTP, or SDES inside). None when
    FreeSWITCH terminates Meta's media itself and ``srtp_mode`` is Meta's."""

    @field_validator("sdes_suites")
    @classmethod
    def _known_suites(cls, suites: tuple[str, ...]) -> tuple[str, ...]:
        if not suites:
            raise ValueError("at least one SDES suite is needed")
        unknown = [s for s in suites if s not in SDES_SUITES]
        if unknown:
            raise ValueError(f"unknown SDES suites {unknown}; known: {', '.join(SDES_SUITES)}")
        return suites


class RouteMatch(_Model):
    """Every field given must match; payload fields take shell-style globs (``promo-*``)."""

    business_number: E164 | None = None
    tgrp: str | None = None
    trunk_context: str | None = None
    cta_payload: str | None = None
    deeplink_payload: str | None = None


class RouteTarget(_Model):
    """Where a matched call goes.

    ``bridge``: ``destination`` is a dial string (``user/1000``, ``sofia/internal/sip:q@pbx``);
    ``ivr``: ``destination`` is ``<application> <argument>`` (``ivr main_menu``, ``lua x.lua``);
    ``park``: the call waits answered for an external application (``destination`` unused).
    """

    action: Literal["bridge", "ivr", "park"]
    destination: str = ""

    @model_validator(mode="after")
    def _destination_needed(self) -> RouteTarget:
        if self.action in ("bridge", "ivr") and not self.destination.strip():
            raise ValueError(f"a {self.action} target needs a destination")
        check_safe_argument(self.destination, "route destination")
        return self


class Route(_Model):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    match: RouteMatch = RouteMatch()
    target: RouteTarget


class FreeswitchSettings(_Model):
    """Inbound ESL connection (mod_event_socket) and the gateway BICs leave through."""

    host: str = "127.0.0.1"
    port: int = Field(default=8021, ge=1, le=65535)
    password: SecretStr = SecretStr("ClueCon")
    gateway: str = "wa-edge"
    connect_timeout_s: float = Field(default=5.0, gt=0)
    originate_timeout_s: int = Field(default=60, ge=1, le=600)
    """How long a business-initiated call may ring before FreeSWITCH cancels it
    (``originate_timeout``); without it an unanswered call rang on until killed by hand."""


class ListenSettings(_Model):
    """Where FreeSWITCH's dialplan ``socket`` application reaches the controller."""

    host: str = "127.0.0.1"
    port: int = Field(default=8084, ge=0, le=65535)


class MediaSettings(_Model):
    """Media-first and media-timeout behaviour (Meta: no business media for 20 s ends a call)."""

    codecs: tuple[str, ...] = ("OPUS", "PCMU", "PCMA")
    silence_on_answer_ms: int = Field(default=200, ge=20, le=5000)
    idle_silence_level: int = Field(default=400, ge=1)
    media_timeout_ms: int = Field(default=15000, ge=1000, lt=20000)

    @field_validator("codecs")
    @classmethod
    def _opus_first(cls, codecs: tuple[str, ...]) -> tuple[str, ...]:
        if not codecs or codecs[0].upper() != "OPUS":
            raise ValueError("OPUS must come first: Meta always offers and expects OPUS 48 kHz")
        for codec in codecs:
            check_safe_argument(codec, "codec")
        return codecs


class ReconnectSettings(_Model):
    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=30.0, gt=0)


class GraphAccess(_Model):
    """How the pre-flight reaches Graph (the site's [graph]); the token is never in here."""

    base_url: str = "https://graph.facebook.com"
    api_version: str = "v21.0"
    token_env: str = "WA_GRAPH_TOKEN"
    token_file: Path | None = None


class PreflightSettings(_Model):
    """The call-permission check before every business-initiated call (``--force`` skips it).

    Meta refuses a BIC without a permission (403, 138006) only after the INVITE, and counts
    and caps what the business does: so the permission and the ``start_call`` limits are read
    first (from Meta's webhook reply stored beside the CDRs, or from Graph), and a run of
    unanswered calls is stopped before WhatsApp revokes the permission.
    """

    enabled: bool = True
    limits_from_graph: bool = True
    """Ask Graph for the ``start_call`` limits even when a stored permission is usable (the
    limits exist only there); off: a usable stored permission is enough, no Graph request."""
    cache_s: float = Field(default=30.0, ge=0, le=3600)
    """How long one Graph answer is reused for the same user (a dialer retrying one user
    must not spend Graph's rate limit)."""
    graph_rate: float = Field(default=80.0, gt=0, le=100)
    """Lookups per second at most: Meta's limit is 100/s per app (613 past it)."""
    graph_timeout_s: float = Field(default=3.0, gt=0, le=30)
    graph_attempts: int = Field(default=3, ge=1, le=6)
    streak_warn: int = Field(default=2, ge=1, le=100)
    """Unanswered or rejected BICs in a row to one user before a warning (WhatsApp nudges the
    user to revoke after 2)."""
    streak_refuse: int = Field(default=4, ge=1, le=100)
    """... and before pre-flight refuses (WhatsApp revokes the permission after 4)."""

    @model_validator(mode="after")
    def _order(self) -> PreflightSettings:
        if self.streak_warn > self.streak_refuse:
            raise ValueError(f"streak_warn ({self.streak_warn}) must not exceed streak_refuse "
                             f"({self.streak_refuse})")
        return self


class ControllerSettings(_Model):
    """Everything ``wa-esl`` needs; embeddable as the ``[esl]`` table of the site config."""

    model_config = ConfigDict(hide_input_in_errors=True)  # cdr_db may hold a password

    freeswitch: FreeswitchSettings = FreeswitchSettings()
    listen: ListenSettings = ListenSettings()
    numbers: tuple[NumberSettings, ...] = ()
    routes: tuple[Route, ...] = ()
    cdr_db: CdrLocation = Path("wa-esl-cdr.sqlite3")
    node: NodeName = Field(default_factory=default_node_name)
    """Which media node this controller is: written into every CDR it writes and its heartbeat."""
    node_lost_after_s: int = Field(default=15, ge=3, le=3600)
    """A node whose heartbeat is older than this is lost: its active calls are closed 'lost'."""
    cdr_spool: Path = Path("wa-esl-cdr-spool.sqlite3")
    """With ``cdr_db`` on PostgreSQL: this node's own file for the CDR writes made while the
    database is unreachable, replayed in order when it answers (esl/cdr_spool.py)."""
    cdr_spool_max_records: int = Field(default=SPOOL_MAX_RECORDS, ge=1, le=10_000_000)
    """The spool's bound; a write beyond it is dropped, counted and warned."""
    media: MediaSettings = MediaSettings()
    reconnect: ReconnectSettings = ReconnectSettings()
    linger_s: int = Field(default=30, ge=1)
    metrics_listen: str | None = None
    """``address:port`` of the Prometheus endpoint (``/metrics``); None: not served."""
    edge_log: Path | None = None
    """Kamailio's log file with the edge's call lines (``wa-esl call show``)."""
    preflight: PreflightSettings = PreflightSettings()
    graph: GraphAccess | None = None
    """None: no Graph access; pre-flight then decides from stored permissions alone."""

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen_address(value, any_port=True)
        return value

    @field_validator("numbers")
    @classmethod
    def _unique_numbers(cls, numbers: tuple[NumberSettings, ...]) -> tuple[NumberSettings, ...]:
        seen: set[str] = set()
        for number in numbers:
            if number.business_number in seen:
                raise ValueError(f"business number {number.business_number} listed twice")
            seen.add(number.business_number)
        return numbers

    @model_validator(mode="after")
    def _spool_apart(self) -> ControllerSettings:
        check_cdr_spool(self.cdr_spool, self.cdr_db)
        return self

    def number(self, business_number: str) -> NumberSettings | None:
        for number in self.numbers:
            if number.business_number == business_number:
                return number
        return None


def load_settings(path: Path) -> ControllerSettings:
    """Read a TOML file: its ``[esl]`` table if there is one, else the whole document."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SettingsError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    table = document.get("esl", document)
    try:
        return ControllerSettings.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise SettingsError(f"{path}: {problems}") from exc

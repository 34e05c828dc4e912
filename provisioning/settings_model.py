"""Meta's calling settings for one number, as read from Graph and as the site config wants them.

Graph's answer is parsed defensively (fields may be missing, app ids may come as numbers), and
the password, when asked for, is held in a SecretStr so that printing or dumping a settings
object never shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from siteconfig.model import META_PARAM_LIMIT, Number, SiteConfig

DEFAULT_SRTP = "DTLS"


@dataclass(frozen=True)
class ServerEntry:
    """One app's SIP server on a number."""

    app_id: str
    hostname: str
    port: int = 5061
    request_uri_user_params: dict[str, str] = field(default_factory=dict)
    password: SecretStr | None = None

    def public(self) -> dict[str, Any]:
        return {"app_id": self.app_id, "hostname": self.hostname, "port": self.port,
                "request_uri_user_params": dict(self.request_uri_user_params)}


@dataclass(frozen=True)
class CallingSettings:
    """What GET /<id>/settings said about calling."""

    sip_status: str
    servers: tuple[ServerEntry, ...]
    srtp: str | None  # None: never set explicitly (Meta then uses DTLS)
    additional_codecs: tuple[str, ...] | None = None  # audio.additional_codecs; None: never set

    @property
    def effective_codecs(self) -> frozenset[str]:
        """The G.711 codecs Meta offers beside Opus (none when the field was never set)."""
        return frozenset(self.additional_codecs or ())

    @property
    def effective_srtp(self) -> str:
        return self.srtp or DEFAULT_SRTP

    def server_for(self, app_id: str) -> ServerEntry | None:
        return next((s for s in self.servers if s.app_id == app_id), None)

    def other_apps(self, app_id: str) -> list[ServerEntry]:
        return [s for s in self.servers if s.app_id != app_id]


class SettingsFormatError(ValueError):
    """Graph's answer did not have the shape documented for calling settings."""


def parse_settings(answer: dict[str, Any]) -> CallingSettings:
    calling = answer.get("calling", {})
    if not isinstance(calling, dict):
        raise SettingsFormatError("'calling' is not an object")
    sip = calling.get("sip") or {}
    if not isinstance(sip, dict):
        raise SettingsFormatError("'calling.sip' is not an object")
    servers = []
    for raw in sip.get("servers") or []:
        if not isinstance(raw, dict) or not raw.get("hostname"):
            raise SettingsFormatError("a calling.sip.servers entry has no hostname")
        params = raw.get("request_uri_user_params") or {}
        password = raw.get("sip_user_password")
        try:
            port = int(raw.get("port") or 5061)
        except (TypeError, ValueError):
            raise SettingsFormatError(f"a calling.sip.servers entry has port {raw.get('port')!r}") from None
        servers.append(ServerEntry(
            app_id=str(raw.get("app_id", "")),
            hostname=str(raw["hostname"]).lower(),
            port=port,
            request_uri_user_params=(
                {str(k): str(v) for k, v in params.items()} if isinstance(params, dict) else {}),
            password=SecretStr(str(password)) if password else None,
        ))
    srtp = calling.get("srtp_key_exchange_protocol")
    return CallingSettings(sip_status=str(sip.get("status", "DISABLED")).upper(),
                           servers=tuple(servers), srtp=str(srtp).upper() if srtp else None,
                           additional_codecs=_additional_codecs(calling.get("audio")))


def _additional_codecs(audio: Any) -> tuple[str, ...] | None:
    """``calling.audio.additional_codecs`` upper-cased, in Meta's order; None when absent."""
    if audio is None:
        return None
    if not isinstance(audio, dict):
        raise SettingsFormatError("'calling.audio' is not an object")
    codecs = audio.get("additional_codecs")
    if codecs is None:
        return None
    if not isinstance(codecs, list):
        raise SettingsFormatError("'calling.audio.additional_codecs' is not a list")
    return tuple(str(c).upper() for c in codecs)


@dataclass(frozen=True)
class DesiredSettings:
    """What the site config asks Meta to have for one number."""

    sip_status: str
    hostname: str
    port: int
    request_uri_user_params: dict[str, str]
    srtp: str
    additional_codecs: tuple[str, ...] = ()  # G.711 beside Opus, in the site config's order

    def audio_body(self) -> dict[str, Any]:
        """The settings POST that makes Meta offer these codecs beside Opus ([] clears them)."""
        return {"audio": {"additional_codecs": list(self.additional_codecs)}}

    def server_body(self) -> dict[str, Any]:
        check_user_params(self.request_uri_user_params)
        body: dict[str, Any] = {"hostname": self.hostname, "port": self.port}
        if self.request_uri_user_params:
            body["request_uri_user_params"] = dict(self.request_uri_user_params)
        return body


def desired_settings(cfg: SiteConfig, number: Number) -> DesiredSettings:
    return DesiredSettings(sip_status="ENABLED", hostname=cfg.site.sip_domain,
                           port=cfg.graph.server_port,
                           request_uri_user_params=dict(number.request_uri_user_params),
                           srtp=number.srtp_mode,
                           additional_codecs=tuple(number.additional_codecs))


def check_user_params(params: dict[str, str]) -> None:
    """Meta's limit, checked before anything is sent: keys and values 1-128 characters."""
    for key, value in params.items():
        for what, text in (("key", key), ("value", value)):
            if not text or len(text) > META_PARAM_LIMIT:
                raise ValueError(f"request_uri_user_params {what} {text[:20]!r}...: "
                                 f"1 to {META_PARAM_LIMIT} characters (Meta's limit)")


@dataclass(frozen=True)
class Difference:
    """One field that differs between Meta and the site config."""

    field: str
    meta: str
    wanted: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "meta": self.meta, "wanted": self.wanted}


def _params_text(params: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(params.items())) or "(none)"


def sip_differences(current: CallingSettings, wanted: DesiredSettings, app_id: str) -> list[Difference]:
    """Differences in SIP status and this app's server (not SRTP, which is set on its own)."""
    diffs = []
    if current.sip_status != wanted.sip_status:
        diffs.append(Difference("sip.status", current.sip_status, wanted.sip_status))
    ours = current.server_for(app_id)
    if ours is None:
        diffs.append(Difference("sip.server", "(none for this app)", f"{wanted.hostname}:{wanted.port}"))
        return diffs
    if ours.hostname != wanted.hostname:
        diffs.append(Difference("sip.server.hostname", ours.hostname, wanted.hostname))
    if ours.port != wanted.port:
        diffs.append(Difference("sip.server.port", str(ours.port), str(wanted.port)))
    if ours.request_uri_user_params != wanted.request_uri_user_params:
        diffs.append(Difference("sip.server.request_uri_user_params",
                                _params_text(ours.request_uri_user_params),
                                _params_text(wanted.request_uri_user_params)))
    return diffs


def srtp_difference(current: CallingSettings, wanted: DesiredSettings) -> Difference | None:
    if current.effective_srtp == wanted.srtp:
        return None
    meta = current.srtp or f"(not set: {DEFAULT_SRTP})"
    return Difference("srtp_key_exchange_protocol", meta, wanted.srtp)


def codecs_text(codecs: tuple[str, ...] | frozenset[str] | None) -> str:
    """What Meta offers, as a person reads it: ``OPUS``, ``OPUS + PCMU``..."""
    return " + ".join(("OPUS", *sorted(codecs or ())))


def codecs_difference(current: CallingSettings, wanted: DesiredSettings) -> Difference | None:
    """audio.additional_codecs compared as a set: which G.711 codecs Meta offers beside Opus."""
    if current.effective_codecs == frozenset(wanted.additional_codecs):
        return None
    meta = codecs_text(current.effective_codecs)
    if current.additional_codecs is None:
        meta += " (additional_codecs not set)"
    return Difference("audio.additional_codecs", meta, codecs_text(wanted.additional_codecs))


def other_apps_warning(business_number: str, others: list[ServerEntry]) -> str:
    ids = ", ".join(sorted({o.app_id or "?" for o in others}))
    return (f"{business_number}: other apps ({ids}) also have SIP servers on this number; Meta ends a "
            "call on a BYE from any of them. Either remove the other app's server with that app's "
            "own token (POST settings with servers: [] using its token), or, if this edge should "
            "not serve the number, remove it from [[numbers]] and clear this app's server instead")

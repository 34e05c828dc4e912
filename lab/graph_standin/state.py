"""The calling-settings behaviour of Meta's Graph API, as documented, without HTTP.

Kept apart from the server so the rules (per-app servers, one password per (number, app),
regeneration only through disable + clear + enable, DISABLED keeps servers, at least one server
while ENABLED, the SRTP field absent until set, ``audio.additional_codecs`` only PCMA/PCMU and
absent until set, 131055 on /calls while SIP is ENABLED) can be read and tested on their own.
Every method takes the caller's app id, which the server derives from the access token exactly
as Meta does.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

META_PARAM_LIMIT = 128
SRTP_PROTOCOLS = ("DTLS", "SDES")
ADDITIONAL_CODECS = ("PCMA", "PCMU")
"""What ``calling.audio.additional_codecs`` accepts (2026-03): G.711 beside Opus, which is always on."""


class GraphApiError(Exception):
    """An answer in Graph's error envelope: HTTP status plus `{"error": {...}}`."""

    def __init__(self, status: int, code: int, message: str, error_type: str = "OAuthException",
                 subcode: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.error_type = error_type
        self.subcode = subcode
        self.retry_after = retry_after

    def envelope(self, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type,
                                 "code": self.code, "fbtrace_id": fbtrace_id}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        return {"error": error}


def invalid_parameter(message: str) -> GraphApiError:
    return GraphApiError(400, 100, f"(#100) {message}")


@dataclass
class SipServer:
    hostname: str
    port: int
    request_uri_user_params: dict[str, str]
    password: str


@dataclass
class NumberState:
    """One business phone number: SIP status, one server per app, the SRTP choice."""

    phone_number_id: str
    sip_status: str = "DISABLED"
    servers: dict[str, SipServer] = field(default_factory=dict)
    srtp: str | None = None
    additional_codecs: list[str] | None = None  # None: never set (Meta offers Opus only)
    additional_codecs_available: bool = True
    """False: the field is refused for this number with #100 (a test's stand-in for a number or
    app Meta has not opened G.711 to; Meta's exact wording for that is not documented)."""
    allowed_apps: set[str] | None = None  # None: every app may manage this number
    passwords_issued: int = 0


class GraphState:
    """All numbers of the stand-in; thread-safe (the HTTP server runs a thread per connection)."""

    def __init__(self, reset_srtp_on_sip_update: bool = True) -> None:
        self.numbers: dict[str, NumberState] = {}
        self.reset_srtp_on_sip_update = reset_srtp_on_sip_update
        self._lock = threading.Lock()

    def add_number(self, phone_number_id: str, allowed_apps: set[str] | None = None) -> NumberState:
        with self._lock:
            state = NumberState(phone_number_id, allowed_apps=allowed_apps)
            self.numbers[phone_number_id] = state
            return state

    def add_server(self, phone_number_id: str, app_id: str, hostname: str, port: int = 5061,
                   params: dict[str, str] | None = None, enable: bool = True) -> str:
        """Test set-up shortcut: give `app_id` a server (and so a password); return it."""
        with self._lock:
            number = self.numbers[phone_number_id]
            server = SipServer(hostname, port, dict(params or {}), self._new_password(number))
            number.servers[app_id] = server
            if enable:
                number.sip_status = "ENABLED"
            return server.password

    def password(self, phone_number_id: str, app_id: str) -> str | None:
        with self._lock:
            server = self.numbers[phone_number_id].servers.get(app_id)
            return server.password if server else None

    # ---- the documented endpoints ----------------------------------------------------------

    def _number(self, app_id: str, phone_number_id: str) -> NumberState:
        number = self.numbers.get(phone_number_id)
        if number is None:
            raise GraphApiError(
                400, 100, f"Unsupported request - method type: get. Object with ID "
                f"'{phone_number_id}' does not exist, cannot be loaded due to missing permissions, "
                "or does not support this operation", "GraphMethodException", subcode=33)
        if number.allowed_apps is not None and app_id not in number.allowed_apps:
            raise GraphApiError(403, 10, "(#10) Application does not have permission for this action")
        return number

    def check_access(self, app_id: str, phone_number_id: str) -> None:
        """The number exists and this app may act for it (Graph's 100/33 and 10 otherwise)."""
        with self._lock:
            self._number(app_id, phone_number_id)

    def get_settings(self, app_id: str, phone_number_id: str, include_credentials: bool) -> dict[str, Any]:
        """GET /<id>/settings: every app's server entry; this app's password on request."""
        with self._lock:
            number = self._number(app_id, phone_number_id)
            servers = []
            for owner, server in number.servers.items():
                entry: dict[str, Any] = {"app_id": owner, "hostname": server.hostname,
                                         "port": server.port}
                if server.request_uri_user_params:
                    entry["request_uri_user_params"] = dict(server.request_uri_user_params)
                if include_credentials and owner == app_id:
                    entry["sip_user_password"] = server.password
                servers.append(entry)
            calling: dict[str, Any] = {"status": "ENABLED",
                                       "sip": {"status": number.sip_status, "servers": servers}}
            if number.srtp is not None:
                calling["srtp_key_exchange_protocol"] = number.srtp
            if number.additional_codecs is not None:
                calling["audio"] = {"additional_codecs": list(number.additional_codecs)}
            return {"calling": calling}

    def post_settings(self, app_id: str, phone_number_id: str, body: Any) -> dict[str, Any]:
        """POST /<id>/settings; validates everything before changing anything."""
        calling = _calling_body(body)
        with self._lock:
            number = self._number(app_id, phone_number_id)
            status = number.sip_status
            servers = dict(number.servers)
            srtp = number.srtp
            sip = calling.get("sip")
            if sip is not None:
                status = sip.get("status", status)
                if "servers" in sip:
                    wanted = sip["servers"]
                    if len(wanted) > 1:
                        raise invalid_parameter("Only one SIP server may be configured per app")
                    if not wanted:
                        servers.pop(app_id, None)
                    else:
                        entry = wanted[0]
                        old = servers.get(app_id)
                        servers[app_id] = SipServer(
                            entry["hostname"], entry.get("port", 5061),
                            dict(entry.get("request_uri_user_params", {})),
                            old.password if old else self._new_password(number))
                if status == "ENABLED" and not servers:
                    raise invalid_parameter(
                        "At least one SIP server must be configured when SIP is enabled")
                if self.reset_srtp_on_sip_update and srtp is not None:
                    srtp = "DTLS"  # the integrator-reported reset; hence srtp in its own call
            if "srtp_key_exchange_protocol" in calling:
                srtp = calling["srtp_key_exchange_protocol"]
            codecs = number.additional_codecs
            if "audio" in calling:
                if not number.additional_codecs_available:
                    raise invalid_parameter(
                        "calling.audio.additional_codecs is not available for this phone number")
                codecs = list(calling["audio"]["additional_codecs"])
            number.sip_status, number.servers, number.srtp = status, servers, srtp
            number.additional_codecs = codecs
            return {"success": True}

    def post_calls(self, app_id: str, phone_number_id: str) -> dict[str, Any]:
        """POST /<id>/calls: refused with 131055 while SIP is enabled."""
        with self._lock:
            number = self._number(app_id, phone_number_id)
            if number.sip_status == "ENABLED":
                raise GraphApiError(
                    400, 131055, "(#131055) Method not allowed: calling is configured to use SIP "
                    "for this phone number; the Calling API is not available")
            return {"messaging_product": "whatsapp", "calls": [{"id": "wacid." + secrets.token_hex(8)}]}

    def _new_password(self, number: NumberState) -> str:
        number.passwords_issued += 1
        return secrets.token_urlsafe(24)


def _calling_body(body: Any) -> dict[str, Any]:
    """Validate a settings POST body the way Graph does: unknown or malformed fields are #100."""
    if not isinstance(body, dict) or set(body) - {"calling"} or not isinstance(body.get("calling"), dict):
        raise invalid_parameter("Param calling must be a JSON object")
    calling: dict[str, Any] = body["calling"]
    unknown = set(calling) - {"sip", "srtp_key_exchange_protocol", "status", "audio"}
    if unknown:
        raise invalid_parameter(f"Unknown calling field(s): {', '.join(sorted(unknown))}")
    srtp = calling.get("srtp_key_exchange_protocol", "DTLS")
    if srtp not in SRTP_PROTOCOLS:
        raise invalid_parameter("srtp_key_exchange_protocol must be DTLS or SDES")
    if "audio" in calling:
        _check_audio(calling["audio"])
    sip = calling.get("sip")
    if sip is None:
        return calling
    if not isinstance(sip, dict) or set(sip) - {"status", "servers"}:
        raise invalid_parameter("Param calling.sip must hold only status and servers")
    if "status" in sip and sip["status"] not in ("ENABLED", "DISABLED"):
        raise invalid_parameter("calling.sip.status must be ENABLED or DISABLED")
    servers = sip.get("servers", [])
    if not isinstance(servers, list):
        raise invalid_parameter("calling.sip.servers must be a list")
    for entry in servers:
        _check_server(entry)
    return calling


def _check_audio(audio: Any) -> None:
    """``calling.audio``: only ``additional_codecs``, a list of distinct PCMA/PCMU ([] clears it)."""
    if not isinstance(audio, dict) or set(audio) != {"additional_codecs"}:
        raise invalid_parameter("Param calling.audio must hold additional_codecs")
    codecs = audio["additional_codecs"]
    if (not isinstance(codecs, list) or any(c not in ADDITIONAL_CODECS for c in codecs)
            or len(set(codecs)) != len(codecs)):
        raise invalid_parameter("calling.audio.additional_codecs must be a list of distinct values "
                                f"among {', '.join(ADDITIONAL_CODECS)}")


def _check_server(entry: Any) -> None:
    if not isinstance(entry, dict) or set(entry) - {"hostname", "port", "request_uri_user_params"}:
        raise invalid_parameter("a SIP server holds hostname, port, request_uri_user_params")
    if not isinstance(entry.get("hostname"), str) or not entry["hostname"]:
        raise invalid_parameter("calling.sip.servers[0].hostname is required")
    port = entry.get("port", 5061)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise invalid_parameter("calling.sip.servers[0].port must be 1-65535")
    params = entry.get("request_uri_user_params", {})
    if not isinstance(params, dict):
        raise invalid_parameter("request_uri_user_params must be an object")
    for key, value in params.items():
        if not isinstance(value, str) or len(key) > META_PARAM_LIMIT or len(value) > META_PARAM_LIMIT:
            raise invalid_parameter(
                "request_uri_user_params keys and values must be strings of at most "
                f"{META_PARAM_LIMIT} characters")

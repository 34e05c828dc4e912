"""What the edge checks in Meta's digest credentials before Kamailio's auth module checks the
response itself.

Kamailio's `auth` module verifies the response against the HA1 and tracks nonces, but only
for a response with `nc` (qop) does it refuse a replay; an RFC 2069 response (no qop) stays
valid for the nonce's lifetime, on any Call-ID. It also accepts a digest whose `uri` names
another resource than the request, and drops credentials it cannot parse without an answer.
Meta always answers with qop=auth and the request URI (RFC 7616 3.4.6 requires the server to
check it), so the edge refuses anything else with a 400 that says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REQUIRED = ("username", "realm", "nonce", "uri", "response")
# A quoted value is written with the "unrolled loop" (runs of plain characters between escapes):
# the same strings as ("(?:[^"\\]|\\.)*"), without one regex branch per character.
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("[^"\\]*(?:\\.[^"\\]*)*"|[^\s,"]*)\s*(?:,|$)')
_NC = re.compile(r"^[0-9a-fA-F]{8}$")


class CredentialsProblem(Exception):
    """Credentials that are there but unusable; str() is the reason phrase's tail."""


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    username: str
    realm: str
    uri: str
    nonce: str = ""
    nc: int = 0  # the nonce count, checked to be 8 hex digits
    cnonce: str = ""

    @property
    def replay_key(self) -> str:
        """What a replayed nc is counted under: the nonce and the client's cnonce. Kamailio's
        auth without nonce_count gives every challenge of one second the same nonce, and Meta
        answers each new challenge with nc=1, so the nonce alone would call the second call of
        a second a replay; a replay repeats the cnonce (another one needs the password)."""
        return f"{self.nonce}/{self.cnonce}"


def parse_digest(value: str) -> DigestCredentials:
    """The parts of one `Digest` credentials value the edge checks; CredentialsProblem if none."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise CredentialsProblem(f"{scheme[:20] or 'empty'} credentials, Digest expected")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            raise CredentialsProblem("unparsable Digest credentials")
        name, raw = match[1].lower(), match[2]
        if name in params:
            raise CredentialsProblem(f"Digest parameter {name} repeated")
        if raw.startswith('"'):
            raw = raw[1:-1]
            if "\\" in raw:
                raw = raw.replace('\\"', '"').replace("\\\\", "\\")
        params[name] = raw
        position = match.end()
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise CredentialsProblem(f"Digest credentials without {', '.join(missing)}")
    qop = params.get("qop")
    if qop is None:
        raise CredentialsProblem("Digest without qop=auth is not accepted")
    if qop.lower() != "auth":
        raise CredentialsProblem(f"Digest qop={qop[:20]} is not offered, qop=auth is")
    if not _NC.match(params.get("nc", "")) or not params.get("cnonce"):
        raise CredentialsProblem("Digest qop=auth without a valid nc and cnonce")
    return DigestCredentials(params["username"], params["realm"], params["uri"],
                             params["nonce"], int(params["nc"], 16), params["cnonce"])


def credentials_for(fields: list[tuple[str, str]], header: str,
                    realm: str) -> DigestCredentials | None:
    """The one credentials header `header` for `realm`; None when there is none (challenge).

    Kamailio's auth module uses the first header whose realm matches; the edge accepts only
    one such header at all, so the credentials it checks are the ones Kamailio checks.
    """
    wanted = header.lower()
    values = [value for name, value in fields if name.lower() == wanted]
    if not values:
        return None
    if len(values) > 1:
        raise CredentialsProblem(f"{len(values)} {header} headers, one expected")
    credentials = parse_digest(values[0])
    if credentials.realm.lower() != realm.lower():
        return None  # for another realm: not an answer to our challenge
    return credentials


def same_resource(digest_uri: str, request_uri: str) -> bool:
    """RFC 7616 3.4.6: the digest `uri` names the resource of the request.

    The resource is the business number at our domain: scheme, the number (the user part
    before its parameters) and host must match; user parameters (tgrp, trunk-context), port
    and URI parameters (;transport=tls) may differ, as Meta's own digest checks let the To URI
    and the digest uri differ in parameters (Meta's "Proxy auth uri does not match SIP \"to\" uri").
    """
    return _resource(digest_uri) == _resource(request_uri) != ("", "", "")


def _resource(uri: str) -> tuple[str, str, str]:
    scheme, _, rest = uri.partition(":")
    user, at, hostport = rest.split("?", 1)[0].rpartition("@")
    if not at or not user:
        return ("", "", "")
    hostport = hostport.split(";", 1)[0].lower()
    host = hostport[: hostport.find("]") + 1] if hostport.startswith("[") \
        else hostport.split(":", 1)[0]
    return scheme.lower(), user.split(";", 1)[0], host

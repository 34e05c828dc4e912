"""Meta's digest rules for business-initiated calls, as the stand-in applies them.

Field traces (shared/spec/meta-sip.md, "Field reports") show Meta's 407 carrying two
`Proxy-Authenticate` headers, SHA-256 first, each with its own nonce and opaque, and Meta
refusing with `403 Proxy auth uri does not match SIP "to" uri` a digest whose `uri` differs from
the To URI. These functions hold the parts of that which need no Kamailio, so the tests can run
them directly: the challenge headers in Meta's own layout, the pairing of nonce, opaque and
algorithm, and the digest-uri-versus-To rule. The response itself is checked by Kamailio's auth
module in standin.py.

Standard library only: this runs in Kamailio's embedded Python too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

# Meta's order in its 407: the strongest first (RFC 8760 3).
CHALLENGE_ALGORITHMS = ("SHA-256", "MD5")
FORBIDDEN_URI = 'Proxy auth uri does not match SIP "to" uri'
# Which digest uris Meta accepts for a To URI: the To URI itself ("to"), or the To URI without its
# parameters ("to-without-params": LiveKit's accepted trace). Both is what the traces allow.
URI_FORMS = ("to", "to-without-params")

_PARAMETER = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    """One of the 407's challenges: its algorithm, nonce and opaque."""

    algorithm: str
    nonce: str
    opaque: str

    def header(self, realm: str) -> str:
        """The header line exactly as Meta's trace lays it out (no blanks after commas)."""
        return (f'Proxy-Authenticate: Digest realm="{realm}",nonce="{self.nonce}",'
                f'opaque="{self.opaque}",algorithm={self.algorithm},qop="auth"\r\n')

    def summary(self) -> str:
        """`ALGORITHM:nonce:opaque` for the events file (':' is in neither base64 nor hex)."""
        return f"{self.algorithm}:{self.nonce}:{self.opaque}"


def opaque_for(secret: bytes, nonce: str, algorithm: str) -> str:
    """The opaque of the challenge (nonce, algorithm): bound to both, so neither can be swapped.

    Stateless (an HMAC under the stand-in's secret), as a cluster like Meta's would make it: any
    worker can tell which challenge an answer claims to use without a shared table.
    """
    return hmac.new(secret, f"{algorithm}|{nonce}".encode(), hashlib.sha256).hexdigest()[:32]


def parse_digest(value: str) -> dict[str, str] | None:
    """The parameters of a `Digest ...` credentials value, names lower-cased, quotes removed.

    None for anything that is not a digest (another scheme, a bare `Digest`, a repeated or
    unparsable parameter): Meta challenges those again.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest" or not rest.strip():
        return None
    fields: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAMETER.match(rest, position)
        if match is None or match.end() == position:
            return None
        name, raw = match[1].lower(), match[2]
        if name in fields:
            return None
        fields[name] = raw[1:-1] if raw.startswith('"') else raw
        position = match.end()
    return fields


def without_params(uri: str) -> str:
    """A SIP URI without its URI parameters and headers: `sip:+1@wa.meta.vc;transport=tls` ->
    `sip:+1@wa.meta.vc`. Parameters of the user part (before '@') stay: they are the user's."""
    at = uri.find("@")
    head, tail = (uri[:at + 1], uri[at + 1:]) if at >= 0 else ("", uri)
    return head + re.split(r"[;?]", tail, maxsplit=1)[0]


def digest_uri_matches_to(digest_uri: str, to_uri: str, forms: tuple[str, ...] = URI_FORMS) -> bool:
    """Meta's check: the digest uri is the To URI, or the To URI without its parameters."""
    accepted = {"to": to_uri, "to-without-params": without_params(to_uri)}
    return any(digest_uri == accepted[form] for form in forms)


def answered_algorithm(fields: dict[str, str], secret: bytes) -> tuple[str | None, str]:
    """Which of the 407's challenges the answer uses, or None and why it uses none correctly.

    The answer must say qop=auth (the challenge asked for it) and return the opaque that belongs
    to its own nonce and its algorithm (no algorithm means MD5, RFC 7616 3.3). A nonce of one
    challenge with the opaque or the algorithm of the other is refused.
    """
    algorithm = fields.get("algorithm", "MD5")
    if algorithm not in CHALLENGE_ALGORITHMS:
        return None, f"algorithm {algorithm!r} was not offered"
    if fields.get("qop") != "auth":
        return None, f"qop {fields.get('qop')!r} is not auth"
    nonce, opaque = fields.get("nonce", ""), fields.get("opaque")
    if opaque is None:
        return None, "no opaque"
    if not hmac.compare_digest(opaque, opaque_for(secret, nonce, algorithm)):
        return None, f"opaque is not the one of this nonce's {algorithm} challenge"
    return algorithm, "ok"


# ---- the nonce and the response, as Meta's side judges them ---------------------------------
# Meta's nonces are opaque to its clients; the stand-in's are `time.salt.mac`: stateless to make
# and check on any worker (like opaque_for), unforgeable, and dated so that an old one is stale.

NONCE_LIFETIME = 30
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_NC = re.compile(r"^[0-9a-f]{8}$")


def make_nonce(secret: bytes, now: float) -> str:
    stamp = f"{int(now):08x}"
    salt = secrets.token_hex(8)
    mac = hmac.new(secret, f"nonce|{stamp}.{salt}".encode(), hashlib.sha256).hexdigest()[:24]
    return f"{stamp}.{salt}.{mac}"


def nonce_problem(secret: bytes, nonce: str, now: float,
                  lifetime: int = NONCE_LIFETIME) -> str | None:
    """None for a nonce the stand-in made less than `lifetime` s ago, else why not."""
    parts = nonce.split(".")
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[0]):
        return "nonce is not one of ours"
    mac = hmac.new(secret, f"nonce|{parts[0]}.{parts[1]}".encode(),
                   hashlib.sha256).hexdigest()[:24]
    if not hmac.compare_digest(mac, parts[2]):
        return "nonce is not one of ours"
    age = now - int(parts[0], 16)
    if age < 0 or age > lifetime:
        return f"nonce is stale ({int(age)} s old)"
    return None


def nonce_count(fields: dict[str, str]) -> int | None:
    """The answer's nc as a number (8 hex digits, RFC 7616 3.4), or None."""
    nc = fields.get("nc", "").lower()
    return int(nc, 16) if _NC.match(nc) else None


def expected_response(algorithm: str, username: str, realm: str, password: str, method: str,
                      fields: dict[str, str]) -> str:
    """RFC 7616 3.4.1, qop=auth, computed from the plain password as Meta holds it."""
    digest = _HASHES[algorithm]
    ha1 = digest(f"{username}:{realm}:{password}".encode()).hexdigest()
    ha2 = digest(f"{method}:{fields.get('uri', '')}".encode()).hexdigest()
    text = (f"{ha1}:{fields.get('nonce', '')}:{fields.get('nc', '')}:{fields.get('cnonce', '')}"
            f":auth:{ha2}")
    return digest(text.encode()).hexdigest()

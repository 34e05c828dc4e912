"""The edge's answer to Meta's 407 on a business-initiated call (RFC 7616, RFC 8760).

Meta's 407 carries two `Proxy-Authenticate` challenges, SHA-256 first, then MD5, each with its
own nonce and opaque (shared/spec/meta-sip.md, field reports). No released Kamailio `uac`
answers SHA-256: 5.6 and 6.0 fail on the first (SHA-256) challenge outright, 6.1.3+ skips it
and answers MD5 (upstream abb36b45c9). So the edge picks the challenge here (the strongest one
it holds an HA1 for) and builds the `Proxy-Authorization` value itself from the stored HA1; the
CSeq renumbering that RFC 3261 8.1.3.5 asks of a resubmitted request stays with Kamailio's
dialog module (kemi/edge.py). The password itself is never known to the edge: only HA1s.

Standard library only: this runs in Kamailio's embedded Python.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

# The edge's preference, strongest first (RFC 8760 3: a client uses the first it supports).
PREFERENCE = ("SHA-256", "MD5")
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


@dataclass(frozen=True)
class Challenge:
    """One `Proxy-Authenticate: Digest ...` value, the parts an answer echoes."""

    algorithm: str  # "MD5" when none is named (RFC 7616 3.3)
    realm: str
    nonce: str
    opaque: str | None
    qop_auth: bool  # the challenge offers qop=auth


def parse_challenge(value: str) -> Challenge | None:
    """A Digest challenge, or None for another scheme or one that cannot be answered."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None or match.end() == position:
            return None
        raw = match[2]
        params[match[1].lower()] = raw[1:-1] if raw.startswith('"') else raw
        position = match.end()
    if not params.get("nonce") or "realm" not in params:
        return None
    qops = {q.strip().lower() for q in params.get("qop", "").split(",")}
    return Challenge(params.get("algorithm", "MD5").upper(), params["realm"], params["nonce"],
                     params.get("opaque"), "auth" in qops)


def choose(challenges: list[Challenge], ha1_by_algorithm: dict[str, str]) -> Challenge | None:
    """The challenge to answer: the first of PREFERENCE that was offered (with qop=auth, which
    Meta always offers and which protects the answer with nc/cnonce) and has an HA1."""
    for algorithm in PREFERENCE:
        if not ha1_by_algorithm.get(algorithm):
            continue
        for challenge in challenges:
            if challenge.algorithm == algorithm and challenge.qop_auth:
                return challenge
    return None


def response(algorithm: str, ha1: str, nonce: str, nc: str, cnonce: str, method: str,
             uri: str) -> str:
    """RFC 7616 3.4.1 with qop=auth: H(HA1:nonce:nc:cnonce:auth:H(method:uri))."""
    digest = _HASHES[algorithm]
    ha2 = digest(f"{method}:{uri}".encode()).hexdigest()
    return digest(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()


def authorization(challenge: Challenge, username: str, ha1: str, method: str, uri: str,
                  cnonce: str | None = None) -> str:
    """The `Proxy-Authorization` value answering `challenge` once (nc=00000001)."""
    cnonce = cnonce or secrets.token_hex(8)
    nc = "00000001"
    answer = response(challenge.algorithm, ha1, challenge.nonce, nc, cnonce, method, uri)
    opaque = f', opaque="{challenge.opaque}"' if challenge.opaque is not None else ""
    return (f'Digest username="{username}", realm="{challenge.realm}", '
            f'nonce="{challenge.nonce}", uri="{uri}", response="{answer}", '
            f"algorithm={challenge.algorithm}, cnonce=\"{cnonce}\"{opaque}, qop=auth, nc={nc}")

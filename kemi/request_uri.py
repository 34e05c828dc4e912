"""Meta's request URI on user-initiated calls.

Meta puts the business number in the user part with a '+', and the configured
`request_uri_user_params` after it in the RFC 4904 style:
`sip:+1234567890;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

# The digits of a +E164 number: a country code (no leading 0) and 7 to 15 digits in all.
# Shared with kemi/bic.py, which normalizes what agents type into the same form.
E164_DIGITS = re.compile(r"^[1-9][0-9]{6,14}$")
URI_CACHE_SIZE = 256  # request URIs parsed per worker (one or a few per business number)


class RequestUriError(ValueError):
    """The request URI cannot be a Meta call for this edge; `status`/`reason` go in the reply."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class UicTarget:
    """Who Meta is calling: the business number and the user parameters Meta inserted."""

    business_number: str
    host: str
    user_params: dict[str, str]

    @property
    def digits(self) -> str:
        return self.business_number[1:]


def split_sip_uri(uri: str) -> tuple[str, str, str]:
    """(scheme, user part, host) of a SIP URI; host without port, brackets or parameters."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        raise RequestUriError(416, "Unsupported URI Scheme")
    rest = rest.split("?", 1)[0]
    user, at, hostport = rest.rpartition("@")
    if not at:
        user, hostport = "", rest
    hostport = hostport.split(";", 1)[0]
    if hostport.startswith("["):
        host = hostport[1 : hostport.find("]")]
    else:
        host = hostport.rsplit(":", 1)[0] if hostport.count(":") == 1 else hostport
    if not host:
        raise RequestUriError(400, "Bad Request-URI: no host")
    return scheme.lower(), user, host.lower()


def is_ip_literal(host: str) -> bool:
    """An IPv4 or IPv6 address (unbracketed). Host names are told apart without an exception:
    every IPv4 literal is digits and dots, every IPv6 literal holds a colon."""
    if ":" not in host and (not host or host.strip("0123456789.")):
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_user_part(user: str) -> tuple[str, dict[str, str]]:
    """Business number as +E164 and its user parameters (keys lowercased, values unescaped)."""
    number, *params = user.split(";")
    number = unquote(number)
    digits = number[1:] if number.startswith("+") else number
    if not E164_DIGITS.match(digits):
        raise RequestUriError(404, "Not Found: request URI user is not a business number")
    parsed: dict[str, str] = {}
    for param in params:
        if not param:
            continue
        key, _, value = param.partition("=")
        parsed[unquote(key).strip().lower()] = unquote(value)
    return "+" + digits, parsed


@lru_cache(maxsize=URI_CACHE_SIZE)
def parse_uic_request_uri(uri: str, accepted_domains: frozenset[str]) -> UicTarget:
    """Check and take apart the request URI of an INVITE from Meta.

    A pure function of its arguments, kept per worker for the last URI_CACHE_SIZE good URIs
    (Meta calls a number with the same URI every time, both INVITEs of a call too); a refused
    URI raises and is never kept. The target is shared between calls: nothing changes it."""
    _scheme, user, host = split_sip_uri(uri)
    if not user:
        raise RequestUriError(404, "Not Found: no business number in request URI")
    if is_ip_literal(host):
        raise RequestUriError(404, "Not Found: IP literal in request URI, use the SIP domain")
    if host not in accepted_domains:
        raise RequestUriError(404, "Not Found: domain not served here")
    number, params = parse_user_part(user)
    return UicTarget(number, host, params)

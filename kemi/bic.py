"""Business-initiated calls: what FreeSWITCH sent, turned into what Meta accepts.

FreeSWITCH's gateway addresses the edge (`sip:<what the agent typed>@<edge address>`, From
`<business number>@<edge address>`). Meta takes only `sip:+E164@wa.meta.vc;transport=tls`, a
From user that is the business number as +E164 and a From domain that Meta's sub-domain rule
accepts. Anything Meta would refuse with a bare 404 or 403 is refused here instead, with the
reason in words and a diagnosis code, before a TLS connection is even opened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from kemi.request_uri import E164_DIGITS, RequestUriError, is_ip_literal, split_sip_uri
from kemi.settings import EdgeSettings

# Separators agents type inside numbers (RFC 3966 visual separators plus blanks and slashes).
_VISUAL_SEPARATORS = re.compile(r"[\s\-.()/\[\]]")
# A business-scoped user id (BSUID) may stand where a number would (uncertain): passed as is.
_BSUID = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9._-]{1,64}$")
_ALGORITHM = re.compile(r'(?:^|[\s,])algorithm\s*=\s*"?([A-Za-z0-9-]{1,32})', re.IGNORECASE)


class BicRefusal(ValueError):
    """The edge refuses the call itself: `status`/`reason` for the reply, `code` for the diagnosis."""

    def __init__(self, status: int, reason: str, code: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code


def normalize_number(text: str) -> str:
    """+E164 from the forms agents type: blanks, dashes, dots, parentheses, leading 00, no '+'.

    A single leading 0 is a national number: its country cannot be guessed, so it is refused.
    """
    compact = _VISUAL_SEPARATORS.sub("", unquote(text))
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    else:
        digits = compact
    if digits.startswith("0") and digits.isdigit():
        raise ValueError(f"{text!r} is a national number: dial it with the country code")
    if not E164_DIGITS.match(digits):
        raise ValueError(f"{text!r} is not a phone number (7 to 15 digits after the country code)")
    return "+" + digits


@dataclass(frozen=True)
class BicTarget:
    """The WhatsApp user to call: +E164 (or a BSUID) and the URIs Meta wants.

    Request URI, To URI and (through uac, which takes the branch's request URI) the digest
    `uri` are one and the same string. Meta refuses with `403 Proxy auth uri does not match SIP
    "to" uri` a digest uri that carries `;transport=tls` while the To URI does not (jambonz's
    trace), and accepted a To with `;transport=tls` (LiveKit's trace): identical URIs meet every
    reading of that rule and RFC 3261 22.4 (digest uri = request URI) at once.
    """

    user: str
    meta_host: str

    @property
    def request_uri(self) -> str:
        return f"sip:{self.user}@{self.meta_host};transport=tls"

    @property
    def to_uri(self) -> str:
        return self.request_uri


def parse_bic_request_uri(uri: str, host_is_local: bool, meta_host: str,
                          own_domains: frozenset[str]) -> BicTarget:
    """Check FreeSWITCH's request URI and find the WhatsApp user in it.

    The host may be the edge itself (how FreeSWITCH's gateway addresses it), Meta's host name
    or one of our own domains. An IP literal anywhere else is what Meta answers 404 to.
    """
    try:
        scheme, user, host = split_sip_uri(uri)
    except RequestUriError as error:
        raise BicRefusal(416 if error.status == 416 else 400, error.reason, "bad_request_uri") \
            from None
    if scheme == "sips":
        raise BicRefusal(416, "Unsupported URI Scheme - sips: is refused by Meta, "
                              "use sip:+E164@wa.meta.vc;transport=tls", "sips_uri")
    if not host_is_local and host != meta_host.lower() and host not in own_domains:
        if is_ip_literal(host):
            raise BicRefusal(404, f"Not Found - IP literal {host} in request URI: Meta answers "
                                  "404, use +E164@wa.meta.vc", "ip_literal")
        raise BicRefusal(404, f"Not Found - request URI host {host} is not {meta_host}",
                         "not_meta_host")
    number_text = unquote(user.split(";", 1)[0])
    if not number_text:
        raise BicRefusal(404, "Not Found - no WhatsApp user in request URI", "bad_number")
    if _BSUID.match(number_text):
        return BicTarget(number_text, meta_host)
    try:
        return BicTarget(normalize_number(number_text), meta_host)
    except ValueError as error:
        raise BicRefusal(484, f"Address Incomplete - {error}", "bad_number") from None


def challenge_algorithm(challenge: str) -> str:
    """The algorithm of one WWW-/Proxy-Authenticate value; none named means MD5 (RFC 7616 3.3).

    Meta's 407 carries a SHA-256 and an MD5 challenge; the edge logs which it was offered so
    that a challenge the edge cannot answer (no HA1 for its algorithm, no qop=auth) is named.
    """
    match = _ALGORITHM.search(challenge)
    return match[1].upper() if match else "MD5"


def meta_accepts_from_domain(from_domain: str, sip_hostname: str) -> bool:
    """Meta's rule: the From domain is the configured SIP hostname, or one that the hostname is a
    sub-domain of (configured `bar.foo.com`: `foo.com` passes, `oo.com` and `baz.bar.foo.com`
    do not). Compared case-insensitively on whole labels."""
    domain = from_domain.lower()
    hostname = sip_hostname.lower()
    if not domain or is_ip_literal(domain.strip("[]")):
        return False
    return hostname == domain or hostname.endswith("." + domain)


@dataclass(frozen=True)
class BicCaller:
    """The From Meta will see, and what the edge changed to get there (for the log)."""

    business_number: str
    domain: str
    changes: tuple[str, ...] = ()

    @property
    def uri(self) -> str:
        return f"sip:{self.business_number}@{self.domain}"

    @property
    def digits(self) -> str:
        return self.business_number[1:]


def bic_caller(from_user: str, from_host: str, host_is_local: bool,
               settings: EdgeSettings) -> BicCaller:
    """Decide the From of a BIC: a configured business number at a domain Meta accepts.

    A From host that is the edge itself or an IP address is how a FreeSWITCH gateway writes
    "use the default": it always becomes `sip_domain`. A host name that fails Meta's rule, or a
    user that is not a configured number, is refused, unless `bic.from_mode = "rewrite"` (the
    user then becomes `bic.default_number`, when one is set).
    """
    rewrite = settings.bic.from_mode == "rewrite"
    changes: list[str] = []
    try:
        number: str | None = normalize_number(from_user)
    except ValueError:
        number = None
    if number is None or number[1:] not in settings.numbers:
        default = settings.bic.default_number
        if not (rewrite and default):
            raise BicRefusal(403, f"Forbidden - From user {from_user!r} is not a configured "
                                  "business number", "from_not_configured")
        changes.append(f"From user {from_user} -> {default}")
        number = default
    elif number != from_user:
        changes.append(f"From user {from_user} -> {number}")
    host = from_host.lower()
    if host_is_local or is_ip_literal(host.strip("[]")):
        domain = settings.sip_domain
        changes.append(f"From domain {from_host} -> {domain}")
    elif meta_accepts_from_domain(host, settings.sip_domain):
        domain = host
    elif rewrite:
        domain = settings.sip_domain
        changes.append(f"From domain {from_host} -> {domain}")
    else:
        raise BicRefusal(403, f"Forbidden - From domain {from_host} does not match the SIP "
                              f"hostname {settings.sip_domain} (Meta would answer 403)",
                         "sip_server_mismatch")
    return BicCaller(number, domain, tuple(changes))

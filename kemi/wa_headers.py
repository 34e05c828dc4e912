"""Which headers reach FreeSWITCH, and in what form.

Meta's `x-wa-meta-*` headers pass through unchanged (a proxy forwards headers anyway) once they
are screened: the payload headers carry text that a business chose and a user's client sent, so
they are capped in length and limited to printable characters. The edge adds its own `X-WA-*`
headers with what it established (business number, trunk parameters, context, how Meta was
authenticated) and removes any `X-WA-*` header that arrived from outside, so FreeSWITCH can
trust them. `X-FB-External-Domain` is never read: anyone can write it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

META_PREFIX = "x-wa-meta-"
EDGE_PREFIX = "x-wa-"
PAYLOAD_HEADERS = frozenset({"x-wa-meta-cta-payload", "x-wa-meta-deeplink-payload"})
# Printable ASCII and UTF-8 text without control characters: what FreeSWITCH variables and
# CDR columns can hold safely.
_PRINTABLE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PARAM_NAME = re.compile(r"[^0-9A-Za-z-]")


@dataclass(frozen=True)
class ScreenResult:
    """Names of headers to remove (lowercase) and why, for the log."""

    remove: tuple[str, ...]
    reasons: tuple[str, ...]


def end_of_headers(message: str) -> int:
    """Where the headers end: the start of the first line break followed by an empty line
    (`\\r?\\n\\r?\\n`, the leftmost match), or len(message) when there is none.

    Found with str.find instead of that regex: a pattern that starts with an optional
    character has no literal prefix for the regex engine to skip to, so it tried a match at
    every position of the message (~150,000 instructions for one INVITE, three times a call)."""
    ends = [i for i in (message.find("\n\n"), message.find("\n\r\n")) if i >= 0]
    if not ends:
        return len(message)
    first = min(ends)  # the first LF that an empty line follows
    return first - 1 if first > 0 and message[first - 1] == "\r" else first


def header_fields(message: str) -> list[tuple[str, str]]:
    """(name, value) of each header field in a raw SIP message, unfolded, in order.

    Lines are read as Kamailio's parser reads them (core/parser/msg_parser.c, get_hdr_field):
    a header ends at its LF, a CR before it dropped, unless the next line starts with a space
    or tab (folded); the headers end at the first empty line. So a header after a bare LF is
    a header here too, as it is to Kamailio: split at CRLF only, it was read as part of the
    line before, and an X-WA-* header (or a second credentials header) written that way was
    not seen by the screening (or the one-credentials-header check).
    """
    head = message[:end_of_headers(message)]
    lines = head.split("\n")[1:]
    if "\n " not in head and "\n\t" not in head:
        # No folded line (Meta folds none): each line with a colon is a field. strip() also
        # drops the CR before the LF, as the loop below does.
        return [(name.strip(), value.strip())
                for name, sep, value in (line.partition(":") for line in lines) if sep]
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            fields.append((name.strip(), value.strip()))
    return fields


def may_carry_edge_headers(message: str) -> bool:
    """False only when no header of `message` can be an `X-WA-*` one: "x-wa-" appears nowhere
    in it, in any letter case, so screening would remove nothing (Meta's usual ACK and BYE),
    and the header walk is skipped. Any occurrence (a header, a value, the body) means True."""
    return EDGE_PREFIX in message.lower()


def screen_inbound_headers(fields: list[tuple[str, str]], payload_max: int,
                           meta_max: int) -> ScreenResult:
    """Decide which headers of Meta's INVITE must not reach FreeSWITCH."""
    remove: list[str] = []
    reasons: list[str] = []
    for name, value in fields:
        lower = name.lower()
        if not lower.startswith(EDGE_PREFIX) or lower in remove:
            continue
        if not lower.startswith(META_PREFIX):
            remove.append(lower)
            reasons.append(f"{name}: edge-owned header arrived from outside")
            continue
        limit = payload_max if lower in PAYLOAD_HEADERS else meta_max
        if len(value.encode()) > limit:
            remove.append(lower)
            reasons.append(f"{name}: {len(value.encode())} bytes, over the {limit}-byte cap")
        elif not _PRINTABLE.match(value):
            remove.append(lower)
            reasons.append(f"{name}: control characters")
        elif not _HEADER_NAME.match(name):
            remove.append(lower)
            reasons.append(f"{name}: not a valid header name")
    return ScreenResult(tuple(remove), tuple(reasons))


def edge_headers(business_number: str, user_params: dict[str, str], context: str,
                 auth: str) -> list[str]:
    """The `X-WA-*` header lines the edge adds toward FreeSWITCH (CRLF-terminated).

    tgrp and trunk-context have names of their own (FreeSWITCH dialplans match on them);
    any other request-URI user parameter becomes `X-WA-Param-<key>`.
    """
    lines = [f"X-WA-Business-Number: {business_number}\r\n",
             f"X-WA-Context: {context}\r\n",
             f"X-WA-Auth: {auth}\r\n"]
    for key, value in user_params.items():
        safe_value = value if _PRINTABLE.match(value) else ""
        if key == "tgrp":
            lines.append(f"X-WA-Tgrp: {safe_value}\r\n")
        elif key == "trunk-context":
            lines.append(f"X-WA-Trunk-Context: {safe_value}\r\n")
        else:
            lines.append(f"X-WA-Param-{_PARAM_NAME.sub('-', key)}: {safe_value}\r\n")
    return lines


def edge_header_block(business_number: str, user_params: dict[str, str], context: str,
                      auth: str) -> str:
    """edge_headers() as one text, added with one KSR.hdr.append (one lump, one KSR call)."""
    return "".join(edge_headers(business_number, user_params, context, auth))

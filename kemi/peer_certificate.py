"""Does the peer's TLS certificate name the host we meant to reach?

Kamailio's tls module (5.6 and 6.1 alike) verifies the chain only. Before the edge answers Meta's digest
challenge (which proves knowledge of the SIP password), the script checks the certificate's
names itself. `$tls_peer_san_hostname` holds only the first DNS name, so the edge reads the whole
certificate (`$tls_peer_raw_cert`, PEM) and takes its subjectAltName DNS names with a small DER
reader: the standard library has no X.509 parser. Names are matched as RFC 6125 says: case
insensitive, a wildcard only as the whole leftmost label, matching exactly one label. A
certificate without DNS names matches nothing (the subject CN is not used, as browsers do).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

SAN_OID = bytes.fromhex("551d11")  # 2.5.29.17 subjectAltName
DNS_NAME_TAG = 0x82  # GeneralName dNSName, [2] IMPLICIT IA5String
MAX_DEPTH = 12


def pem_to_der(pem: str) -> bytes:
    """The first certificate of a PEM text as DER; ValueError when there is none."""
    begin = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate")
    body = pem[begin + len("-----BEGIN CERTIFICATE-----"):end]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("PEM certificate is not valid base64") from None


def _elements(der: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(tag, content start, content end) of each DER element between start and end."""
    position = start
    while position < end:
        if position + 2 > end:
            raise ValueError("truncated DER element")
        tag = der[position]
        length = der[position + 1]
        position += 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 4 or position + count > end:
                raise ValueError("bad DER length")
            length = int.from_bytes(der[position:position + count], "big")
            position += count
        if position + length > end:
            raise ValueError("DER element runs past its parent")
        yield tag, position, position + length
        position += length


def _san_names(der: bytes, start: int, end: int) -> list[str]:
    names: list[str] = []
    for outer_tag, outer_start, outer_end in _elements(der, start, end):
        if outer_tag != 0x30:
            continue
        for tag, value_start, value_end in _elements(der, outer_start, outer_end):
            if tag == DNS_NAME_TAG:
                names.append(der[value_start:value_end].decode("ascii", "replace"))
    return names


def _find_san(der: bytes, start: int, end: int, depth: int) -> list[str] | None:
    if depth > MAX_DEPTH:
        return None
    children = list(_elements(der, start, end))
    if children and children[0][0] == 0x06 and der[children[0][1]:children[0][2]] == SAN_OID:
        tag, value_start, value_end = children[-1]
        return _san_names(der, value_start, value_end) if tag == 0x04 else []
    for tag, child_start, child_end in children:
        if tag & 0x20:  # constructed: SEQUENCE, SET, [n] EXPLICIT
            found = _find_san(der, child_start, child_end, depth + 1)
            if found is not None:
                return found
    return None


def certificate_dns_names(pem: str) -> list[str]:
    """The subjectAltName DNS names of the first certificate in `pem` ([] when it has none)."""
    der = pem_to_der(pem)
    return _find_san(der, 0, len(der), 0) or []


def name_matches(pattern: str, host: str) -> bool:
    pattern_labels = pattern.lower().rstrip(".").split(".")
    host_labels = host.lower().rstrip(".").split(".")
    if len(pattern_labels) != len(host_labels) or len(pattern_labels) < 2:
        return False
    first, *rest = pattern_labels
    if rest != host_labels[1:]:
        return False
    return first == host_labels[0] or (first == "*" and len(pattern_labels) > 2
                                       and bool(host_labels[0]))


def peer_certificate_names(pem: str, expected_host: str) -> tuple[bool, list[str]]:
    """(whether the certificate covers expected_host, the names it has) — never raises."""
    try:
        names = certificate_dns_names(pem)
    except ValueError:
        return False, []
    return any(name_matches(name, expected_host) for name in names), names

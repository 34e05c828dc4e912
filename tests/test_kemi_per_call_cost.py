"""The per-call economies of kemi/ (issue 20's KEMI speed work) keep every answer the same.

Each economy is checked against what it replaced: the HMAC against hmac.new and hmac.digest,
the end of the headers against the regex it replaced, the digest parameter pattern on escapes,
the caches of pure functions (a refused input is never kept, a kept answer is the same answer),
the skip of the header walk for in-dialog requests that carry no X-WA-* header at all, and the
Meta side of an INVITE kept in one AVP.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re

import pytest

from kemi.decisions import next_hop_address
from kemi.dialog_mac import MAC_BYTES, _b64, _hmac_sha256, _mac
from kemi.digest_credentials import CredentialsProblem, credentials_for, parse_digest
from kemi.media_loss import meta_side, meta_side_value
from kemi.request_uri import RequestUriError, parse_uic_request_uri
from kemi.wa_headers import (
    end_of_headers,
    header_fields,
    may_carry_edge_headers,
    screen_inbound_headers,
)

DOMAINS = frozenset({"sip.example.com"})
RURI = "sip:+15550100001;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls"


def test_one_shot_hmac_gives_the_bytes_hmac_new_gave() -> None:
    secret = bytes(range(32))
    fields = ("k1", "u", "call@x", "tag1", "10.0.0.10:5060:udp")
    reference = hmac.new(secret, "\n".join(fields).encode(), hashlib.sha256).digest()
    assert _mac(secret, *fields) == _b64(reference[:MAC_BYTES])


@pytest.mark.parametrize(("quoted", "value"), [
    (r'"plain"', "plain"), (r'"a\"b"', 'a"b'), (r'"back\\slash"', "back\\slash"),
    (r'"\\\""', '\\"'),
])
def test_quoted_digest_values_unescape_as_before(quoted: str, value: str) -> None:
    credentials = parse_digest(f'Digest username="1", realm={quoted}, nonce="n", uri="u", '
                               'response="r", qop=auth, nc=00000001, cnonce="c"')
    assert credentials.realm == value


def test_an_unterminated_quote_is_still_unparsable() -> None:
    with pytest.raises(CredentialsProblem, match="unparsable"):
        parse_digest('Digest username="1, realm="r", nonce="n"')


def test_request_uri_answers_are_kept_and_refusals_are_not() -> None:
    first = parse_uic_request_uri(RURI, DOMAINS)
    assert parse_uic_request_uri(RURI, DOMAINS) is first
    assert (first.business_number, first.user_params) == (
        "+15550100001", {"tgrp": "wacall", "trunk-context": "byoc.example.com"})
    size = parse_uic_request_uri.cache_info().currsize
    for _ in range(2):
        with pytest.raises(RequestUriError):
            parse_uic_request_uri("sip:+15550100001@other.example.com", DOMAINS)
    assert parse_uic_request_uri.cache_info().currsize == size


def test_next_hop_answers_are_kept_and_refusals_are_not() -> None:
    assert next_hop_address("sip:10.0.0.10:5080;transport=TCP") == ("10.0.0.10", 5080, "tcp")
    size = next_hop_address.cache_info().currsize
    for _ in range(2):
        with pytest.raises(ValueError):
            next_hop_address("tel:+15550100001")
    assert next_hop_address.cache_info().currsize == size


BYE = ("BYE sip:fs@10.0.0.10:5080 SIP/2.0\r\nVia: SIP/2.0/TLS 157.240.1.1\r\n"
       "Route: <sip:edge;r2=on;lr>\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize(("forged", "removed"), [
    ("X-WA-Context: x", ("x-wa-context",)), ("x-wa-auth: digest", ("x-wa-auth",)),
    ("x-WA-business-number: +1", ("x-wa-business-number",)), ("X-Wa-Meta-Wacid: y", ()),
    ("X-Wa-Meta-Cta-Payload: a\x01b", ("x-wa-meta-cta-payload",)),
])
def test_any_x_wa_header_in_any_case_is_screened(forged: str, removed: tuple[str, ...]) -> None:
    message = BYE.replace("Call-ID: c\r\n", f"Call-ID: c\r\n{forged}\r\n")
    assert may_carry_edge_headers(message)
    assert screen_inbound_headers(header_fields(message), 1024, 256).remove == removed


def test_a_message_without_x_wa_text_has_nothing_to_screen() -> None:
    assert not may_carry_edge_headers(BYE)
    assert screen_inbound_headers(header_fields(BYE), 1024, 256).remove == ()


def test_a_header_after_a_bare_lf_is_a_header_as_kamailio_reads_it() -> None:
    """Kamailio ends a header at its LF (a CR before it dropped): a forged X-WA-* header or a
    second credentials header after a bare LF must be seen, screened and counted."""
    message = ("INVITE sip:+15550100001@sip.example.com SIP/2.0\r\nVia: SIP/2.0/TLS a\r\n"
               "User-Agent: x\nX-WA-Auth: digest\r\nSubject: folded\n\tline\r\n"
               "Proxy-Authorization: Digest a=1\nProxy-Authorization: Digest b=2\r\n"
               "\nX-WA-Context: in-the-body\r\n")
    fields = header_fields(message)
    assert fields == [("Via", "SIP/2.0/TLS a"), ("User-Agent", "x"), ("X-WA-Auth", "digest"),
                      ("Subject", "folded line"), ("Proxy-Authorization", "Digest a=1"),
                      ("Proxy-Authorization", "Digest b=2")]
    assert screen_inbound_headers(fields, 1024, 256).remove == ("x-wa-auth",)
    with pytest.raises(CredentialsProblem, match="2 Proxy-Authorization headers"):
        credentials_for(fields, "Proxy-Authorization", "sip.example.com")


def test_crlf_messages_read_as_before() -> None:
    message = ("BYE sip:a@b SIP/2.0\r\nVia: v\r\nX-Folded: one\r\n two\r\nCall-ID: c\r\n"
               "\r\nbody: not a header\r\n")
    assert header_fields(message) == [("Via", "v"), ("X-Folded", "one two"), ("Call-ID", "c")]


def test_end_of_headers_is_where_the_blank_line_regex_matched() -> None:
    """str.find in place of `\\r?\\n\\r?\\n` (which the regex engine tried at every position of
    the message): the same leftmost match, on every small string of the characters that
    matter and on messages with CRLF, bare LF and mixed line ends."""
    blank_line = re.compile(r"\r?\n\r?\n")
    for length in range(9):
        for chars in itertools.product("a\r\n", repeat=length):
            text = "".join(chars)
            match = blank_line.search(text)
            assert end_of_headers(text) == (match.start() if match else len(text)), repr(text)
    for message in (BYE, BYE.replace("\r\n", "\n"), "INVITE x SIP/2.0\r\nA: 1\n\r\nbody\r\n\r\n",
                    "no blank line\r\nat all\r\n"):
        match = blank_line.search(message)
        assert end_of_headers(message) == (match.start() if match else len(message))


def test_builtin_hmac_sha256_is_hmac_digest() -> None:
    """HMAC-SHA256 on Python's own SHA-256 (no OpenSSL inside Kamailio) gives hmac.digest's
    bytes for keys shorter than, equal to and longer than the block, and any message."""
    for key_length in (0, 1, 32, 63, 64, 65, 200):
        for message in (b"", b"x", os.urandom(55), os.urandom(64), os.urandom(300)):
            key = os.urandom(key_length)
            assert _hmac_sha256(key, message) == hmac.digest(key, message, "sha256")


def test_meta_side_travels_in_one_avp_and_back() -> None:
    """The four texts the 200's reply route needs of Meta's INVITE, in one AVP: back as they
    went, whatever they hold; anything else reads as missing (the record is then refused)."""
    texts = ("sip:+1@[2a03::1]:5061;transport=tls", '<sip:a;lr>, <sip:b|"x\\n";lr>',
             "sip:157.240.1.1:40000;transport=tls", "tls:10.0.0.1:5061")
    assert meta_side(meta_side_value(*texts)) == texts
    for broken in (None, 1, "", "not json", "[1, 2, 3, 4]", '["a", "b"]'):
        assert meta_side(broken) == ("", "", "", "")


def _fields_line_by_line(message: str) -> list[tuple[str, str]]:
    """header_fields as it read every message before its fast path for unfolded headers."""
    match = re.search(r"\r?\n\r?\n", message)
    fields: list[tuple[str, str]] = []
    for line in (message[:match.start()] if match else message).split("\n")[1:]:
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


def test_header_fields_reads_every_message_as_line_by_line() -> None:
    """The unfolded-headers fast path gives the fields the line-by-line loop gives."""
    for length in range(8):
        for chars in itertools.product("a:\r\n \t", repeat=length):
            text = "R\n" + "".join(chars)
            assert header_fields(text) == _fields_line_by_line(text), repr(text)
    assert header_fields(BYE) == _fields_line_by_line(BYE)

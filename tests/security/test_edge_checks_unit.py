"""The pure pieces behind the security checks: credentials parsing, the digest uri rule, and the
drop summary's arithmetic (the real-Kamailio tests beside this file prove the behaviour)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kemi.digest_credentials import (
    CredentialsProblem,
    credentials_for,
    parse_digest,
    same_resource,
)
from kemi.drop_summary import Drop, DropSummary
from lab.edge import EXAMPLE_CONFIG
from provisioning.render import RenderOptions, render_kamailio
from siteconfig.model import load_config

RURI = "sip:+15550100001;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls"
GOOD = ('Digest username="15550100001", realm="sip.example.com", nonce="abc", '
        f'uri="{RURI}", response="0123", algorithm=MD5, cnonce="c, with comma", qop=auth, '
        'nc=00000001, opaque="o"')


def test_good_credentials_parse() -> None:
    credentials = parse_digest(GOOD)
    assert (credentials.username, credentials.realm, credentials.uri) == (
        "15550100001", "sip.example.com", RURI)


@pytest.mark.parametrize(("value", "reason"), [
    ("Digest", "without username"),
    ("Basic MTU1NTA=", "Basic credentials, Digest expected"),
    ("", "empty credentials"),
    ("garbage", "garbage credentials"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="x"', "without qop=auth"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-int, '
     'nc=00000001, cnonce="c"', "qop=auth-int is not offered"),
    ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth',
     "without a valid nc and cnonce"),
    ('Digest username="a", username="b", realm="r"', "username repeated"),
    ('Digest username="a" realm="r"', "unparsable"),
])
def test_unusable_credentials_say_why(value: str, reason: str) -> None:
    with pytest.raises(CredentialsProblem, match=re.escape(reason)):
        parse_digest(value)


def test_one_credentials_header_for_our_realm() -> None:
    assert credentials_for([("Via", "x")], "Proxy-Authorization", "sip.example.com") is None
    assert credentials_for([("Proxy-Authorization", GOOD.replace("sip.example.com", "other", 1))],
                           "Proxy-Authorization", "sip.example.com") is None
    assert credentials_for([("proxy-authorization", GOOD)], "Proxy-Authorization",
                           "SIP.example.com") is not None
    assert credentials_for([("Proxy-Authorization", GOOD)], "Authorization",
                           "sip.example.com") is None
    with pytest.raises(CredentialsProblem, match="2 Proxy-Authorization headers"):
        credentials_for([("Proxy-Authorization", GOOD)] * 2, "Proxy-Authorization",
                        "sip.example.com")


@pytest.mark.parametrize(("digest_uri", "same"), [
    (RURI, True),
    ("sip:+15550100001@sip.example.com", True),  # Meta's To URI form, without parameters
    ("SIP:+15550100001@SIP.EXAMPLE.COM:5061;transport=TLS", True),
    ("sip:+15550100002@sip.example.com;transport=tls", False),  # another number
    ("sip:+15550100001@evil.example.com;transport=tls", False),
    ("sips:+15550100001@sip.example.com", False),
    ("sip:sip.example.com", False),
    ("sip:127.0.0.1:5061", False),
    ("", False),
])
def test_digest_uri_must_name_the_request_uris_resource(digest_uri: str, same: bool) -> None:
    assert same_resource(digest_uri, RURI) is same


def test_drop_summary_logs_the_first_then_one_line_per_interval() -> None:
    now = [100.0]
    summary = DropSummary(interval=10, clock=lambda: now[0])
    first = summary.record(Drop.PIKE, "192.0.2.1")
    assert first is not None and "192.0.2.1" in first and "wa_pike_blocked" in first
    lines = []
    for index in range(1000):
        now[0] += 0.015  # 1000 drops in 15 s from 8 addresses
        lines.append(summary.record(Drop.PIKE, f"192.0.2.{index % 8}"))
    written = [line for line in lines if line is not None]
    assert len(written) == 1
    assert written[0].startswith("request flood blocked by pike: 667 in the last 10 s from ")
    assert "and 249 more requests from other sources" in written[0]
    assert summary.record(Drop.MALFORMED, "192.0.2.9") is not None  # kinds are separate


def test_every_drop_has_its_statistic_declared(tmp_path: Path) -> None:
    """kamailio.cfg declares each statistic the edge updates (an undeclared one is an error
    on every update in Kamailio's log)."""
    out = render_kamailio(load_config(EXAMPLE_CONFIG), tmp_path / "out", RenderOptions())
    declared = set(re.findall(r'modparam\("statistics", "variable", "([a-z_]+)"\)',
                              (out / "kamailio.cfg").read_text()))
    assert declared == {drop.statistic for drop in Drop}

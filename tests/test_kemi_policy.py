"""The edge's decisions that need no Kamailio: request URI, headers, methods, auth, routing."""

from __future__ import annotations

import ipaddress
import json

import pytest

from kemi.decisions import (
    ALLOW,
    AuthAction,
    Destination,
    auth_action,
    choose_destination,
    in_dialog_target_allowed,
    out_of_dialog_method,
    source_allowed,
)
from kemi.request_uri import RequestUriError, parse_uic_request_uri, split_sip_uri
from kemi.settings import EdgeSettings, IPNetwork, RouteSettings, settings_from_dict
from kemi.wa_headers import edge_headers, header_fields, screen_inbound_headers
from lab.edge import EXAMPLE_CONFIG
from provisioning.render import DS_ALGORITHMS, edge_settings
from siteconfig.model import SiteConfig, load_config

DOMAINS = frozenset({"sip.example.com", "sip2.example.com"})
META_RURI = "sip:+1234567890;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls"


# ---- request URI ---------------------------------------------------------------------------


def test_meta_request_uri_is_taken_apart() -> None:
    target = parse_uic_request_uri(META_RURI, DOMAINS)
    assert target.business_number == "+1234567890"
    assert target.digits == "1234567890"
    assert target.host == "sip.example.com"
    assert target.user_params == {"tgrp": "wacall", "trunk-context": "byoc.example.com"}


def test_percent_escapes_are_decoded() -> None:
    target = parse_uic_request_uri(
        "sip:%2B1234567890;tgrp=wa%63all;trunk-context=byoc%2Eexample.com@sip.example.com", DOMAINS)
    assert target.business_number == "+1234567890"
    assert target.user_params == {"tgrp": "wacall", "trunk-context": "byoc.example.com"}


def test_param_keys_are_lowercased_values_kept() -> None:
    target = parse_uic_request_uri("sip:+1234567890;TGRP=WaCall@sip.example.com", DOMAINS)
    assert target.user_params == {"tgrp": "WaCall"}


@pytest.mark.parametrize("uri", [
    "sip:+1234567890@SIP.Example.COM",
    "sip:+1234567890@sip.example.com:5061",
    "sip:+1234567890@SIP.EXAMPLE.COM:5061;transport=tls",
    "sips:+1234567890@sip.example.com",
    "SIP:+1234567890@sip.example.com",
    "sip:+1234567890@sip.example.com?Subject=x",
])
def test_host_case_port_and_scheme_variants_are_accepted(uri: str) -> None:
    target = parse_uic_request_uri(uri, DOMAINS)
    assert target.host == "sip.example.com"
    assert target.business_number == "+1234567890"


def test_second_accepted_domain() -> None:
    assert parse_uic_request_uri("sip:+1234567890@sip2.example.com", DOMAINS).host == "sip2.example.com"


def test_number_without_plus_is_normalised() -> None:
    assert parse_uic_request_uri("sip:1234567890@sip.example.com", DOMAINS).business_number == "+1234567890"


def refused(uri: str) -> RequestUriError:
    with pytest.raises(RequestUriError) as caught:
        parse_uic_request_uri(uri, DOMAINS)
    return caught.value


@pytest.mark.parametrize("uri", [
    "sip:+1234567890@192.0.2.10",
    "sip:+1234567890@192.0.2.10:5061",
    "sip:+1234567890@[2001:db8::1]",
    "sip:+1234567890@[2001:db8::1]:5061;transport=tls",
    "sip:+1234567890@2001:db8::1",
])
def test_ip_literal_host_is_404(uri: str) -> None:
    error = refused(uri)
    assert error.status == 404
    assert "IP literal" in error.reason


def test_ipv6_host_is_unbracketed_by_split() -> None:
    assert split_sip_uri("sip:+1234567890@[2001:DB8::1]:5061") == ("sip", "+1234567890", "2001:db8::1")


@pytest.mark.parametrize("uri", ["sip:+1234567890@other.example.com",
                                 "sip:+1234567890@example.com",
                                 "sip:+1234567890@sip.example.com.evil.net"])
def test_other_domain_is_404(uri: str) -> None:
    error = refused(uri)
    assert error.status == 404
    assert "domain" in error.reason


@pytest.mark.parametrize("uri", ["sip:sip.example.com", "sip:@sip.example.com",
                                 "sip:sip.example.com;transport=tls"])
def test_no_user_is_404(uri: str) -> None:
    error = refused(uri)
    assert error.status == 404
    assert "no business number" in error.reason


@pytest.mark.parametrize("user", ["+12345abc90", "+123456", "+1234567890123456", "+0123456789",
                                  "alice", "+", "+1234%20567890", "++1234567890"])
def test_user_that_is_not_a_number_is_404(user: str) -> None:
    error = refused(f"sip:{user}@sip.example.com")
    assert error.status == 404
    assert "not a business number" in error.reason


@pytest.mark.parametrize("uri", ["tel:+1234567890", "mailto:a@sip.example.com", "+1234567890",
                                 "http://sip.example.com/"])
def test_other_scheme_is_416(uri: str) -> None:
    error = refused(uri)
    assert error.status == 416
    assert error.reason == "Unsupported URI Scheme"


def test_empty_host_is_400() -> None:
    error = refused("sip:+1234567890@")
    assert error.status == 400


# ---- header fields -------------------------------------------------------------------------

INVITE = (
    "INVITE sip:+1234567890@sip.example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 157.240.1.1:5061;branch=z9hG4bK1\r\n"
    "Subject: first part\r\n"
    "  second part\r\n"
    "\tthird part\r\n"
    "x-wa-meta-wacid : abc\r\n"
    "Via: SIP/2.0/TLS 10.0.0.1\r\n"
    "Content-Length: 4\r\n"
    "\r\n"
    "X-Not: body\r\n"
)


def test_header_fields_unfolds_and_keeps_order() -> None:
    assert header_fields(INVITE) == [
        ("Via", "SIP/2.0/TLS 157.240.1.1:5061;branch=z9hG4bK1"),
        ("Subject", "first part second part third part"),
        ("x-wa-meta-wacid", "abc"),
        ("Via", "SIP/2.0/TLS 10.0.0.1"),
        ("Content-Length", "4"),
    ]


def test_header_fields_without_body() -> None:
    assert header_fields("OPTIONS sip:x SIP/2.0\r\nA: 1\r\nB:2\r\n") == [("A", "1"), ("B", "2")]


def test_header_value_with_colons_is_kept_whole() -> None:
    assert header_fields("X sip:x SIP/2.0\r\nContact: <sip:a@b:5061>\r\n\r\n") == [
        ("Contact", "<sip:a@b:5061>")]


# ---- inbound screening ---------------------------------------------------------------------

PAYLOAD_MAX = 32
META_MAX = 64


def screen(fields: list[tuple[str, str]]) -> tuple[str, ...]:
    result = screen_inbound_headers(fields, PAYLOAD_MAX, META_MAX)
    assert len(result.remove) == len(result.reasons)
    return result.remove


def test_spoofed_edge_header_is_removed() -> None:
    result = screen_inbound_headers([("X-WA-Business-Number", "+19999999999"), ("Via", "x")],
                                    PAYLOAD_MAX, META_MAX)
    assert result.remove == ("x-wa-business-number",)
    assert "edge-owned" in result.reasons[0]


@pytest.mark.parametrize("name", ["X-WA-Auth", "x-wa-context", "X-Wa-Tgrp", "X-WA-Param-foo"])
def test_every_edge_owned_name_is_removed(name: str) -> None:
    assert screen([(name, "x")]) == (name.lower(),)


def test_meta_headers_within_limits_are_kept() -> None:
    fields = [("x-wa-meta-wacid", "wacid.HBgLMTU1"), ("X-WA-Meta-Unknown-Future", "v"),
              ("x-wa-meta-cta-payload", "p" * PAYLOAD_MAX), ("x-wa-meta-other", "o" * META_MAX),
              ("x-wa-meta-tabbed", "a\tb"), ("X-FB-External-Domain", "evil.example"),
              ("Subject", "\x01 not ours")]
    assert screen(fields) == ()


@pytest.mark.parametrize("name", ["x-wa-meta-cta-payload", "X-WA-Meta-Deeplink-Payload"])
def test_oversize_payload_is_removed(name: str) -> None:
    result = screen_inbound_headers([(name, "p" * (PAYLOAD_MAX + 1))], PAYLOAD_MAX, META_MAX)
    assert result.remove == (name.lower(),)
    assert f"over the {PAYLOAD_MAX}-byte cap" in result.reasons[0]


def test_payload_cap_counts_bytes_not_characters() -> None:
    assert screen([("x-wa-meta-cta-payload", "é" * (PAYLOAD_MAX // 2 + 1))]) == ("x-wa-meta-cta-payload",)
    assert screen([("x-wa-meta-cta-payload", "é" * (PAYLOAD_MAX // 2))]) == ()


def test_other_meta_header_uses_the_meta_cap() -> None:
    assert screen([("x-wa-meta-other", "o" * (META_MAX + 1))]) == ("x-wa-meta-other",)
    assert screen([("x-wa-meta-other", "o" * (PAYLOAD_MAX + 1))]) == ()


@pytest.mark.parametrize("value", ["a\x00b", "a\x1bb", "line\nbreak", "a\rb", "del\x7f"])
def test_control_characters_are_removed(value: str) -> None:
    result = screen_inbound_headers([("x-wa-meta-deeplink-payload", value)], PAYLOAD_MAX, META_MAX)
    assert result.remove == ("x-wa-meta-deeplink-payload",)
    assert "control characters" in result.reasons[0]


def test_each_name_is_listed_once_case_insensitively() -> None:
    fields = [("X-WA-Business-Number", "1"), ("x-wa-business-number", "2"),
              ("x-wa-meta-cta-payload", "ok"), ("X-WA-META-CTA-PAYLOAD", "p" * 100),
              ("x-wa-meta-cta-payload", "p" * 100)]
    assert screen(fields) == ("x-wa-business-number", "x-wa-meta-cta-payload")


def test_non_wa_headers_are_ignored() -> None:
    assert screen([("X-Other", "\x00" * 5000), ("Via", "v" * 5000)]) == ()


# ---- headers the edge adds -----------------------------------------------------------------


def test_edge_headers_name_tgrp_and_trunk_context() -> None:
    lines = edge_headers("+1234567890", {"tgrp": "wacall", "trunk-context": "byoc.example.com"},
                         "whatsapp", "digest")
    assert lines == ["X-WA-Business-Number: +1234567890\r\n", "X-WA-Context: whatsapp\r\n",
                     "X-WA-Auth: digest\r\n", "X-WA-Tgrp: wacall\r\n",
                     "X-WA-Trunk-Context: byoc.example.com\r\n"]


def test_other_params_become_x_wa_param_with_safe_names() -> None:
    lines = edge_headers("+1234567890", {"campaign": "c1", "a_b.c:d": "v", "x\r\nInjected: 1": "w"},
                         "ctx", "source")
    assert lines[3:] == ["X-WA-Param-campaign: c1\r\n", "X-WA-Param-a-b-c-d: v\r\n",
                         "X-WA-Param-x--Injected--1: w\r\n"]


def test_unsafe_param_value_is_emptied() -> None:
    lines = edge_headers("+1234567890", {"tgrp": "a\r\nX-WA-Auth: digest", "k": "\x00"}, "ctx", "none")
    assert lines[3:] == ["X-WA-Tgrp: \r\n", "X-WA-Param-k: \r\n"]
    assert all(line.count("\r\n") == 1 and line.endswith("\r\n") for line in lines)


# ---- out-of-dialog methods -----------------------------------------------------------------


def test_invite_is_a_call() -> None:
    assert out_of_dialog_method("INVITE") is None


def test_options_answers_200_with_allow() -> None:
    reply = out_of_dialog_method("OPTIONS")
    assert reply is not None
    assert (reply.status, reply.reason) == (200, "OK")
    assert f"Allow: {ALLOW}\r\n" in reply.headers
    assert "INVITE" in ALLOW and "REGISTER" not in ALLOW


def test_register_is_forbidden() -> None:
    reply = out_of_dialog_method("REGISTER")
    assert reply is not None
    assert reply.status == 403


@pytest.mark.parametrize("method", ["BYE", "PRACK", "UPDATE", "INFO", "NOTIFY", "REFER"])
def test_dialog_only_methods_get_481(method: str) -> None:
    reply = out_of_dialog_method(method)
    assert reply is not None
    assert reply.status == 481


@pytest.mark.parametrize("method", ["MESSAGE", "SUBSCRIBE", "PUBLISH", "invite", "FOO"])
def test_other_methods_get_405_with_allow(method: str) -> None:
    reply = out_of_dialog_method(method)
    assert reply is not None
    assert reply.status == 405
    assert reply.headers == f"Allow: {ALLOW}\r\n"


# ---- digest results ------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "action"), [
    (1, AuthAction.ACCEPT),
    (-1, AuthAction.REFUSE),
    (-2, AuthAction.CHALLENGE_AFTER_FAILURE),
    (-4, AuthAction.CHALLENGE_STALE),
    (-6, AuthAction.CHALLENGE_STALE),
    (-5, AuthAction.CHALLENGE),
    (-3, AuthAction.CHALLENGE),
    (-8, AuthAction.CHALLENGE),
    (0, AuthAction.CHALLENGE),
    (2, AuthAction.CHALLENGE),
])
def test_auth_action(code: int, action: AuthAction) -> None:
    assert auth_action(code) is action


def test_only_1_accepts() -> None:
    assert [code for code in range(-20, 21) if auth_action(code) is AuthAction.ACCEPT] == [1]


# ---- sources and in-dialog targets ---------------------------------------------------------


def networks(*prefixes: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in prefixes)


META = networks("157.240.0.0/16", "2a03:2880::/32")


@pytest.mark.parametrize("address", ["1.2.3.4", "::1", "garbage", ""])
def test_no_allow_list_allows_anything(address: str) -> None:
    assert source_allowed(address, ()) is True


@pytest.mark.parametrize(("address", "allowed"), [
    ("157.240.1.2", True), ("157.240.255.255", True), ("157.241.0.1", False), ("10.0.0.1", False),
    ("2a03:2880:f0ff::1", True), ("[2a03:2880::5]", True), ("2a03:2881::1", False),
    ("garbage", False), ("", False), ("157.240.1.2:5061", False),
])
def test_source_allowed(address: str, allowed: bool) -> None:
    assert source_allowed(address, META) is allowed


NODES = frozenset({("10.0.0.10", 5080, "udp"), ("fs1.internal", 5060, "udp"),
                   ("2001:db8::10", 5080, "udp"), ("10.0.0.12", 5080, "tcp")})


@pytest.mark.parametrize(("uri", "allowed"), [
    ("sip:fs@10.0.0.10:5080", True),
    ("sip:10.0.0.10:5080;lr", True),
    ("sip:mod_sofia@FS1.Internal", True),
    ("sip:fs1.internal:5060;transport=UDP", True),
    ("sip:[2001:db8::10]:5080", True),
    ("sip:10.0.0.12:5080;transport=tcp", True),
    ("sip:10.0.0.10:5081", False),  # the FreeSWITCH host, another port
    ("sip:10.0.0.10", False),  # 5060 is not the node's port
    ("sip:10.0.0.10:5080;transport=tcp", False),
    ("sip:10.0.0.12:5080", False),  # udp, the node listens on tcp
    ("sip:10.0.0.99:5080", False),
    ("sip:evil.example.com:5080", False),
    ("sips:10.0.0.10:5080", False),
    ("tel:+15550100001", False),
    ("sip:", False),
    ("", False),
])
def test_in_dialog_target_allowed(uri: str, allowed: bool) -> None:
    assert in_dialog_target_allowed(uri, NODES, ()) is allowed


def test_in_dialog_target_in_trusted_sources_is_allowed_on_udp() -> None:
    trusted = (ipaddress.ip_network("192.0.2.0/24"),)
    assert in_dialog_target_allowed("sip:fs@192.0.2.7:5080", NODES, trusted)
    assert not in_dialog_target_allowed("sip:fs@192.0.2.7:5080;transport=tls", NODES, trusted)
    assert not in_dialog_target_allowed("sip:fs@198.51.100.7:5080", NODES, trusted)


# ---- routing -------------------------------------------------------------------------------


def settings_with(routes: list[RouteSettings], default_set: int = 1) -> EdgeSettings:
    return EdgeSettings(
        sip_domain="sip.example.com", accepted_domains=frozenset({"sip.example.com"}),
        auth_mode="challenge", challenge_code=407, failure_limit=10, numbers={},
        routes=tuple(routes), default_set=default_set, default_context="whatsapp",
        set_algorithms={1: 8, 2: 4, 3: 0}, allowed_sources=(), pike=True,
        payload_max_length=512, meta_header_max_length=1024, freeswitch_nodes=frozenset())


ROUTES = [
    RouteSettings({"business_number": "+15550100002"}, 3, "vip"),
    RouteSettings({"tgrp": "wacall", "trunk-context": "b.example.com"}, 2, "both"),
    RouteSettings({"tgrp": "wacall"}, 1, "tgrp-only"),
    RouteSettings({"campaign": "x"}, None, None),
]


@pytest.mark.parametrize(("number", "params", "expected"), [
    ("+15550100001", {"tgrp": "wacall", "trunk-context": "b.example.com"}, Destination(2, 4, "both")),
    ("+15550100001", {"tgrp": "wacall", "trunk-context": "other"}, Destination(1, 8, "tgrp-only")),
    ("+15550100002", {"tgrp": "wacall", "trunk-context": "b.example.com"}, Destination(3, 0, "vip")),
    ("+15550100001", {"campaign": "x"}, Destination(1, 8, "whatsapp")),
    ("+15550100001", {}, Destination(1, 8, "whatsapp")),
    ("+15550100001", {"tgrp": "WACALL"}, Destination(1, 8, "whatsapp")),
])
def test_choose_destination(number: str, params: dict[str, str], expected: Destination) -> None:
    assert choose_destination(settings_with(ROUTES), number, params) == expected


def test_route_without_set_uses_the_default_set() -> None:
    settings = settings_with([RouteSettings({"campaign": "x"}, None, "promo")], default_set=2)
    assert choose_destination(settings, "+15550100001", {"campaign": "x"}) == Destination(2, 4, "promo")


def test_no_routes_uses_defaults() -> None:
    assert choose_destination(settings_with([], default_set=3), "+1555", {"tgrp": "x"}) == \
        Destination(3, 0, "whatsapp")


def test_business_number_param_cannot_override_the_real_number() -> None:
    settings = settings_with([RouteSettings({"business_number": "+15550100002"}, 3, "vip")])
    chosen = choose_destination(settings, "+15550100001", {"business_number": "+15550100002"})
    assert chosen == Destination(1, 8, "whatsapp")


def test_route_match_keys_are_case_insensitive() -> None:
    settings = settings_with([RouteSettings({"TGRP": "wacall"}, 2, "upper")])
    assert choose_destination(settings, "+1555", {"tgrp": "wacall"}) == Destination(2, 4, "upper")


# ---- settings from the renderer ------------------------------------------------------------


@pytest.fixture
def example() -> SiteConfig:
    return load_config(EXAMPLE_CONFIG)


def test_settings_round_trip_from_edge_settings(example: SiteConfig) -> None:
    rich = example.model_copy(update={
        "site": example.site.model_copy(update={"accepted_domains": ["SIP2.example.com"]}),
        "security": example.security.model_copy(update={"allowed_sources": ["157.240.0.0/16"]}),
    })
    raw = json.loads(json.dumps(edge_settings(rich)))
    settings = settings_from_dict(raw)
    assert settings.sip_domain == rich.site.sip_domain
    assert settings.accepted_domains == frozenset({rich.site.sip_domain, "sip2.example.com"})
    assert settings.auth_mode == rich.auth.mode
    assert settings.challenge_code == rich.auth.challenge_code
    assert settings.failure_limit == rich.auth.failure_limit
    assert {d: n.business_number for d, n in settings.numbers.items()} == {
        n.digits: n.business_number for n in rich.numbers}
    assert [n.phone_number_id for n in settings.numbers.values()] == [
        n.phone_number_id for n in rich.numbers]
    assert settings.routes == tuple(RouteSettings(r.match, r.freeswitch_set, r.context)
                                    for r in rich.routes)
    assert settings.default_set == rich.freeswitch.default_set
    assert settings.default_context == rich.freeswitch.default_context
    assert settings.set_algorithms == {s.id: DS_ALGORITHMS[s.algorithm] for s in rich.freeswitch.sets}
    assert settings.allowed_sources == networks("157.240.0.0/16")
    assert settings.pike is (rich.security.pike_requests_per_second > 0)
    assert settings.payload_max_length == rich.headers.payload_max_length
    assert settings.meta_header_max_length == rich.headers.meta_header_max_length
    assert settings.freeswitch_nodes == frozenset({("10.0.0.10", 5080, "udp"),
                                                   ("10.0.0.11", 5080, "udp")})
    assert settings.meta_host_name == rich.tls.meta_host_name


def test_settings_from_the_unserialised_dict_match(example: SiteConfig) -> None:
    direct = settings_from_dict(edge_settings(example))
    assert direct == settings_from_dict(json.loads(json.dumps(edge_settings(example))))


def test_example_call_routes_through_round_tripped_settings(example: SiteConfig) -> None:
    settings = settings_from_dict(json.loads(json.dumps(edge_settings(example))))
    target = parse_uic_request_uri(
        "sip:+15550100001;tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls",
        settings.accepted_domains)
    assert target.digits in settings.numbers
    chosen = choose_destination(settings, target.business_number, target.user_params)
    assert chosen == Destination(1, DS_ALGORITHMS["priority"], "whatsapp")


def test_stale_settings_file_is_a_key_error(example: SiteConfig) -> None:
    raw = edge_settings(example)
    del raw["routes"]
    with pytest.raises(KeyError):
        settings_from_dict(raw)

"""The edge's business-initiated-call decisions that need no Kamailio: numbers, request URI,
Meta's From rule, diagnoses, the peer certificate's names, settings and config."""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from esl.meta_errors import META_ERRORS_BY_KEY
from kemi.bic import (
    BicRefusal,
    bic_caller,
    challenge_algorithm,
    meta_accepts_from_domain,
    normalize_number,
    parse_bic_request_uri,
)
from kemi.decisions import InDialogAction, in_dialog_action, internal_source_trusted
from kemi.diagnoses import EDGE_DIAGNOSES, META_ANSWERS, Diagnosis, diagnose_meta_answer
from kemi.peer_certificate import certificate_dns_names, name_matches, peer_certificate_names
from kemi.settings import BicSettings, EdgeSettings, settings_from_dict
from lab.certs import make_test_ca
from lab.edge import EXAMPLE_CONFIG
from lab.meta_standin import META_ANSWERS as STANDIN_ANSWERS
from lab.meta_standin import MetaAnswer
from lab.meta_standin.digest_rules import (
    CHALLENGE_ALGORITHMS,
    Challenge,
    answered_algorithm,
    digest_uri_matches_to,
    opaque_for,
    parse_digest,
    without_params,
)
from provisioning.render import edge_settings
from siteconfig.model import ConfigError, load_config, parse_config

EDGE_PY = Path(__file__).resolve().parent.parent / "kemi" / "edge.py"
OWN = frozenset({"sip.example.com"})


@pytest.fixture
def settings() -> EdgeSettings:
    return settings_from_dict(edge_settings(load_config(EXAMPLE_CONFIG)))


# ---- numbers as agents type them ------------------------------------------------------------


@pytest.mark.parametrize("typed", [
    "+15550123456", "15550123456", "0015550123456", "00 1 555 012 3456", "+1 (555) 012-3456",
    "1.555.012.3456", "%2B1%20555%20012%203456", "00%201%20(555)%20012-3456", "+1/555/0123456",
])
def test_agent_typed_numbers_become_e164(typed: str) -> None:
    assert normalize_number(typed) == "+15550123456"


@pytest.mark.parametrize(("typed", "why"), [
    ("0301234567", "national number"), ("123", "not a phone number"),
    ("+1555012345678901", "not a phone number"), ("", "not a phone number"),
    ("+1555abc4567", "not a phone number"), ("+0123456789", "national number"),
])
def test_what_is_not_an_international_number_is_refused(typed: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalize_number(typed)


# ---- request URI -----------------------------------------------------------------------------


def bic_refusal(uri: str, local: bool = False) -> BicRefusal:
    with pytest.raises(BicRefusal) as caught:
        parse_bic_request_uri(uri, local, "wa.meta.vc", OWN)
    return caught.value


@pytest.mark.parametrize(("uri", "local"), [
    ("sip:+15550123456@10.0.0.5:5060", True),
    ("sip:0015550123456@wa.meta.vc", False),
    ("sip:15550123456@WA.META.VC;transport=tls", False),
    ("sip:+15550123456;phone-context=x@sip.example.com", False),
    ("sip:1-555-012-3456@edge.internal", True),
])
def test_request_uri_becomes_metas_form(uri: str, local: bool) -> None:
    target = parse_bic_request_uri(uri, local, "wa.meta.vc", OWN)
    assert target.request_uri == "sip:+15550123456@wa.meta.vc;transport=tls"
    # To = request URI (= uac's digest uri): Meta's 403 "Proxy auth uri does not match SIP to
    # uri" came to a To without the ;transport=tls that the digest uri carried.
    assert target.to_uri == target.request_uri


def test_the_edges_uris_pass_metas_digest_uri_rule_and_the_failing_trace_does_not() -> None:
    target = parse_bic_request_uri("sip:+15550123456@10.0.0.5", True, "wa.meta.vc", OWN)
    # uac's digest uri is the branch's request URI.
    assert digest_uri_matches_to(target.request_uri, target.to_uri)
    # jambonz/sbc-outbound 186: To without the parameter, digest uri with it -> Meta's 403.
    assert not digest_uri_matches_to("sip:+1234@wa.meta.vc;transport=tls", "sip:+1234@wa.meta.vc")
    # LiveKit PR 686 (accepted): To with the parameter, digest uri without it.
    assert digest_uri_matches_to("sip:+1234@wa.meta.vc", "sip:+1234@wa.meta.vc;transport=tls")
    # Another number's uri, or another host, is no match.
    assert not digest_uri_matches_to("sip:+1235@wa.meta.vc;transport=tls",
                                     "sip:+1234@wa.meta.vc;transport=tls")
    assert not digest_uri_matches_to("sip:+1234@wa.meta.vc;transport=tcp",
                                     "sip:+1234@wa.meta.vc;transport=tls")


def test_stand_in_variant_accepting_only_the_bare_uri_refuses_the_edges_form() -> None:
    uri = "sip:+1234@wa.meta.vc;transport=tls"
    assert not digest_uri_matches_to(uri, uri, ("to-without-params",))
    assert digest_uri_matches_to("sip:+1234@wa.meta.vc", uri, ("to-without-params",))


@pytest.mark.parametrize(("uri", "bare"), [
    ("sip:+1234@wa.meta.vc;transport=tls", "sip:+1234@wa.meta.vc"),
    ("sip:+1234@wa.meta.vc:5061;transport=tls;ob?x=y", "sip:+1234@wa.meta.vc:5061"),
    ("sip:+1234;tgrp=a@wa.meta.vc", "sip:+1234;tgrp=a@wa.meta.vc"),
    ("sip:wa.meta.vc;lr", "sip:wa.meta.vc"),
])
def test_uri_without_params_keeps_the_user_part(uri: str, bare: str) -> None:
    assert without_params(uri) == bare


def test_business_scoped_user_id_passes_unchanged() -> None:
    target = parse_bic_request_uri("sip:US.1234abcd@10.0.0.5", True, "wa.meta.vc", OWN)
    assert target.request_uri == "sip:US.1234abcd@wa.meta.vc;transport=tls"


@pytest.mark.parametrize(("uri", "status", "code"), [
    ("sip:+15550123456@157.240.1.1", 404, "ip_literal"),
    ("sip:+15550123456@[2a03:2880::1]:5061", 404, "ip_literal"),
    ("sips:+15550123456@wa.meta.vc", 416, "sips_uri"),
    ("sip:+15550123456@sip.other.example", 404, "not_meta_host"),
    ("tel:+15550123456", 416, "bad_request_uri"),
    ("sip:@wa.meta.vc", 404, "bad_number"),
    ("sip:0301234567@wa.meta.vc", 484, "bad_number"),
])
def test_what_meta_would_404_is_refused_with_a_reason(uri: str, status: int, code: str) -> None:
    refusal = bic_refusal(uri)
    assert (refusal.status, refusal.code) == (status, code)
    assert refusal.code in EDGE_DIAGNOSES
    assert " - " in refusal.reason or refusal.status == 416


def test_sips_is_refused_even_toward_the_edge_itself() -> None:
    assert bic_refusal("sips:+15550123456@10.0.0.5", local=True).code == "sips_uri"


# ---- Meta's From rule ------------------------------------------------------------------------


@pytest.mark.parametrize(("domain", "passes"), [
    ("bar.foo.com", True), ("foo.com", True), ("FOO.com", True), ("com", True),
    ("oo.com", False), ("baz.bar.foo.com", False), ("other.foo.com", False), ("", False),
    ("10.0.0.5", False), ("bar.foo.co", False),
])
def test_meta_sub_domain_rule(domain: str, passes: bool) -> None:
    """Configured bar.foo.com: the From domain must be it or a domain it is a sub-domain of."""
    assert meta_accepts_from_domain(domain, "bar.foo.com") is passes


def test_from_at_the_edge_address_becomes_the_sip_domain(settings: EdgeSettings) -> None:
    caller = bic_caller("+15550100001", "10.0.0.5", False, settings)
    assert caller.uri == "sip:+15550100001@sip.example.com"
    caller = bic_caller("15550100001", "edge.internal", True, settings)
    assert caller.uri == "sip:+15550100001@sip.example.com"
    assert caller.changes == ("From user 15550100001 -> +15550100001",
                              "From domain edge.internal -> sip.example.com")


def test_parent_domain_in_from_is_kept(settings: EdgeSettings) -> None:
    caller = bic_caller("+15550100001", "Example.com", False, settings)
    assert (caller.uri, caller.changes) == ("sip:+15550100001@example.com", ())


def test_unknown_from_user_and_foreign_domain_are_refused(settings: EdgeSettings) -> None:
    with pytest.raises(BicRefusal) as unknown:
        bic_caller("+15550199999", "sip.example.com", False, settings)
    assert (unknown.value.status, unknown.value.code) == (403, "from_not_configured")
    with pytest.raises(BicRefusal) as foreign:
        bic_caller("+15550100001", "sip.example.org", False, settings)
    assert (foreign.value.status, foreign.value.code) == (403, "sip_server_mismatch")


def test_rewrite_mode_rewrites_instead(settings: EdgeSettings) -> None:
    rewriting = replace(settings, bic=BicSettings(from_mode="rewrite",
                                                  default_number="+15550100001"))
    caller = bic_caller("alice", "sip.example.org", False, rewriting)
    assert caller.uri == "sip:+15550100001@sip.example.com"
    assert len(caller.changes) == 2
    without_default = replace(settings, bic=BicSettings(from_mode="rewrite"))
    with pytest.raises(BicRefusal):
        bic_caller("alice", "sip.example.com", False, without_default)


# ---- Meta's two challenges (the stand-in's rules and the edge's reading of them) -------------

SECRET = b"k" * 32
# The header uac sends (testing-recipes.md), answering the MD5 challenge.
UAC_ANSWER = ('Digest username="15550100001", realm="wa.meta.vc", nonce="{nonce}", '
              'uri="sip:+15550123456@wa.meta.vc;transport=tls", opaque="{opaque}", qop=auth, '
              'nc=00000001, cnonce="ab12", response="{response}", algorithm={algorithm}')


def answer_fields(nonce: str, opaque: str, algorithm: str = "MD5") -> dict[str, str]:
    fields = parse_digest(UAC_ANSWER.format(nonce=nonce, opaque=opaque, algorithm=algorithm,
                                            response="0" * 32))
    assert fields is not None
    return fields


def test_challenges_are_laid_out_as_in_metas_trace() -> None:
    sha = Challenge("SHA-256", "47cd", opaque_for(SECRET, "47cd", "SHA-256"))
    assert sha.header("wa.meta.vc") == (
        f'Proxy-Authenticate: Digest realm="wa.meta.vc",nonce="47cd",opaque="{sha.opaque}",'
        'algorithm=SHA-256,qop="auth"\r\n')
    assert CHALLENGE_ALGORITHMS == ("SHA-256", "MD5")
    assert challenge_algorithm(sha.header("wa.meta.vc")) == "SHA-256"
    assert challenge_algorithm('Digest realm="wa.meta.vc", algorithm="md5", qop="auth"') == "MD5"
    assert challenge_algorithm('Digest realm="x", nonce="algorithm=SHA-256"') == "MD5"


def test_an_answer_must_use_one_challenge_with_its_own_nonce_opaque_and_algorithm() -> None:
    md5 = ("md5nonce", opaque_for(SECRET, "md5nonce", "MD5"))
    sha = ("shanonce", opaque_for(SECRET, "shanonce", "SHA-256"))
    assert answered_algorithm(answer_fields(*md5), SECRET) == ("MD5", "ok")
    assert answered_algorithm(answer_fields(*sha, algorithm="SHA-256"), SECRET) == ("SHA-256", "ok")
    refused = [
        answer_fields(md5[0], sha[1]),  # MD5 nonce, the SHA-256 challenge's opaque
        answer_fields(sha[0], md5[1]),  # SHA-256 nonce, the MD5 challenge's opaque
        answer_fields(*sha),  # the SHA-256 challenge answered as MD5
        answer_fields(*md5, algorithm="SHA-256"),  # and the reverse
        answer_fields(md5[0], opaque_for(b"other secret" * 3, md5[0], "MD5")),
        answer_fields(*md5, algorithm="SHA-512"),
    ]
    for fields in refused:
        assert answered_algorithm(fields, SECRET)[0] is None, fields
    without_opaque = {k: v for k, v in answer_fields(*md5).items() if k != "opaque"}
    assert answered_algorithm(without_opaque, SECRET) == (None, "no opaque")
    without_qop = {k: v for k, v in answer_fields(*md5).items() if k != "qop"}
    assert answered_algorithm(without_qop, SECRET)[0] is None


def test_answer_parsing_takes_uacs_header_and_refuses_what_is_not_a_digest() -> None:
    fields = answer_fields("n", "o")
    assert fields["uri"] == "sip:+15550123456@wa.meta.vc;transport=tls"
    assert (fields["qop"], fields["nc"], fields["algorithm"]) == ("auth", "00000001", "MD5")
    for value in ("Digest", "Basic dXNlcjpwYXNz", 'Digest nonce="a", nonce="b"', 'Digest x="'):
        assert parse_digest(value) is None, value


# ---- diagnoses --------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", STANDIN_ANSWERS, ids=[a.flow for a in STANDIN_ANSWERS])
def test_every_documented_meta_answer_has_its_diagnosis(answer: MetaAnswer) -> None:
    assert diagnose_meta_answer(answer.status, answer.reason).code == answer.diagnosis


def test_meta_codes_match_the_esl_controllers_names() -> None:
    """kemi/ copies esl/meta_errors.py's keys (it cannot import it inside Kamailio)."""
    for answer in META_ANSWERS:
        assert answer.diagnosis.code in META_ERRORS_BY_KEY
        assert META_ERRORS_BY_KEY[answer.diagnosis.code].status == answer.status


def test_metas_digest_uri_refusal_is_not_a_sip_server_mismatch() -> None:
    """Both 403s say "does not match": the digest one must get its own code and hint."""
    diagnosis = diagnose_meta_answer(403, 'Proxy auth uri does not match SIP "to" uri')
    assert diagnosis.code == "meta_auth_uri_mismatch"
    assert "To URI" in diagnosis.cause and "digest uri" in diagnosis.fix
    assert diagnose_meta_answer(403, "SIP server x.example from INVITE does not match any SIP "
                                "server configured for phone number id [1]").code \
        == "sip_server_mismatch"


def test_unknown_answer_keeps_its_text() -> None:
    diagnosis = diagnose_meta_answer(403, "Something New")
    assert diagnosis.code == "meta_other"
    assert diagnosis.cause == "Meta answered 403 Something New"


def test_header_quotes_are_neutralized() -> None:
    value = Diagnosis("x", 'a "quoted"\r\nInjected: 1', "fix\\it").header_value()
    assert value == "x; cause=\"a 'quoted'''Injected: 1\"; fix=\"fix'it\""
    assert "\r" not in Diagnosis("x", "a\r\nb", "c").header_line()[:-2]


def test_every_edge_refusal_code_used_in_the_adapter_exists() -> None:
    calls = re.findall(r'self\._refuse(?:_stateful|_in_failure)?\((.*?)\)\n', EDGE_PY.read_text(),
                       re.S)
    used = {re.findall(r'"([a-z_]+)"', call)[-1] for call in calls if re.search(r'"[a-z_]+"', call)}
    assert used and used <= set(EDGE_DIAGNOSES), used - set(EDGE_DIAGNOSES)


def test_every_route_name_passed_to_tm_exists() -> None:
    """tm logs a missing KEMI method only at debug level: the names must exist."""
    tree = ast.parse(EDGE_PY.read_text())
    edge_class = next(n for n in tree.body if isinstance(n, ast.ClassDef)
                      and n.name == "WhatsAppEdge")
    methods = {n.name for n in edge_class.body if isinstance(n, ast.FunctionDef)}
    names = set(re.findall(r't_on_(?:failure|reply|branch)\("([a-z_]+)"\)', EDGE_PY.read_text()))
    assert {"ksr_onreply_meta", "ksr_failure_meta", "ksr_onreply_business"} <= names
    assert names <= methods


# ---- the peer certificate's names --------------------------------------------------------------


def test_names_come_from_the_subject_alt_name(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    leaf = ca.issue("meta", ["wa.meta.vc", "*.fbinfra.net", "10.1.2.3"])
    pem = leaf.certificate.read_text()
    assert certificate_dns_names(pem) == ["wa.meta.vc", "*.fbinfra.net"]
    assert peer_certificate_names(pem, "wa.meta.vc") == (True, ["wa.meta.vc", "*.fbinfra.net"])
    assert peer_certificate_names(pem, "wa.meta.vc.evil.example")[0] is False


def test_other_name_and_garbage_do_not_match(tmp_path: Path) -> None:
    ca = make_test_ca(tmp_path)
    other = ca.issue("other", ["sip.impostor.example"]).certificate.read_text()
    assert peer_certificate_names(other, "wa.meta.vc") == (False, ["sip.impostor.example"])
    assert peer_certificate_names("", "wa.meta.vc") == (False, [])
    assert peer_certificate_names("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----",
                                  "wa.meta.vc") == (False, [])
    truncated = other[:200] + "\n-----END CERTIFICATE-----\n"
    assert peer_certificate_names(truncated, "wa.meta.vc")[0] is False


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("wa.meta.vc", "wa.meta.vc", True), ("WA.Meta.VC", "wa.meta.vc", True),
    ("*.meta.vc", "wa.meta.vc", True), ("*.meta.vc", "x.wa.meta.vc", False),
    ("*.vc", "meta.vc", False), ("wa*.meta.vc", "wa.meta.vc", False),
    ("meta.vc", "wa.meta.vc", False), ("wa.meta.vc.", "wa.meta.vc", True),
])
def test_name_matching_follows_rfc_6125(pattern: str, host: str, matches: bool) -> None:
    assert name_matches(pattern, host) is matches


# ---- in-dialog and sources ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "from_meta", "action"), [
    ("INVITE", False, InDialogAction.REFUSE_SESSION_CHANGE),
    ("UPDATE", False, InDialogAction.REFUSE_SESSION_CHANGE),
    ("INVITE", True, InDialogAction.RELAY),
    ("REFER", False, InDialogAction.REFUSE_TRANSFER),
    ("REFER", True, InDialogAction.REFUSE_TRANSFER),
    ("BYE", False, InDialogAction.RELAY), ("ACK", False, InDialogAction.RELAY),
])
def test_in_dialog_action(method: str, from_meta: bool, action: InDialogAction) -> None:
    assert in_dialog_action(method, from_meta) is action


def test_internal_sources() -> None:
    trusted = (ipaddress.ip_network("10.9.0.0/16"),)
    assert internal_source_trusted(True, "192.0.2.1", ())
    assert not internal_source_trusted(False, "10.9.1.1", ())
    assert internal_source_trusted(False, "10.9.1.1", trusted)
    assert not internal_source_trusted(False, "10.8.1.1", trusted)


# ---- settings and config -------------------------------------------------------------------------


def test_bic_settings_round_trip(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.read_text() + (
        '\n[bic]\nmeta_server = "[2001:db8::5]:5071"\ntrusted_sources = ["10.9.0.0/16"]\n'
        'from_mode = "rewrite"\ndefault_number = "+15550100001"\n')
    config = parse_config(text, EXAMPLE_CONFIG)
    raw = json.loads(json.dumps(edge_settings(config)))
    bic = settings_from_dict(raw).bic
    assert bic.destination_uri == "sip:[2001:db8::5]:5071;transport=tls"
    assert bic.from_mode == "rewrite" and bic.default_number == "+15550100001"
    assert [str(n) for n in bic.trusted_sources] == ["10.9.0.0/16"]


def test_settings_without_bic_mean_defaults(settings: EdgeSettings) -> None:
    raw = json.loads(json.dumps(edge_settings(load_config(EXAMPLE_CONFIG))))
    del raw["bic"]
    assert settings_from_dict(raw).bic == BicSettings()
    assert settings.bic.destination_uri == "sip:wa.meta.vc:5061;transport=tls"


@pytest.mark.parametrize(("extra", "problem"), [
    ('[bic]\nmeta_servr = "x"\n', "bic.meta_servr: Extra inputs are not permitted"),
    ('[bic]\nfrom_mode = "fix"\n', "bic.from_mode:"),
    ('[bic]\ntrusted_sources = ["nope"]\n', "bic.trusted_sources:"),
    ('[bic]\nmeta_server = "wa.meta.vc:99999"\n', "bic.meta_server:"),
    ('[bic]\ndefault_number = "+15550000000"\n', "bic.default_number +15550000000 is not one of"),
])
def test_bic_config_errors_name_the_key(extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(EXAMPLE_CONFIG.read_text() + "\n" + extra, EXAMPLE_CONFIG)
    assert any(problem in line for line in caught.value.problems), caught.value.problems

"""The edge's answer to Meta's 407 (kemi/digest_answer.py) and the Meta stand-in's check of it
(lab/meta_standin/digest_rules.py), each against RFC 7616's own example (3.9.1), so neither
judges the other with the same mistake."""

from __future__ import annotations

import hashlib
import time

from kemi.digest_answer import Challenge, authorization, choose, parse_challenge, response
from lab.meta_standin import digest_rules

# RFC 7616 3.9.1
USER, REALM, PASSWORD = "Mufasa", "http-auth@example.org", "Circle of Life"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
URI = "/dir/index.html"
EXPECTED = {"MD5": "8ca523f5e9506fed4657c9700eebdbec",
            "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"}
HA1 = {"MD5": hashlib.md5(f"{USER}:{REALM}:{PASSWORD}".encode()).hexdigest(),
       "SHA-256": hashlib.sha256(f"{USER}:{REALM}:{PASSWORD}".encode()).hexdigest()}

META_407 = [
    'Digest realm="wa.meta.vc",nonce="n-sha",opaque="o-sha",algorithm=SHA-256,qop="auth"',
    'Digest realm="wa.meta.vc",nonce="n-md5",opaque="o-md5",algorithm=MD5,qop="auth"',
]


def test_edge_response_is_rfc_7616s_for_both_algorithms() -> None:
    for algorithm, expected in EXPECTED.items():
        assert response(algorithm, HA1[algorithm], NONCE, "00000001", CNONCE, "GET",
                        URI) == expected


def test_stand_in_computes_the_same_from_the_password() -> None:
    fields = {"uri": URI, "nonce": NONCE, "nc": "00000001", "cnonce": CNONCE}
    for algorithm, expected in EXPECTED.items():
        assert digest_rules.expected_response(algorithm, USER, REALM, PASSWORD, "GET",
                                              fields) == expected


def test_the_edge_answers_sha256_first_and_md5_without_its_ha1() -> None:
    challenges = [c for v in META_407 if (c := parse_challenge(v)) is not None]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    both = choose(challenges, {"MD5": "a", "SHA-256": "b"})
    assert both is not None and (both.algorithm, both.nonce) == ("SHA-256", "n-sha")
    md5 = choose(challenges, {"MD5": "a", "SHA-256": ""})
    assert md5 is not None and (md5.algorithm, md5.opaque) == ("MD5", "o-md5")
    assert choose(challenges[:1], {"MD5": "a"}) is None
    no_qop = parse_challenge('Digest realm="wa.meta.vc", nonce="x", algorithm=MD5')
    assert no_qop is not None and choose([no_qop], {"MD5": "a"}) is None
    assert parse_challenge('Basic realm="wa.meta.vc"') is None
    assert parse_challenge('Digest nonce="x"') is None  # no realm


def test_the_answer_is_what_the_stand_in_accepts() -> None:
    """authorization() parsed back by the stand-in's parser: every field echoed, the response
    recomputed from the password, the opaque bound to the nonce and algorithm."""
    secret = b"k" * 32
    nonce = digest_rules.make_nonce(secret, time.time())
    opaque = digest_rules.opaque_for(secret, nonce, "SHA-256")
    challenge = Challenge("SHA-256", "wa.meta.vc", nonce, opaque, True)
    ruri = "sip:+15550123456@wa.meta.vc;transport=tls"
    ha1 = hashlib.sha256(b"15550100001:wa.meta.vc:pw").hexdigest()
    fields = digest_rules.parse_digest(authorization(challenge, "15550100001", ha1, "INVITE",
                                                     ruri))
    assert fields is not None
    assert digest_rules.answered_algorithm(fields, secret) == ("SHA-256", "ok")
    assert fields["uri"] == ruri and fields["nc"] == "00000001" and fields["qop"] == "auth"
    assert digest_rules.nonce_problem(secret, nonce, time.time()) is None
    assert fields["response"] == digest_rules.expected_response(
        "SHA-256", "15550100001", "wa.meta.vc", "pw", "INVITE", fields)


def test_stand_in_nonces_are_its_own_and_go_stale() -> None:
    secret = b"s" * 32
    now = time.time()
    nonce = digest_rules.make_nonce(secret, now)
    assert digest_rules.nonce_problem(secret, nonce, now + 5) is None
    assert "stale" in str(digest_rules.nonce_problem(secret, nonce, now + 31))
    assert digest_rules.nonce_problem(b"t" * 32, nonce, now) == "nonce is not one of ours"
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    assert digest_rules.nonce_problem(secret, forged, now) == "nonce is not one of ours"
    assert digest_rules.nonce_count({"nc": "0000000a"}) == 10
    assert digest_rules.nonce_count({"nc": "1"}) is None

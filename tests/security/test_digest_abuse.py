"""Digest credentials an attacker can send: without qop, replayed, for another URI, broken.

Nothing here may reach FreeSWITCH, and every request gets an answer (a request without one is
retransmitted by Meta for 32 s).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from tests.conftest import INSTALLED_KAMAILIO, edge_overrides
from tests.security.sip_wire import (
    NUMBER,
    DigestParts,
    MetaTls,
    UdpPeer,
    authenticated_invite,
    challenge_params,
    digest_header,
    header_values,
    invite,
)

QUIET = 1.0
OTHER_NUMBER = "+15550100002"


@pytest.fixture
def freeswitch(clean_edge: EdgeLab) -> Iterator[tuple[UdpPeer, UdpPeer]]:
    first, second = clean_edge.ports.freeswitch
    with UdpPeer(first) as node1, UdpPeer(second) as node2:
        yield node1, node2


def nothing_relayed(nodes: tuple[UdpPeer, UdpPeer]) -> bool:
    """No request but tm's own ACK of a negative answer reached a FreeSWITCH node."""
    arrived = nodes[0].receive(QUIET) + nodes[1].receive(0.1)
    return [m for m in arrived if not m.startswith("ACK ")] == []


def test_digest_without_qop_is_refused_and_its_replays_too(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    """An RFC 2069 response (no qop, no nc) is not accepted, nor replayed on other Call-IDs."""
    with MetaTls(clean_edge) as tls:
        header = authenticated_invite(tls, "no-qop", LAB_PASSWORD, qop=False)
        answer = tls.answer("no-qop")
        assert answer.startswith(("SIP/2.0 400", "SIP/2.0 407")), answer
        for replay in range(3):
            call_id = f"no-qop-replay-{replay}"
            invite(tls, call_id, authorization=header)
            answer = tls.answer(call_id)
            assert answer.startswith(("SIP/2.0 400", "SIP/2.0 403", "SIP/2.0 407")), answer
    assert nothing_relayed(freeswitch)


def test_qop_digest_replayed_on_other_call_ids_is_not_relayed(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    node1, _ = freeswitch
    with MetaTls(clean_edge) as tls:
        header = authenticated_invite(tls, "qop-first", LAB_PASSWORD)
        node1.reply(node1.request("INVITE"), 486, "Busy Here")
        assert tls.answer("qop-first").startswith("SIP/2.0 486")
        for replay in range(3):
            call_id = f"qop-replay-{replay}"
            invite(tls, call_id, authorization=header)
            answer = tls.answer(call_id)
            assert answer.startswith("SIP/2.0 407"), answer
            assert "stale=true" in answer.lower(), answer
    assert nothing_relayed(freeswitch)


@pytest.mark.parametrize("credentials", [
    "Digest",
    "Basic MTU1NTAxMDAwMDE6bGFiLXNpcC1wYXNzd29yZC0x",
    "garbage",
    'Digest username="15550100001"',
    'Digest username="15550100001", realm="sip.example.com", nonce="x", uri="sip:a@b", '
    'response="00000000000000000000000000000000", qop=auth, nc=00000001',
    'Digest username="15550100001", realm="sip.example.com", nonce="x", uri="sip:a@b", '
    'response="00000000000000000000000000000000", qop=auth-int, nc=00000001, cnonce="c"',
])
def test_unusable_credentials_get_an_answer(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer], credentials: str) -> None:
    with MetaTls(clean_edge) as tls:
        invite(tls, "bad-credentials", authorization=credentials)
        answer = tls.answer("bad-credentials")
        assert answer.startswith(("SIP/2.0 400", "SIP/2.0 407")), answer
    assert nothing_relayed(freeswitch)


def test_digest_computed_for_another_request_uri_is_refused(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    """RFC 7616 3.4.6: a correct response for another number's URI does not open this one."""
    other_uri = f"sip:{OTHER_NUMBER}@{clean_edge.config.site.sip_domain};transport=tls"
    with MetaTls(clean_edge) as tls:
        authenticated_invite(tls, "other-uri", LAB_PASSWORD, number=NUMBER, digest_uri=other_uri)
        answer = tls.answer("other-uri")
        assert answer.startswith("SIP/2.0 400"), answer
    assert nothing_relayed(freeswitch)


@pytest.fixture(scope="module")
def edge_401(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("edge-401")
    with EdgeLab(folder, edge_overrides(auth={"challenge_code": 401}),
                 passwords={NUMBER: LAB_PASSWORD}) as lab:
        yield lab


@pytest.mark.skipif(not INSTALLED_KAMAILIO.www_challenge,
                    reason=f"Kamailio {INSTALLED_KAMAILIO.text} has no 401 challenges "
                           "(6.0 and later do)")
def test_401_edge_takes_authorization_and_not_proxy_authorization(edge_401: EdgeLab) -> None:
    """With auth.challenge_code = 401 only `Authorization` answers the challenge: a correct
    digest in Proxy-Authorization is no answer (challenged again, never relayed)."""
    first, second = edge_401.ports.freeswitch
    with MetaTls(edge_401) as tls, UdpPeer(first) as node1, UdpPeer(second) as node2:
        uri = invite(tls, "wrong-header")
        challenge = tls.answer("wrong-header")
        assert challenge.startswith("SIP/2.0 401"), challenge
        params = challenge_params(challenge)
        header = digest_header(DigestParts(NUMBER[1:], params["realm"], params["nonce"], uri),
                               LAB_PASSWORD)
        invite(tls, "wrong-header", 2, authorization=header, auth_header="Proxy-Authorization")
        again = tls.answer("wrong-header")
        assert again.startswith("SIP/2.0 401"), again
        assert nothing_relayed((node1, node2))

        authenticated_invite(tls, "right-header", LAB_PASSWORD)
        relayed = node1.request("INVITE")
        assert header_values(relayed, "Authorization") == []
        node1.reply(relayed, 486, "Busy Here")
        assert tls.answer("right-header").startswith("SIP/2.0 486")

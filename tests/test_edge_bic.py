"""Business-initiated calls through a real Kamailio edge: FreeSWITCH (a SIPp UAC on UDP) on one
side; on the other, Meta's edge played by a second Kamailio behind stunnel (TLS, a `wa.meta.vc`
certificate from the test CA) that challenges and checks the digest with Kamailio's auth
module, and the WhatsApp user (a SIPp UAS) behind it."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.meta_standin import (
    BARE_URI_ONLY_NUMBER,
    META_ANSWERS,
    META_ANSWERS_BY_FLOW,
    SHA256_ONLY_NUMBER,
    MetaAnswer,
    StandinEvent,
)
from lab.meta_standin.digest_rules import FORBIDDEN_URI, parse_digest, without_params
from lab.processes import free_port
from lab.sipp import SippResult
from provisioning.credential_sql import credential_for
from provisioning.credential_store import open_store
from tests.conftest import SECOND_NUMBER, edge_overrides, sip_header

NUMBER = "+15550100001"
USER = "+15550123456"
USER_WAIT = 15


@pytest.fixture(scope="module")
def bic_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("bic-edge")
    with EdgeLab(folder, edge_overrides(), passwords={NUMBER: LAB_PASSWORD},
                 meta_standin=True) as lab:
        yield lab


def call_id(result: SippResult) -> str:
    return sip_header(result.trace[0].text, "Call-ID")[0]


def meta_saw(edge: EdgeLab, result: SippResult) -> list[StandinEvent]:
    assert edge.meta is not None
    return edge.meta.events_for(call_id(result))


def invites_at_meta(edge: EdgeLab, result: SippResult) -> list[str]:
    """`cseq=N auth=yes|no` of each INVITE the Meta stand-in received for the call."""
    return [" ".join(e.detail.split()[:2]) for e in meta_saw(edge, result)
            if e.way == "recv" and e.first_line.startswith("INVITE")]


def final_reply(result: SippResult) -> str:
    """The final response FreeSWITCH got to its INVITE."""
    return next(m.text for m in result.trace
                if not m.sent and m.first_line.startswith("SIP/2.0 ")
                and not m.first_line.startswith("SIP/2.0 1")
                and sip_header(m.text, "CSeq")[0].endswith(" INVITE"))


def diagnosis_code(reply: str) -> str:
    return sip_header(reply, "X-WA-Diagnosis")[0].split(";", 1)[0]


def detail_fields(event: StandinEvent) -> dict[str, str]:
    """`key=value` words of an event's detail."""
    return dict(word.split("=", 1) for word in event.detail.split() if "=" in word)


def challenges_offered(event: StandinEvent) -> list[tuple[str, str, str]]:
    """(algorithm, nonce, opaque) of each challenge in a 407 event, in header order."""
    return [tuple(item.split(":")) for item in detail_fields(event)["challenges"].split(",")]  # type: ignore[misc]


def meta_407s(edge: EdgeLab, result: SippResult) -> list[StandinEvent]:
    return [e for e in meta_saw(edge, result) if e.way == "sent" and e.first_line.startswith("407")]


def digest_verdicts(edge: EdgeLab, result: SippResult) -> list[StandinEvent]:
    return [e for e in meta_saw(edge, result) if e.way == "auth"]


# ---- answered calls ------------------------------------------------------------------------


def test_answered_call_answers_407_once_and_meets_metas_form(bic_edge: EdgeLab,
                                                              tmp_path: Path) -> None:
    user = bic_edge.whatsapp_user("bic-answered", folder=tmp_path)
    fs = bic_edge.freeswitch_call("bic-answered", folder=tmp_path)
    assert fs.passed, fs.errors
    assert user.wait(USER_WAIT) == 0, user.log_tail()

    # Meta got one INVITE without credentials, then one with, at the next CSeq (RFC 3261 8.1.3.5).
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no", "cseq=2 auth=yes"]
    invite = next(m.text for m in user.trace() if m.first_line.startswith("INVITE"))
    ruri = f"sip:{USER}@wa.meta.vc;transport=tls"
    assert invite.startswith(f"INVITE {ruri} SIP/2.0")
    assert f"<sip:{NUMBER}@sip.example.com>" in sip_header(invite, "From")[0]
    assert sip_header(invite, "To")[0].startswith(f"<{ruri}>")

    # Meta's 407 offered SHA-256 then MD5, each with its own nonce and opaque; the edge
    # answered the SHA-256 one (the strongest, RFC 8760), echoing that challenge's nonce and
    # opaque, with digest uri = To URI = request URI; Meta's checks (pairing, RFC 7616 response,
    # nonce count, CSeq above the challenged one) accepted it.
    (challenge,) = meta_407s(bic_edge, fs)
    offered = challenges_offered(challenge)
    assert [algorithm for algorithm, _, _ in offered] == ["SHA-256", "MD5"]
    assert len({nonce for _, nonce, _ in offered}) == len({opaque for _, _, opaque in offered}) == 2
    (verdict,) = digest_verdicts(bic_edge, fs)
    assert verdict.first_line == "accepted SHA-256"
    echoed = detail_fields(verdict)
    assert (echoed["nonce"], echoed["opaque"]) == offered[0][1:]
    assert echoed["uri"] == echoed["to"] == ruri
    assert "Meta offered SHA-256,MD5: answered with SHA-256" in bic_edge.kamailio_log()

    # FreeSWITCH sees its own From, To and CSeq again, and no diagnosis on success.
    ok = next(m.text for m in fs.trace if m.first_line == "SIP/2.0 200 OK")
    assert f"<sip:{NUMBER}@127.0.0.1:{bic_edge.ports.internal}>" in sip_header(ok, "From")[0]
    assert sip_header(ok, "To")[0].startswith(f"<sip:{USER}@127.0.0.1:{bic_edge.ports.internal}>")
    assert sip_header(ok, "CSeq") == ["1 INVITE"]
    assert sip_header(ok, "X-WA-Diagnosis") == []

    # re-INVITE, UPDATE and REFER were answered by the edge; Meta saw only ACK and BYE after,
    # in Meta's numbering: the ACK with its INVITE's CSeq, FreeSWITCH's BYE (CSeq 5) one above.
    later = [(e.first_line.split()[0], e.detail.split()[0])
             for e in meta_saw(bic_edge, fs) if e.way == "recv"][2:]
    assert later == [("ACK", "cseq=2"), ("BYE", "cseq=6")]
    # and Meta's 200 (CSeq 6) came back to FreeSWITCH as its own 5
    assert any(not m.sent and m.first_line == "SIP/2.0 200 OK"
               and sip_header(m.text, "CSeq") == ["5 BYE"] for m in fs.trace)
    assert "BYE from FreeSWITCH" in bic_edge.kamailio_log()


def test_agent_typed_numbers_are_normalized(bic_edge: EdgeLab, tmp_path: Path) -> None:
    user = bic_edge.whatsapp_user("bic-answered", folder=tmp_path)
    fs = bic_edge.freeswitch_call("bic-answered", dialed="00%201%20(555)%20012-3456",
                                  caller="1-555-010.0001", folder=tmp_path)
    assert fs.passed, fs.errors
    assert user.wait(USER_WAIT) == 0, user.log_tail()
    invite = next(m.text for m in user.trace() if m.first_line.startswith("INVITE"))
    assert invite.startswith(f"INVITE sip:{USER}@wa.meta.vc;transport=tls SIP/2.0")
    assert f"<sip:{NUMBER}@sip.example.com>" in sip_header(invite, "From")[0]


def test_meta_hangs_up_with_the_call_duration(bic_edge: EdgeLab, tmp_path: Path) -> None:
    user = bic_edge.whatsapp_user("bic-meta-hangup", folder=tmp_path)
    fs = bic_edge.freeswitch_call("bic-meta-hangup", folder=tmp_path)
    assert fs.passed, fs.errors
    assert user.wait(USER_WAIT) == 0, user.log_tail()
    bye = next(m.text for m in fs.trace if m.first_line.startswith("BYE"))
    assert sip_header(bye, "x-wa-meta-call-duration") == ["9"]
    assert f"BYE from Meta call-id={call_id(fs)} duration=9" in bic_edge.kamailio_log()


def test_cancel_before_answer_gets_487_with_diagnosis(bic_edge: EdgeLab, tmp_path: Path) -> None:
    user = bic_edge.whatsapp_user("bic-cancel", folder=tmp_path)
    fs = bic_edge.freeswitch_call("bic-cancel", folder=tmp_path)
    assert fs.passed, fs.errors
    assert user.wait(USER_WAIT) == 0, user.log_tail()
    assert diagnosis_code(final_reply(fs)) == "cancelled"
    # tm's CANCEL and its ACK of the 487 are built from the authenticated INVITE as it left:
    # its CSeq, one above FreeSWITCH's
    sent = [(e.first_line.split()[0], e.detail.split()[0]) for e in meta_saw(bic_edge, fs)
            if e.way == "recv"]
    assert ("CANCEL", "cseq=2") in sent and sent[-1] == ("ACK", "cseq=2"), sent


# ---- Meta's error answers -------------------------------------------------------------------


@pytest.mark.parametrize("flow", META_ANSWERS, ids=[a.flow for a in META_ANSWERS])
def test_each_meta_error_becomes_a_diagnosis(bic_edge: EdgeLab, tmp_path: Path,
                                             flow: MetaAnswer) -> None:
    fs = bic_edge.freeswitch_call(f"bic-meta-{flow.flow}", dialed=flow.called_number,
                                  folder=tmp_path)
    assert fs.passed, fs.errors
    reply = final_reply(fs)
    # A proxy does not forward a 503 (RFC 3261 16.7): the edge says 500 and keeps Meta's text.
    expected = "500 Server Internal Error - Meta answered 503 " if flow.status == 503 \
        else f"{flow.status} "
    assert reply.startswith(f"SIP/2.0 {expected}{flow.reason}\r\n"), reply
    assert diagnosis_code(reply) == flow.diagnosis
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no", "cseq=2 auth=yes"]
    assert f"diagnosis {flow.diagnosis};" in bic_edge.kamailio_log()


# ---- the digest goes only to Meta, and only once ---------------------------------------------


def test_peer_certificate_for_another_name_gets_no_digest(bic_edge: EdgeLab,
                                                          tmp_path: Path) -> None:
    assert bic_edge.meta is not None
    genuine = bic_edge.meta.certificate
    bic_edge.meta.present(bic_edge.ca.issue("impostor", ["sip.impostor.example"]))
    try:
        fs = bic_edge.freeswitch_call("bic-refused-502", folder=tmp_path)
    finally:
        bic_edge.meta.present(genuine)
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "meta_certificate_mismatch"
    # The impostor (chain valid, name wrong) challenged once and never saw a digest.
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no"]
    assert "sip.impostor.example" in bic_edge.kamailio_log()


def test_second_407_after_our_digest_is_a_failure_not_a_loop(bic_edge: EdgeLab,
                                                             tmp_path: Path) -> None:
    bic_edge.write_credentials({NUMBER: "not-the-meta-password"})
    bic_edge.reload_credentials()
    try:
        fs = bic_edge.freeswitch_call("bic-refused-403", folder=tmp_path)
    finally:
        bic_edge.write_credentials({NUMBER: LAB_PASSWORD})
        bic_edge.reload_credentials()
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "meta_auth_rejected"
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no", "cseq=2 auth=yes"]
    # Meta's own check refused it: the second 407 says why, with two fresh challenges.
    second = meta_407s(bic_edge, fs)[1]
    assert detail_fields(second)["why"] == "SHA-256_answer_refused:_wrong_response"
    assert len(challenges_offered(second)) == 2


def test_metas_digest_uri_refusal_gets_its_own_diagnosis(bic_edge: EdgeLab,
                                                         tmp_path: Path) -> None:
    """A Meta that accepts only the To URI without parameters as digest uri (one reading of
    LiveKit's trace) refuses the edge's form with its 403; FreeSWITCH learns why."""
    fs = bic_edge.freeswitch_call("bic-meta-auth-uri-mismatch", dialed=BARE_URI_ONLY_NUMBER,
                                  folder=tmp_path)
    assert fs.passed, fs.errors
    reply = final_reply(fs)
    assert reply.startswith(f"SIP/2.0 403 {FORBIDDEN_URI}\r\n"), reply
    assert diagnosis_code(reply) == "meta_auth_uri_mismatch"
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no", "cseq=2 auth=yes"]
    (verdict,) = digest_verdicts(bic_edge, fs)
    assert verdict.first_line == "refused: digest uri is not the To URI"
    assert "diagnosis meta_auth_uri_mismatch;" in bic_edge.kamailio_log()


def md5_only_store(edge: EdgeLab) -> None:
    """NUMBER's credentials as a store written before the SHA-256 HA1 existed."""
    full = credential_for(NUMBER, LAB_PASSWORD, edge.config.site.sip_domain)
    store = open_store(edge.config.credentials.sqlite_path())
    try:
        store.remove(NUMBER)
        store.put(replace(full, ha1_meta_sha256=""), edge.config.site.sip_domain)
    finally:
        store.close()
    edge.reload_credentials()


def test_a_store_without_the_sha256_ha1_answers_md5(bic_edge: EdgeLab, tmp_path: Path) -> None:
    md5_only_store(bic_edge)
    try:
        user = bic_edge.whatsapp_user("bic-answered", folder=tmp_path)
        fs = bic_edge.freeswitch_call("bic-answered", folder=tmp_path)
        assert fs.passed, fs.errors
        assert user.wait(USER_WAIT) == 0, user.log_tail()
    finally:
        bic_edge.write_credentials({NUMBER: LAB_PASSWORD})
        bic_edge.reload_credentials()
    (challenge,) = meta_407s(bic_edge, fs)
    offered = challenges_offered(challenge)
    (verdict,) = digest_verdicts(bic_edge, fs)
    assert verdict.first_line == "accepted MD5"
    assert (detail_fields(verdict)["nonce"], detail_fields(verdict)["opaque"]) == offered[1][1:]
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no", "cseq=2 auth=yes"]


def test_sha256_only_challenge_is_answered_with_sha256(bic_edge: EdgeLab, tmp_path: Path) -> None:
    """Were Meta to drop MD5, the edge still answers (no released uac could); with only an
    MD5 HA1 in the store it cannot: 502 naming what Meta offered."""
    user = bic_edge.whatsapp_user("bic-answered", folder=tmp_path / "sha")
    fs = bic_edge.freeswitch_call("bic-answered", dialed=SHA256_ONLY_NUMBER,
                                  folder=tmp_path / "sha")
    assert fs.passed, fs.errors
    assert user.wait(USER_WAIT) == 0, user.log_tail()
    (verdict,) = digest_verdicts(bic_edge, fs)
    assert verdict.first_line == "accepted SHA-256"

    md5_only_store(bic_edge)
    try:
        fs = bic_edge.freeswitch_call("bic-meta-sha256-only", dialed=SHA256_ONLY_NUMBER,
                                      folder=tmp_path)
    finally:
        bic_edge.write_credentials({NUMBER: LAB_PASSWORD})
        bic_edge.reload_credentials()
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "meta_auth_failed"
    assert invites_at_meta(bic_edge, fs) == ["cseq=1 auth=no"]
    (challenge,) = meta_407s(bic_edge, fs)
    assert [algorithm for algorithm, _, _ in challenges_offered(challenge)] == ["SHA-256"]


# ---- the Meta stand-in is as strict as Meta --------------------------------------------------
# Answers uac never sends, played straight at the stand-in (plain TCP behind its stunnel): each
# would pass a lax stand-in, so these tests fail if the stand-in stops checking.

DECLINED = META_ANSWERS_BY_FLOW["declined"]  # answers 486 once the digest is accepted
HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {"MD5": hashlib.md5,
                                                         "SHA-256": hashlib.sha256}


class EdgeSideClient:
    """One TCP connection to the stand-in, sending INVITEs as the edge would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.port = self.sock.getsockname()[1]
        self.buffer = b""

    def invite(self, call_id: str, cseq: int, to_uri: str, authorization: str = "") -> str:
        """Send an INVITE for DECLINED's number; return the final response."""
        ruri = f"sip:{DECLINED.called_number}@wa.meta.vc;transport=tls"
        lines = [
            f"INVITE {ruri} SIP/2.0",
            f"Via: SIP/2.0/TCP 127.0.0.1:{self.port};branch=z9hG4bK{call_id}-{cseq};rport",
            "Max-Forwards: 70",
            f"From: <sip:{NUMBER}@sip.example.com>;tag={call_id}",
            f"To: <{to_uri}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:edge@127.0.0.1:{self.port};transport=tcp>",
        ]
        if authorization:
            lines.append(f"Proxy-Authorization: {authorization}")
        self.sock.sendall(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
        return self._final(call_id)

    def _final(self, call_id: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\r\n\r\n" in self.buffer:
                head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
                text = head.decode(errors="replace")
                if sip_header(text, "Call-ID") == [call_id] and not text.startswith("SIP/2.0 1"):
                    return text
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            self.buffer += self.sock.recv(65536)
        raise AssertionError(f"no final response for {call_id} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def answer(challenge: dict[str, str], uri: str, hashed_as: str | None = None,
           password: str = LAB_PASSWORD, **replace: str) -> str:
    """A Proxy-Authorization value for `challenge` (its fields), computed with `hashed_as`
    (default: the challenge's algorithm); `replace` overrides header fields (None drops)."""
    algorithm = challenge["algorithm"]
    digest = HASHES[hashed_as or algorithm]
    fields = {"username": NUMBER[1:], "realm": challenge["realm"], "nonce": challenge["nonce"],
              "uri": uri, "opaque": challenge["opaque"], "qop": "auth", "nc": "00000001",
              "cnonce": "0a4f113b", "algorithm": algorithm}
    fields.update(replace)

    def h(text: str) -> str:
        return digest(text.encode()).hexdigest()

    ha1 = h(f"{fields['username']}:{fields['realm']}:{password}")
    ha2 = h(f"INVITE:{fields['uri']}")
    fields["response"] = h(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")
    unquoted = {"qop", "nc", "algorithm"}
    return "Digest " + ", ".join(f"{k}={v}" if k in unquoted else f'{k}="{v}"'
                                 for k, v in fields.items() if v != "-")


def offered(response: str) -> dict[str, dict[str, str]]:
    """The challenges of a 407, by algorithm, checking Meta's layout on the way."""
    assert response.startswith("SIP/2.0 407 "), response
    challenges = [parse_digest(v) for v in sip_header(response, "Proxy-Authenticate")]
    assert [c["algorithm"] if c else None for c in challenges] == ["SHA-256", "MD5"]
    return {c["algorithm"]: c for c in challenges if c}


RURI = f"sip:{DECLINED.called_number}@wa.meta.vc;transport=tls"
BARE = without_params(RURI)
# name -> (To URI, how to answer the challenges, expected status line start)
ANSWERS: dict[str, tuple[str, Callable[[dict[str, dict[str, str]]], str], str]] = {
    "md5": (RURI, lambda c: answer(c["MD5"], RURI), f"486 {DECLINED.reason}"),
    "sha-256": (RURI, lambda c: answer(c["SHA-256"], RURI), f"486 {DECLINED.reason}"),
    "livekit-form": (RURI, lambda c: answer(c["SHA-256"], BARE), f"486 {DECLINED.reason}"),
    "jambonz-form": (BARE, lambda c: answer(c["MD5"], RURI), f"403 {FORBIDDEN_URI}"),
    "other-number-uri": (RURI, lambda c: answer(c["MD5"], RURI.replace("+1555", "+1556")),
                         f"403 {FORBIDDEN_URI}"),
    "md5-nonce-sha-opaque": (RURI, lambda c: answer(c["MD5"], RURI, opaque=c["SHA-256"]["opaque"]),
                             "407 "),
    "sha-nonce-md5-opaque": (RURI, lambda c: answer(c["MD5"], RURI, nonce=c["SHA-256"]["nonce"]),
                             "407 "),
    "sha-challenge-as-md5": (RURI, lambda c: answer(c["SHA-256"], RURI, hashed_as="MD5",
                                                   algorithm="MD5"), "407 "),
    "md5-hash-labelled-sha": (RURI, lambda c: answer(c["SHA-256"], RURI, hashed_as="MD5"), "407 "),
    "no-opaque": (RURI, lambda c: answer(c["MD5"], RURI, opaque="-"), "407 "),
    "no-qop": (RURI, lambda c: answer(c["MD5"], RURI, qop="-"), "407 "),
    "wrong-password": (RURI, lambda c: answer(c["MD5"], RURI, password="guess"), "407 "),
}


@pytest.mark.parametrize("name", ANSWERS)
def test_stand_in_accepts_only_a_correct_answer_to_one_of_its_challenges(bic_edge: EdgeLab,
                                                                         name: str) -> None:
    assert bic_edge.meta is not None
    to_uri, make_answer, expected = ANSWERS[name]
    client = EdgeSideClient(bic_edge.meta.ports.tcp)
    try:
        call = f"strict-{name}-{time.monotonic_ns()}"
        challenges = offered(client.invite(call, 1, to_uri))
        reply = client.invite(call, 2, to_uri, make_answer(challenges))
    finally:
        client.close()
    assert reply.startswith(f"SIP/2.0 {expected}"), reply
    if expected.startswith("407"):
        offered(reply)  # a refused answer gets Meta's 407 again, with both challenges


def test_stand_in_refuses_a_replayed_answer(bic_edge: EdgeLab) -> None:
    """The same accepted header (same nonce and nc) on the next INVITE is challenged again."""
    assert bic_edge.meta is not None
    client = EdgeSideClient(bic_edge.meta.ports.tcp)
    try:
        call = f"strict-replay-{time.monotonic_ns()}"
        accepted = answer(offered(client.invite(call, 1, RURI))["MD5"], RURI)
        first = client.invite(call, 2, RURI, accepted)
        replayed = client.invite(call, 3, RURI, accepted)
    finally:
        client.close()
    assert first.startswith(f"SIP/2.0 486 {DECLINED.reason}"), first
    offered(replayed)


# ---- refused by the edge itself, before Meta ------------------------------------------------


@pytest.mark.parametrize(("flow", "changes", "code"), [
    ("bic-refused-404", {"keys": {"edge": "10.1.2.3"}}, "ip_literal"),
    ("bic-refused-416", {}, "sips_uri"),
    ("bic-refused-484", {"dialed": "0301234567"}, "bad_number"),
    ("bic-refused-403", {"caller": "+15550199999"}, "from_not_configured"),
    ("bic-refused-403", {"from_host": "sip.example.org"}, "sip_server_mismatch"),
    ("bic-refused-503", {"caller": SECOND_NUMBER}, "no_meta_credentials"),
])
def test_edge_refuses_what_meta_would_refuse(bic_edge: EdgeLab, tmp_path: Path, flow: str,
                                             changes: dict[str, object], code: str) -> None:
    fs = bic_edge.freeswitch_call(flow, folder=tmp_path, **changes)  # type: ignore[arg-type]
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == code
    assert invites_at_meta(bic_edge, fs) == []


def test_parent_domain_of_the_sip_hostname_passes_metas_rule(bic_edge: EdgeLab,
                                                             tmp_path: Path) -> None:
    """sip.example.com is configured: From example.com passes (Meta's sub-domain rule)."""
    declined = next(a for a in META_ANSWERS if a.flow == "declined")
    fs = bic_edge.freeswitch_call("bic-meta-declined", dialed=declined.called_number,
                                  from_host="example.com", folder=tmp_path)
    assert fs.passed, fs.errors
    froms = [e.detail for e in meta_saw(bic_edge, fs) if e.way == "recv"]
    assert all(f"from=sip:{NUMBER}@example.com " in detail for detail in froms), froms


def test_untrusted_source_may_not_originate(bic_edge: EdgeLab, tmp_path: Path) -> None:
    fs = bic_edge.freeswitch_call("bic-refused-403", folder=tmp_path, local_port=free_port())
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "untrusted_source"
    assert invites_at_meta(bic_edge, fs) == []


def test_meta_server_down_gets_503_with_diagnosis(edge: EdgeLab, tmp_path: Path) -> None:
    """The shared UIC edge points bic.meta_server at a loopback port where nothing listens."""
    fs = edge.freeswitch_call("bic-meta-down", folder=tmp_path)
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "meta_unreachable"
    assert "cannot reach Meta" in edge.kamailio_log()

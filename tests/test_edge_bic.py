"""Business-initiated calls through a real Kamailio edge: FreeSWITCH (a SIPp UAC on UDP) on one
side; on the other, Meta's edge played by a second Kamailio behind stunnel (TLS, a `wa.meta.vc`
certificate from the test CA) that challenges and checks the digest with Kamailio's auth
module, and the WhatsApp user (a SIPp UAS) behind it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.meta_standin import META_ANSWERS, MetaAnswer, StandinEvent
from lab.processes import free_port
from lab.sipp import SippResult
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
    assert invite.startswith(f"INVITE sip:{USER}@wa.meta.vc;transport=tls SIP/2.0")
    assert f"<sip:{NUMBER}@sip.example.com>" in sip_header(invite, "From")[0]
    assert sip_header(invite, "To")[0].startswith(f"<sip:{USER}@wa.meta.vc>")

    # FreeSWITCH sees its own From and CSeq again, and no diagnosis on success.
    ok = next(m.text for m in fs.trace if m.first_line == "SIP/2.0 200 OK")
    assert f"<sip:{NUMBER}@127.0.0.1:{bic_edge.ports.internal}>" in sip_header(ok, "From")[0]
    assert sip_header(ok, "CSeq") == ["1 INVITE"]
    assert sip_header(ok, "X-WA-Diagnosis") == []

    # re-INVITE, UPDATE and REFER were answered by the edge; Meta saw only ACK and BYE after.
    later = [e.first_line.split()[0] for e in meta_saw(bic_edge, fs) if e.way == "recv"][2:]
    assert later == ["ACK", "BYE"]
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
    assert any(e.first_line.startswith("CANCEL") for e in meta_saw(bic_edge, fs))


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


# ---- the lab command -----------------------------------------------------------------------


def test_lab_command_places_a_uic_and_a_bic_call() -> None:
    done = subprocess.run([sys.executable, "-m", "lab"], capture_output=True, text=True,
                          timeout=120, check=False, cwd=Path(__file__).resolve().parent.parent)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines[-1] == "lab: 3 passed, 0 failed"
    assert any("edge        ──▶ Meta        INVITE sip:+15550123456@wa.meta.vc" in line
               for line in lines)


def test_meta_server_down_gets_503_with_diagnosis(edge: EdgeLab, tmp_path: Path) -> None:
    """The shared UIC edge points bic.meta_server at a loopback port where nothing listens."""
    fs = edge.freeswitch_call("bic-meta-down", folder=tmp_path)
    assert fs.passed, fs.errors
    assert diagnosis_code(final_reply(fs)) == "meta_unreachable"
    assert "cannot reach Meta" in edge.kamailio_log()

"""[media] anchor = "rtpengine" through the real edge and Debian's rtpengine: Meta gets its own
profile back, FreeSWITCH gets plain RTP, and a dead rtpengine refuses the call with a diagnosis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.rtpengine_section import rtpengine_overrides
from lab.sipp import start_sipp_server
from tests.conftest import first_request, sip_header

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")
FS_WAIT = 15


@pytest.fixture(scope="module")
def anchored_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("edge-rtpengine")
    with EdgeLab(folder, rtpengine_overrides(), passwords={"+15550100001": LAB_PASSWORD}) as lab:
        yield lab


def body(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1]


def test_uic_dtls_offer_reaches_freeswitch_as_plain_rtp_and_the_answer_meta_as_dtls(
        anchored_edge: EdgeLab, tmp_path: Path) -> None:
    fs = start_sipp_server("uic-rtpengine-dtls", "freeswitch", tmp_path,
                           anchored_edge.ports.freeswitch[0])
    meta = anchored_edge.meta_call("uic-rtpengine-dtls", folder=tmp_path)
    assert meta.passed, meta.errors + anchored_edge.kamailio_log()[-3000:]
    assert fs.wait(FS_WAIT) == 0, fs.log_tail()

    offer = body(first_request([m.text for m in fs.trace()], "INVITE"))
    for absent in ("a=fingerprint", "a=ice-", "a=candidate", "a=crypto", "SAVP", "a=setup"):
        assert absent not in offer, offer
    assert "a=rtpmap:126 telephone-event/8000" in offer
    assert "c=IN IP4 127.0.0.1" in offer

    ok = next(m for m in meta.messages if m.startswith("SIP/2.0 200 OK")
              and "INVITE" in sip_header(m, "CSeq")[0])
    answer = body(ok)
    assert "RTP/AVP" not in answer.replace("UDP/TLS/RTP/SAVPF", "")
    assert "a=crypto" not in answer
    fingerprints = [line for line in answer.splitlines() if line.startswith("a=fingerprint")]
    assert len(fingerprints) == 1
    assert "3F:8A:1C" not in answer  # rtpengine's own certificate, not Meta's echoed back
    assert "m=audio 30000" not in answer  # FreeSWITCH's port never reaches Meta


def test_a_dead_rtpengine_refuses_the_call_with_a_diagnosis(tmp_path: Path) -> None:
    """Kamailio up, rtpengine gone: Meta's INVITE gets 503 with the edge's diagnosis, and
    FreeSWITCH never sees an INVITE it could not get media for."""
    with EdgeLab(tmp_path / "edge", rtpengine_overrides(),
                 passwords={"+15550100001": LAB_PASSWORD}) as lab:
        assert lab.rtpengine is not None
        lab.rtpengine.stop()
        meta = lab.meta_call("uic-rtpengine-down", folder=tmp_path)
        assert meta.passed, meta.errors
        refusal = next(m for m in meta.messages if m.startswith("SIP/2.0 503"))
        assert "media relay unavailable" in refusal.split("\r\n", 1)[0]
        assert "rtpengine_unreachable" in refusal
        log = lab.kamailio_log()
        assert "rtpengine did not take the call's media" in log
        assert "outcome=rtpengine_unreachable" in log or "rtpengine_unreachable" in log


@pytest.fixture(scope="module")
def anchored_bic_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("bic-edge-rtpengine")
    with EdgeLab(folder, rtpengine_overrides(), passwords={"+15550100001": LAB_PASSWORD},
                 meta_standin=True) as lab:
        yield lab


def test_bic_plain_offer_reaches_meta_as_dtls_after_the_407_and_the_answer_comes_back_plain(
        anchored_bic_edge: EdgeLab, tmp_path: Path) -> None:
    user = anchored_bic_edge.whatsapp_user("bic-rtpengine-dtls", folder=tmp_path)
    fs = anchored_bic_edge.freeswitch_call("bic-rtpengine-dtls", folder=tmp_path)
    assert fs.passed, fs.errors + anchored_bic_edge.kamailio_log()[-3000:]
    assert user.wait(15) == 0, user.log_tail()
    offer = body(first_request([m.text for m in user.trace()], "INVITE"))
    assert "a=crypto" not in offer  # SDES-off: DTLS only, no NULL suites offered to Meta
    assert offer.count("a=candidate:") == 1  # one component: rtcp-mux required
    assert "a=rtcp-mux" in offer and "m=audio 30000" not in offer
    ok = next(m.text for m in fs.trace if not m.sent and m.first_line.startswith("SIP/2.0 200")
              and sip_header(m.text, "CSeq")[0] == "1 INVITE")
    answer = body(ok)
    for absent in ("a=fingerprint", "a=ice-", "a=candidate", "SAVP", "a=setup"):
        assert absent not in answer, answer
    # Meta's 407 was answered with the same rtpengine session: one offer, one SDP at Meta.
    assert "answered with SHA-256" in anchored_bic_edge.kamailio_log()

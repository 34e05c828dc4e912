"""Audio through the real edge and Debian's rtpengine: Meta's strict ICE-lite media peer on one
side, a plain-RTP business (as a stock FreeSWITCH behind rtpengine) on the other; tones heard
both ways in all four flows, Meta's side silent until the business's first packet, which reaches
Meta once keys exist (the peer enforces it). The same flows `make lab` shows."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from lab.edge import EdgeLab
from lab.media.sdp import SrtpMode
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    PASSWORDS,
    business_initiated,
    rtpengine_overrides,
    user_initiated,
)

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")


@pytest.fixture(scope="module")
def anchored_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("edge-rtpengine-media")
    with EdgeLab(folder, rtpengine_overrides(), passwords=PASSWORDS, meta_standin=True) as lab:
        yield lab


@pytest.mark.parametrize("who", ["user", "business"])
@pytest.mark.parametrize("mode", [SrtpMode.DTLS, SrtpMode.SDES], ids=["DTLS", "SDES"])
def test_tones_both_ways_through_rtpengine(anchored_edge: EdgeLab, who: str,
                                           mode: SrtpMode) -> None:
    play = user_initiated if who == "user" else business_initiated
    flow = asyncio.run(play(anchored_edge, mode))
    report = flow.meta.report
    assert flow.status == 200, anchored_edge.kamailio_log()[-2000:]
    assert report.failure is None, report.failure
    if mode is SrtpMode.DTLS:
        assert report.dtls_handshake_ms is not None  # rtpengine, the DTLS client, started it
    assert report.first_packet_after_ack_ms is not None  # the business's maiden packet arrived
    assert report.auth_failures == 0
    assert report.heard_hz == pytest.approx(BUSINESS_TONE_HZ, abs=5), report.line()
    assert flow.business.report.heard_hz == pytest.approx(META_TONE_HZ, abs=5), flow.business.report
    assert flow.heard_both_ways()

"""Audio through the real edge and Debian's rtpengine: Meta's strict ICE-lite DTLS media peer on
one side, a plain-RTP business (as a stock FreeSWITCH behind rtpengine) on the other; tones heard
both ways, Meta's side silent until the business's first packet, which reaches Meta once keys
exist."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from lab.edge import LAB_PASSWORD, META_USER, EdgeLab
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import SrtpMode
from lab.media.sip_uac import SipUac
from lab.media.sip_uas import SipUas
from lab.meta_standin import WHATSAPP_USER
from lab.meta_uac import MetaUac
from tests.test_edge_rtpengine import rtpengine_overrides

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")
META_TONE_HZ = 440.0
BUSINESS_TONE_HZ = 700.0
HOLD_S = 3.0
DTLS_NUMBER = "+15550100001"
SDES_NUMBER = "+15550100003"
NUMBERS = {SrtpMode.DTLS: DTLS_NUMBER, SrtpMode.SDES: SDES_NUMBER}
PASSWORDS = {DTLS_NUMBER: LAB_PASSWORD, SDES_NUMBER: LAB_PASSWORD}


def overrides() -> dict[str, Any]:
    """The rtpengine edge with a DTLS and an SDES number, both with credentials."""
    changes = rtpengine_overrides()
    changes["numbers"] = [*changes["numbers"][:1], {
        "business_number": SDES_NUMBER, "phone_number_id": "100000000000003",
        "srtp_mode": "SDES", "sdes_suites": ["AES_CM_128_HMAC_SHA1_80"]}]
    return changes


@pytest.fixture(scope="module")
def anchored_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("edge-rtpengine-media")
    with EdgeLab(folder, overrides(), passwords=PASSWORDS) as lab:
        yield lab


async def uic_call(edge: EdgeLab, mode: SrtpMode) -> tuple[int, MediaPeer, PlainRtpPeer]:
    ports = edge.ports
    number = NUMBERS[mode]
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
    uas = await SipUas(("127.0.0.1", ports.freeswitch[0]), business).open()
    uac = await MetaUac(ports.meta_client, edge.config.site.sip_domain, META_USER,
                        f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                        f"<sip:127.0.0.1:{ports.internal};r2=on;lr>").open()
    try:
        response = await uac.invite(number, number[1:], LAB_PASSWORD, "wacid.rtpenginemedia1",
                                    "rtpengine-media", meta.offer())
        if response.status == 200:
            meta.accept_answer(response.body)
            meta.start()
            await asyncio.sleep(HOLD_S)
            await uac.bye("wacid.rtpenginemedia1", round(HOLD_S))
        return response.status or 0, meta, business
    finally:
        meta.report = await meta.close()
        await business.close()
        uas.close()
        await uac.close()


@pytest.mark.parametrize("mode", [SrtpMode.DTLS, SrtpMode.SDES], ids=["DTLS", "SDES"])
def test_uic_tones_both_ways_through_rtpengine(anchored_edge: EdgeLab, mode: SrtpMode) -> None:
    status, meta, business = asyncio.run(uic_call(anchored_edge, mode))
    report = meta.report
    assert status == 200, anchored_edge.kamailio_log()[-2000:]
    assert report.failure is None, report.failure
    if mode is SrtpMode.DTLS:
        assert report.dtls_handshake_ms is not None  # rtpengine, the DTLS client, started it
    assert report.first_packet_after_ack_ms is not None  # the business's maiden packet arrived
    assert report.heard_hz == pytest.approx(BUSINESS_TONE_HZ, abs=5), report.line()
    assert business.report.heard_hz == pytest.approx(META_TONE_HZ, abs=5), business.report
    assert report.auth_failures == 0
    print(report.line(business.report.heard_hz))


@pytest.fixture(scope="module")
def anchored_bic_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("bic-edge-rtpengine-media")
    with EdgeLab(folder, overrides(), passwords=PASSWORDS, meta_standin=True) as lab:
        yield lab


async def bic_call(edge: EdgeLab, mode: SrtpMode) -> tuple[int, MediaPeer, PlainRtpPeer]:
    """FreeSWITCH's gateway (a plain-RTP UAC at a FreeSWITCH node's address) calls the WhatsApp
    user behind the Meta stand-in, whose media peer answers ICE-lite as Meta does."""
    ports = edge.ports
    number = NUMBERS[mode]
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ).open()
    user = await SipUas(("127.0.0.1", ports.meta.whatsapp_user), meta).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
    uac = await SipUac(("127.0.0.1", ports.internal), local_port=ports.freeswitch[0]).open()
    try:
        response = await uac.invite(WHATSAPP_USER, number, "", business.sdp(),
                                    from_host=f"127.0.0.1:{ports.internal}")
        if response.status == 200:
            business.accept(response.body)
            business.start()
            await asyncio.sleep(HOLD_S)
            await uac.bye(round(HOLD_S))
        return response.status or 0, meta, business
    finally:
        meta.report = await meta.close()
        await business.close()
        user.close()
        uac.close()


@pytest.mark.parametrize("mode", [SrtpMode.DTLS, SrtpMode.SDES], ids=["DTLS", "SDES"])
def test_bic_tones_both_ways_through_rtpengine(anchored_bic_edge: EdgeLab, mode: SrtpMode) -> None:
    status, meta, business = asyncio.run(bic_call(anchored_bic_edge, mode))
    report = meta.report
    assert status == 200, anchored_bic_edge.kamailio_log()[-2000:]
    assert report.failure is None, report.failure
    if mode is SrtpMode.DTLS:
        assert report.dtls_handshake_ms is not None
    assert report.first_packet_after_ack_ms is not None
    assert report.heard_hz == pytest.approx(BUSINESS_TONE_HZ, abs=5), report.line()
    assert business.report.heard_hz == pytest.approx(META_TONE_HZ, abs=5), business.report
    print(report.line(business.report.heard_hz))

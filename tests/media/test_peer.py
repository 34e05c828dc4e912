"""The media peer against a business end built from the same layers: SDES both ways, DTLS
(the business as DTLS client and CONTROLLING ICE agent), Meta's silence-until-first-packet
rule and its no-media timeouts (shortened)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aioice import stun

from lab.media.peer import MediaPeer, MediaTimeouts
from lab.media.sdp import SrtpMode
from tests.media.business_end import BusinessEnd

PEER_HZ, BUSINESS_HZ = 1000.0, 440.0


@pytest.fixture
async def business_sdes() -> AsyncIterator[BusinessEnd]:
    end = await BusinessEnd(SrtpMode.SDES, BUSINESS_HZ).open()
    yield end
    end.close()


@pytest.fixture
async def business_dtls() -> AsyncIterator[BusinessEnd]:
    end = await BusinessEnd(SrtpMode.DTLS, BUSINESS_HZ).open()
    yield end
    end.close()


async def test_sdes_uic_audio_both_ways(business_sdes: BusinessEnd) -> None:
    peer = await MediaPeer(SrtpMode.SDES, tone_hz=PEER_HZ).open()
    peer.accept_answer(business_sdes.answer(peer.offer()))
    peer.start()
    await business_sdes.send_tone(75)
    await asyncio.sleep(0.2)
    report = await peer.close()
    assert report.packets_received == 75 and report.auth_failures == 0
    assert report.heard_hz is not None and abs(report.heard_hz - BUSINESS_HZ) < 3
    assert report.first_packet_after_ack_ms is not None and report.first_packet_after_ack_ms >= 0
    assert report.packets_sent > 20
    heard = business_sdes.heard_hz()
    assert heard is not None and abs(heard - PEER_HZ) < 3
    assert business_sdes.srtp is not None and business_sdes.srtp.auth_failures == 0
    assert "media: SDES AES_CM_128_HMAC_SHA1_80" in report.line()


async def test_sdes_bic_answer_carries_audio(business_sdes: BusinessEnd) -> None:
    peer = await MediaPeer(SrtpMode.SDES, tone_hz=PEER_HZ).open()
    business_sdes.take(peer.answer(business_sdes.offer()))
    peer.start()
    await business_sdes.send_tone(50)
    await asyncio.sleep(0.2)
    report = await peer.close()
    assert report.packets_received == 50 and report.auth_failures == 0
    heard = business_sdes.heard_hz()
    assert heard is not None and abs(heard - PEER_HZ) < 3


async def test_peer_sends_nothing_before_the_business(business_sdes: BusinessEnd) -> None:
    peer = await MediaPeer(SrtpMode.SDES, tone_hz=PEER_HZ).open()
    peer.accept_answer(business_sdes.answer(peer.offer()))
    peer.start()
    await asyncio.sleep(0.5)
    assert business_sdes.datagrams == 0 and peer.report.packets_sent == 0
    await business_sdes.send_tone(5)
    await asyncio.wait_for(peer.first_packet.wait(), 5)
    for _ in range(100):
        if business_sdes.datagrams:
            break
        await asyncio.sleep(0.02)
    assert business_sdes.datagrams > 0  # the first business packet unlocked the sender
    await peer.close()


async def test_dtls_business_client_against_the_peer_server(business_dtls: BusinessEnd) -> None:
    peer = await MediaPeer(SrtpMode.DTLS, tone_hz=PEER_HZ).open()
    peer.accept_answer(business_dtls.answer(peer.offer()))
    peer.start()
    conflict = await business_dtls.check(controlling=False, nominate=False)
    assert conflict.message_class == stun.Class.ERROR and conflict.attributes["ERROR-CODE"][0] == 487
    success = await business_dtls.check(controlling=True, nominate=True)
    assert success.message_class == stun.Class.RESPONSE
    assert success.check_message_integrity(business_dtls.peer_pwd.encode())
    assert peer.ice is not None and peer.ice.nominated == ("127.0.0.1", business_dtls.port)
    await business_dtls.dtls_handshake()
    await business_dtls.send_tone(75)
    await asyncio.sleep(0.2)
    report = await peer.close()
    assert report.dtls_handshake_ms is not None and report.failure is None
    assert report.packets_received == 75 and report.auth_failures == 0
    assert report.heard_hz is not None and abs(report.heard_hz - BUSINESS_HZ) < 3
    assert report.role_conflicts == 1 and report.stun_requests == 2
    heard = business_dtls.heard_hz()
    assert heard is not None and abs(heard - PEER_HZ) < 3


async def test_no_business_media_at_start_ends_the_call(business_sdes: BusinessEnd) -> None:
    reasons: list[str] = []
    peer = await MediaPeer(SrtpMode.SDES, timeouts=MediaTimeouts(start_s=0.3, mid_call_s=10),
                           on_media_timeout=reasons.append).open()
    peer.accept_answer(business_sdes.answer(peer.offer()))
    peer.start()
    await asyncio.wait_for(peer.ended.wait(), 10)
    report = await peer.close()
    assert reasons == ["no business media 0.3 s after ACK"] and report.ended_by == reasons[0]
    assert report.packets_sent == 0


async def test_business_media_stopping_mid_call_ends_the_call(business_sdes: BusinessEnd) -> None:
    reasons: list[str] = []
    peer = await MediaPeer(SrtpMode.SDES, timeouts=MediaTimeouts(start_s=10, mid_call_s=0.4),
                           on_media_timeout=reasons.append).open()
    peer.accept_answer(business_sdes.answer(peer.offer()))
    peer.start()
    await business_sdes.send_tone(5)
    await asyncio.wait_for(peer.ended.wait(), 10)
    report = await peer.close()
    assert reasons == ["no business media for 0.4 s mid-call"]
    assert report.packets_received == 5

"""G.711 for the numbers with additional_codecs: mu-law both ways, Meta's offer with PCMU after
Opus, a PCMU answer accepted only where PCMU was offered, and the plain business side on PCMU
with its tone and RFC 4733 DTMF both ways."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from lab.media.g711 import PCMU_RATE, mu_law, mu_law_decode
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import LocalMedia, SdpError, SrtpMode, build_sdp, check_remote, parse_sdp
from lab.media.srtp import new_master_key
from lab.media.tone import ToneGenerator, dominant_frequency


def test_mu_law_round_trip_keeps_the_tone_and_the_standard_codes() -> None:
    pcm = ToneGenerator(440.0, PCMU_RATE).frame(PCMU_RATE)
    samples = np.frombuffer(pcm, dtype="<i2")
    decoded = np.frombuffer(mu_law_decode(mu_law(samples)), dtype="<i2")
    assert len(mu_law(samples)) == PCMU_RATE  # one byte per sample
    assert int(np.max(np.abs(decoded.astype(np.int32) - samples))) < 400  # ~3 % of full scale at 9830
    heard = dominant_frequency(decoded.astype("<i2").tobytes(), PCMU_RATE)
    assert heard is not None and abs(heard - 440.0) < 1
    # G.711's table: 0xFF and 0x7F are the two zeros, 0x00 the most negative, 0x80 the most positive
    assert list(np.frombuffer(mu_law_decode(bytes([0xFF, 0x7F, 0x00, 0x80])), dtype="<i2")) == [
        0, 0, -32124, 32124]
    assert mu_law(np.array([0], dtype=np.int16)) == b"\xff"


def test_meta_offers_pcmu_after_opus_and_accepts_a_pcmu_answer_only_then() -> None:
    key = new_master_key()
    offer = build_sdp(LocalMedia(SrtpMode.SDES, "127.0.0.1", 4000, master_key=key,
                                 g711=("PCMU",)), offer=True)
    assert "m=audio 4000 RTP/SAVP 111 0 126" in offer and "a=rtpmap:0 PCMU/8000" in offer
    answer = offer.replace("RTP/SAVP 111 0 126", "RTP/SAVP 0 126").replace(
        "a=rtpmap:111 opus/48000/2\r\n", "")
    remote = parse_sdp(answer)
    check_remote(remote, SrtpMode.SDES, offer=False, g711=("PCMU",))
    with pytest.raises(SdpError, match="no opus/48000"):
        check_remote(remote, SrtpMode.SDES, offer=False)  # the number has no G.711 at Meta


def test_the_peer_plays_pcmu_only() -> None:
    with pytest.raises(ValueError, match="PCMU only"):
        MediaPeer(SrtpMode.SDES, g711=("PCMA",))


async def test_pcmu_business_sides_hear_each_other_and_their_dtmf() -> None:
    offerer = await PlainRtpPeer(tone_hz=440.0, codec="PCMU").open()
    answerer = await PlainRtpPeer(tone_hz=700.0, codec="PCMU").open()
    try:
        offer = offerer.sdp()
        assert "RTP/AVP 0 126" in offer and "opus" not in offer
        offerer.accept(answerer.answer(offer))
        with pytest.raises(SdpError, match="no PCMU/8000"):
            PlainRtpPeer(codec="PCMU").accept(offer.replace("PCMU/8000", "PCMA/8000"))
        offerer.send_dtmf("4#")
        answerer.send_dtmf("07")
        offerer.start()
        answerer.start()
        await asyncio.sleep(1.6)
    finally:
        heard_by_offerer = await offerer.close()
        heard_by_answerer = await answerer.close()
    for report, wanted_hz, digits in ((heard_by_offerer, 700.0, "07"),
                                      (heard_by_answerer, 440.0, "4#")):
        assert report.heard_hz is not None and abs(report.heard_hz - wanted_hz) < 2
        assert report.dtmf_received == digits
        assert report.packets_lost == 0 and report.packets_received > 50

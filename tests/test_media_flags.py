"""The rtpengine flags per leg: Meta gets exactly the profile its number is set to, FreeSWITCH RTP."""

from __future__ import annotations

import pytest

from kemi.media_flags import (
    COMMON,
    RTPENGINE_SUITES,
    MediaFlagsError,
    NumberMedia,
    rtpengine_suite,
    toward_freeswitch,
    toward_meta_answer,
    toward_meta_offer,
)
from siteconfig.controller import SDES_SUITES

DTLS = NumberMedia("DTLS")
SDES = NumberMedia("SDES", ("AES_CM_128_HMAC_SHA1_80",))


def flags(text: str) -> list[str]:
    items = text.split()
    assert items[:len(COMMON)] == list(COMMON)  # every leg: SDP addresses trusted, rtpengine's own
    return items[len(COMMON):]


def test_bic_offer_toward_a_dtls_number() -> None:
    assert flags(toward_meta_offer(DTLS)) == [
        "UDP/TLS/RTP/SAVPF", "ICE=force", "SDES-off", "rtcp-mux-offer", "rtcp-mux-require"]


def test_bic_offer_toward_an_sdes_number_offers_its_suites_only() -> None:
    items = flags(toward_meta_offer(SDES))
    assert items[:5] == ["RTP/SAVP", "ICE=remove", "DTLS=off", "rtcp-mux-offer", "rtcp-mux-require"]
    turned_off = {i.removeprefix("SDES-no-") for i in items[5:]}
    assert turned_off == set(RTPENGINE_SUITES) - {"AES_CM_128_HMAC_SHA1_80"}
    assert "NULL_HMAC_SHA1_80" in turned_off  # never an unencrypted suite toward Meta


def test_two_suites_in_freeswitch_spelling() -> None:
    number = NumberMedia("SDES", ("AES_CM_256_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"))
    items = flags(toward_meta_offer(number))
    assert "SDES-no-AES_256_CM_HMAC_SHA1_80" not in items
    assert "SDES-no-AES_CM_128_HMAC_SHA1_80" not in items
    assert "SDES-no-AES_CM_128_HMAC_SHA1_32" in items


@pytest.mark.parametrize("suite", SDES_SUITES)
def test_every_suite_the_site_config_takes_is_one_rtpengine_knows(suite: str) -> None:
    assert rtpengine_suite(suite) in RTPENGINE_SUITES


@pytest.mark.parametrize("number", [DTLS, SDES])
def test_uic_answer_toward_meta_keeps_meta_s_profile(number: NumberMedia) -> None:
    assert flags(toward_meta_answer(number)) == []  # rtpengine answers in the offer's profile


@pytest.mark.parametrize("inside, profile", [("RTP", "RTP/AVP"), ("SDES", "RTP/SAVP")])
def test_toward_freeswitch(inside: str, profile: str) -> None:
    assert flags(toward_freeswitch(inside)) == [profile, "ICE=remove", "DTLS=off", "rtcp-mux-demux"]


@pytest.mark.parametrize("bad", [
    lambda: toward_meta_offer(NumberMedia("ZRTP")),
    lambda: toward_meta_answer(NumberMedia("none")),
    lambda: toward_meta_offer(NumberMedia("SDES", ("AES_CM_999",))),
    lambda: toward_meta_offer(NumberMedia("SDES", ())),
    lambda: toward_freeswitch("DTLS"),
])
def test_unknown_settings_are_refused_not_guessed(bad: object) -> None:
    with pytest.raises(MediaFlagsError):
        bad()  # type: ignore[operator]

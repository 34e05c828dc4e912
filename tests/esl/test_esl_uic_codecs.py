"""A UIC answer keeps a G.711 number's calls G.711 end to end; every other number answers Opus."""

from __future__ import annotations

from esl.media import uic_codecs, uic_variables
from siteconfig.controller import MediaSettings, NumberSettings

NUMBER = "+15550100001"


def test_an_opus_only_number_answers_from_the_site_list_in_meta_s_order() -> None:
    variables = dict(uic_variables(NumberSettings(business_number=NUMBER, srtp_mode="SDES"),
                                   MediaSettings(), {}))
    assert variables["absolute_codec_string"] == "OPUS,PCMU,PCMA"
    assert "rtp_codec_negotiation" not in variables  # the profile's generous: Meta's Opus


def test_a_g711_number_answers_g711_first_and_greedy() -> None:
    number = NumberSettings(business_number=NUMBER, srtp_mode="RTP", meta_srtp_mode="DTLS",
                            additional_codecs=("PCMU",))
    variables = dict(uic_variables(number, MediaSettings(), {}))
    assert variables["absolute_codec_string"] == "PCMU,OPUS,PCMA"
    assert variables["rtp_codec_negotiation"] == "greedy"


def test_the_number_s_order_comes_first_and_nothing_twice() -> None:
    number = NumberSettings(business_number=NUMBER, srtp_mode="SDES",
                            additional_codecs=("PCMA", "PCMU"))
    codecs, negotiation = uic_codecs(number, MediaSettings(codecs=("OPUS", "PCMU")))
    assert codecs == "PCMA,PCMU,OPUS"
    assert negotiation == [("rtp_codec_negotiation", "greedy")]

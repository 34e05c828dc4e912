"""kemi/sdp_codecs.py: what of a business offer may go to Meta (anchor = rtpengine, BIC)."""

from __future__ import annotations

import json
import tomllib

import pytest

from kemi.sdp_codecs import audio_encodings, toward_meta
from kemi.settings import settings_from_dict
from lab.edge import EXAMPLE_CONFIG
from provisioning.render import edge_settings
from siteconfig.model import SiteConfig


def offer(m_line: str, *attributes: str) -> str:
    return "\r\n".join(["v=0", "o=FreeSWITCH 1 2 IN IP4 127.0.0.1", "s=FreeSWITCH",
                        "c=IN IP4 127.0.0.1", "t=0 0", m_line, *attributes, ""])


STOCK_FREESWITCH = offer(
    "m=audio 24572 RTP/AVP 102 0 8 9 101 100",
    "a=rtpmap:102 opus/48000/2", "a=fmtp:102 useinbandfec=1; maxplaybackrate=48000",
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/48000", "a=fmtp:101 0-16",
    "a=rtpmap:100 telephone-event/8000", "a=fmtp:100 0-16", "a=ptime:20")


def test_a_stock_freeswitch_offer_keeps_opus_and_one_telephone_event_at_8000() -> None:
    choice = toward_meta(STOCK_FREESWITCH)
    assert choice.keep == ("102", "100")
    assert choice.dropped == ("0 pcmu/8000", "8 pcma/8000", "9 g722/8000",
                              "101 telephone-event/48000")
    assert choice.voice


@pytest.mark.parametrize(("enabled", "keep"), [
    ((), ("102", "100")),
    (("PCMU",), ("102", "0", "100")),
    (("PCMA",), ("102", "8", "100")),
    (("PCMU", "PCMA"), ("102", "0", "8", "100")),
])
def test_g711_is_kept_only_when_the_number_has_it_at_meta(enabled: tuple[str, ...],
                                                          keep: tuple[str, ...]) -> None:
    assert toward_meta(STOCK_FREESWITCH, enabled).keep == keep


def test_an_offer_meta_already_takes_needs_no_cut() -> None:
    choice = toward_meta(offer("m=audio 4000 RTP/AVP 111 126", "a=rtpmap:111 opus/48000/2",
                               "a=rtpmap:126 telephone-event/8000"))
    assert choice.keep == ("111", "126") and choice.dropped == () and choice.voice


def test_static_g711_without_rtpmap_is_named_by_rfc_3551() -> None:
    choice = toward_meta(offer("m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000"),
                         ("PCMA",))
    assert choice.keep == ("8", "101") and choice.dropped == ("0 pcmu/8000",)


@pytest.mark.parametrize("sdp", [
    offer("m=audio 4000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000"),  # G.711 only
    offer("m=audio 4000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"),  # DTMF only
    offer("m=video 4000 RTP/AVP 96", "a=rtpmap:96 VP8/90000"),  # no audio stream
    "",
])
def test_nothing_meta_plays_means_no_voice(sdp: str) -> None:
    assert not toward_meta(sdp).voice


def test_two_telephone_events_at_8000_keep_the_first() -> None:
    choice = toward_meta(offer("m=audio 4000 RTP/AVP 111 100 101", "a=rtpmap:111 opus/48000/2",
                               "a=rtpmap:100 telephone-event/8000",
                               "a=rtpmap:101 telephone-event/8000"))
    assert choice.keep == ("111", "100") and choice.dropped == ("101 telephone-event/8000",)


def test_only_the_first_audio_stream_is_read_and_case_does_not_matter() -> None:
    sdp = offer("m=audio 4000 RTP/AVP 96 97", "a=rtpmap:96 OPUS/48000/2",
                "a=rtpmap:97 telephone-event/8000", "m=audio 4002 RTP/AVP 98",
                "a=rtpmap:98 opus/48000/2")
    assert audio_encodings(sdp) == [("96", "opus/48000"), ("97", "telephone-event/8000")]
    assert toward_meta(sdp).keep == ("96", "97")


@pytest.mark.parametrize("pt", ["abc", "1000", "128", "\uff11\uff11\uff11"])
def test_a_payload_type_that_is_not_one_is_never_kept(pt: str) -> None:
    """Its id would go to sdpops: only 0..127 in ASCII digits."""
    choice = toward_meta(offer(f"m=audio 4000 RTP/AVP {pt} 111", f"a=rtpmap:{pt} opus/48000/2",
                               "a=rtpmap:111 opus/48000/2"))
    assert choice.keep == ("111",) and choice.dropped == (f"{pt} unknown",)


def test_opus_at_another_rate_is_not_opus_at_48000() -> None:
    assert not toward_meta(offer("m=audio 4000 RTP/AVP 96", "a=rtpmap:96 opus/16000/1")).voice


def test_each_number_keeps_the_g711_its_site_config_enables() -> None:
    """From the site config through `provision render`'s edge settings into the edge: PCMU stays
    in the offer to Meta for the number with pcmu in additional_codecs, and only for it."""
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw["numbers"] = [
        {"business_number": "+15550100001", "phone_number_id": "100000000000001"},
        {"business_number": "+15550100002", "phone_number_id": "100000000000002",
         "additional_codecs": ["pcmu"]},
    ]
    settings = settings_from_dict(json.loads(json.dumps(edge_settings(SiteConfig.model_validate(raw)))))
    opus_only, with_pcmu = settings.numbers["15550100001"], settings.numbers["15550100002"]
    assert opus_only.additional_codecs == () and with_pcmu.additional_codecs == ("PCMU",)
    assert toward_meta(STOCK_FREESWITCH, opus_only.additional_codecs).keep == ("102", "100")
    assert toward_meta(STOCK_FREESWITCH, with_pcmu.additional_codecs).keep == ("102", "0", "100")

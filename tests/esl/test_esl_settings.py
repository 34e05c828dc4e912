"""Settings validation, routing, media variables and forwarded-header reading."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from esl.event import Event
from esl.media import bic_codecs, dial_variables, multiset_argument, srtp_variables
from esl.routing import choose_route
from esl.whatsapp_call import read_whatsapp_call
from siteconfig.controller import ControllerSettings, NumberSettings, SettingsError, load_settings


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"numbers": [{"business_number": "15551234567"}]}, "business_number"),
        ({"numbers": [{"business_number": "+15551234567", "srtp_mode": "ZRTP"}]}, "srtp_mode"),
        (
            {"numbers": [{"business_number": "+15551234567", "sdes_suites": ["ROT13"]}]},
            "unknown SDES suites",
        ),
        (
            {"numbers": [{"business_number": "+15551234567"}, {"business_number": "+15551234567"}]},
            "listed twice",
        ),
        ({"media": {"codecs": ["PCMU", "OPUS"]}}, "OPUS must come first"),
        ({"media": {"media_timeout_ms": 20000}}, "media_timeout_ms"),
        ({"routes": [{"name": "x", "target": {"action": "bridge"}}]}, "needs a destination"),
        (
            {"routes": [{"name": "x", "target": {"action": "bridge", "destination": "${x}"}}]},
            "must not contain",
        ),
        ({"routes": [{"name": "a|b", "target": {"action": "park"}}]}, "name"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_invalid_settings_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ControllerSettings.model_validate(data)


def test_load_settings_reads_esl_table_and_keeps_password_secret(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nname = "x"\n[esl.freeswitch]\npassword = "hunter2"\nport = 8022\n'
        '[[esl.numbers]]\nbusiness_number = "+15551234567"\nsrtp_mode = "SDES"\n'
    )
    settings = load_settings(path)
    assert settings.freeswitch.port == 8022
    assert settings.number("+15551234567") is not None
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("content", "message"),
    [("not = [toml", "not valid TOML"), ("[esl]\nlinger_s = 0\n", "linger_s")],
)
def test_load_settings_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(SettingsError, match=message) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_missing_settings_file() -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(Path("/nonexistent/esl.toml"))


def test_srtp_variables_per_mode() -> None:
    sdes = NumberSettings(
        business_number="+15551234567",
        srtp_mode="SDES",
        sdes_suites=("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"),
    )
    assert srtp_variables(sdes, "inbound") == [
        ("rtp_secure_media", "mandatory:AES_CM_128_HMAC_SHA1_80:AES_CM_128_HMAC_SHA1_32"),
        ("rtp_secure_media_inbound", "mandatory:AES_CM_128_HMAC_SHA1_80:AES_CM_128_HMAC_SHA1_32"),
    ]
    dtls = NumberSettings(business_number="+15551234567", srtp_mode="DTLS")
    assert srtp_variables(dtls, "inbound") == []
    assert srtp_variables(dtls, "outbound") == [("media_webrtc", "true"), ("rtp_use_dtls", "true"),
                                                ("sdp_udp_tls_rtp_savpf", "true")]


def test_bic_codecs_are_opus_plus_the_numbers_g711() -> None:
    opus_only = NumberSettings(business_number="+15551234567")
    assert bic_codecs(opus_only) == "OPUS"
    with_g711 = NumberSettings(business_number="+15551234567", additional_codecs=("PCMA", "PCMU"))
    assert bic_codecs(with_g711) == "OPUS,PCMA,PCMU"
    with pytest.raises(ValidationError):
        NumberSettings(business_number="+15551234567", additional_codecs=("G729",))  # type: ignore[arg-type]


def test_behind_rtpengine_a_bic_offer_adds_pcmu_for_its_telephone_event_at_8000() -> None:
    """Stock FreeSWITCH offers telephone-event at its codecs' clock rates only: PCMU brings
    /8000, which the edge keeps while it removes PCMU (a number without G.711 at Meta)."""
    anchored = NumberSettings(business_number="+15551234567", srtp_mode="RTP",
                              meta_srtp_mode="DTLS")
    assert bic_codecs(anchored) == "OPUS,PCMU"
    with_pcma = anchored.model_copy(update={"additional_codecs": ("PCMA",)})
    assert bic_codecs(with_pcma) == "OPUS,PCMA"  # an 8000 Hz codec already: nothing added


def test_multiset_and_dial_variables_refuse_expansion_and_delimiters() -> None:
    assert multiset_argument([("a", "1"), ("b", "x:y")]) == "^^|a=1|b=x:y"
    assert dial_variables([("a", "1,2")]) == "{a=1\\,2}"
    with pytest.raises(ValueError, match="must not contain"):
        multiset_argument([("a", "${uuid_kill(x)}")])
    with pytest.raises(ValueError, match=r"'\|'"):
        multiset_argument([("a", "p|q")])


def channel_data(**headers: str) -> Event:
    base = {
        "Event-Name": "CHANNEL_DATA",
        "Unique-ID": "u1",
        "Caller-Caller-ID-Number": "+15550200002",
        "Caller-Destination-Number": "+15550100001",
    }
    base.update(headers)
    return Event(base)


def test_forwarded_headers_are_read_case_insensitively() -> None:
    call = read_whatsapp_call(
        channel_data(
            **{
                "variable_sip_h_x-wa-meta-wacid": "wacid.1",
                "variable_sip_h_X-WA-BUSINESS-NUMBER": "+15550100009",
                "variable_sip_h_X-Wa-Tgrp": "wacall",
                "variable_sip_h_X-WA-Param-Region": "eu",
                "variable_sip_h_X-WA-Meta-Deeplink-Payload": "a\nb",
            }
        )
    )
    assert call.wacid == "wacid.1"
    assert call.business_number == "+15550100009"
    assert call.tgrp == "wacall"
    assert call.request_uri_params == {"region": "eu"}
    assert call.deeplink_payload == "ab"
    assert call.user_number == "+15550200002"


def test_business_number_falls_back_to_destination() -> None:
    assert read_whatsapp_call(channel_data()).business_number == "+15550100001"


def test_first_matching_route_wins_and_globs_apply_to_payloads() -> None:
    settings = ControllerSettings.model_validate(
        {
            "routes": [
                {"name": "deeplink", "match": {"deeplink_payload": "vip-?"}, "target": {"action": "park"}},
                {
                    "name": "number",
                    "match": {"business_number": "+15550100001"},
                    "target": {"action": "bridge", "destination": "user/1"},
                },
            ]
        }
    )
    vip = read_whatsapp_call(channel_data(**{"variable_sip_h_X-WA-Meta-Deeplink-Payload": "vip-7"}))
    other = read_whatsapp_call(channel_data(**{"variable_sip_h_X-WA-Meta-Deeplink-Payload": "v"}))
    nobody = read_whatsapp_call(channel_data(**{"Caller-Destination-Number": "+15550000000"}))
    assert (route := choose_route(settings.routes, vip)) is not None and route.name == "deeplink"
    assert (route := choose_route(settings.routes, other)) is not None and route.name == "number"
    assert choose_route(settings.routes, nobody) is None

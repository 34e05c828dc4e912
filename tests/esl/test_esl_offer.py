"""The SRTP key exchange read from Meta's offer, and the refusal of a mismatch (pure)."""

from __future__ import annotations

from esl.event import Event
from esl.offer import offered_srtp_mode
from esl.uic import MISMATCH_CAUSE, plan_uic
from esl.whatsapp_call import read_whatsapp_call
from siteconfig.controller import ControllerSettings, NumberSettings, Route, RouteTarget

DTLS_OFFER = """v=0\r
o=- 1 1 IN IP4 157.240.1.1\r
s=-\r
c=IN IP4 157.240.1.1\r
t=0 0\r
a=ice-lite\r
m=audio 3480 UDP/TLS/RTP/SAVPF 111 126\r
a=rtpmap:111 opus/48000/2\r
a=rtpmap:126 telephone-event/8000\r
a=fingerprint:sha-256 AB:CD\r
a=setup:actpass\r
"""
SDES_OFFER = """v=0\r
o=- 1 1 IN IP4 157.240.1.1\r
s=-\r
c=IN IP4 157.240.1.1\r
t=0 0\r
m=audio 3480 RTP/SAVP 111 126\r
a=rtpmap:111 opus/48000/2\r
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r
"""
NUMBER = "+15550100001"


def test_offer_modes() -> None:
    assert offered_srtp_mode(DTLS_OFFER) == "DTLS"
    assert offered_srtp_mode(SDES_OFFER) == "SDES"
    assert offered_srtp_mode(SDES_OFFER.replace("RTP/SAVP", "RTP/AVP").replace("a=crypto", "a=x")) == "RTP"
    # a session-level fingerprint on the legacy profile is DTLS too
    fingerprint = "a=fingerprint:sha-256 AB:CD\r\n"
    legacy = DTLS_OFFER.replace("UDP/TLS/RTP/SAVPF", "RTP/SAVPF").replace(fingerprint, "")
    assert offered_srtp_mode(legacy.replace("t=0 0\r\n", "t=0 0\r\n" + fingerprint)) == "DTLS"
    assert offered_srtp_mode(None) is None and offered_srtp_mode("v=0\r\n") is None


def settings(mode: str) -> ControllerSettings:
    return ControllerSettings(
        numbers=(NumberSettings(business_number=NUMBER, srtp_mode=mode),),  # type: ignore[arg-type]
        routes=(Route(name="all", target=RouteTarget(action="park")),))


def channel_data(offer: str) -> Event:
    return Event({"Event-Name": "CHANNEL_DATA", "Unique-ID": "u-1",
                  "Caller-Destination-Number": NUMBER, "variable_switch_r_sdp": offer})


def test_mismatch_is_refused_with_488_and_named() -> None:
    plan = plan_uic(read_whatsapp_call(channel_data(SDES_OFFER)), settings("DTLS"))
    assert plan.hangup_cause == MISMATCH_CAUSE == "INCOMPATIBLE_DESTINATION"
    assert plan.diagnosis_code == "srtp_offer_sdes_number_dtls"
    assert [app for app, _ in plan.apps] == ["multiset"]  # never answered
    assert "sip_rh_Warning=305 wa-esl" in plan.apps[0][1]
    assert plan.srtp_mode == "DTLS"
    reverse = plan_uic(read_whatsapp_call(channel_data(DTLS_OFFER)), settings("SDES"))
    assert reverse.diagnosis_code == "srtp_offer_dtls_number_sdes"


def test_matching_offer_is_answered() -> None:
    for offer, mode in ((SDES_OFFER, "SDES"), (DTLS_OFFER, "DTLS")):
        plan = plan_uic(read_whatsapp_call(channel_data(offer)), settings(mode))
        assert plan.hangup_cause is None and ("answer", "") in plan.apps

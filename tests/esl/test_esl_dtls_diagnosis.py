"""A failed DTLS association gets its own CDR diagnosis, read from the hangup event alone."""

from __future__ import annotations

from esl.cdr import record_from_hangup
from esl.diagnosis import DTLS_FAILED
from esl.event import Event


def hangup(**variables: str) -> Event:
    headers = {"Event-Name": "CHANNEL_HANGUP_COMPLETE", "Unique-ID": "u-1",
               "Hangup-Cause": "DESTINATION_OUT_OF_ORDER", "Call-Direction": "inbound",
               "Caller-Channel-Answered-Time": "1764410000000000",
               "variable_wa_direction": "uic", "variable_sip_hangup_disposition": "send_bye"}
    headers.update({f"variable_{name}": value for name, value in variables.items()})
    return Event(headers)


def test_dtls_leg_ended_by_freeswitch_without_keys_is_a_dtls_failure() -> None:
    assert record_from_hangup(hangup(wa_srtp_mode="DTLS")).diagnosis == DTLS_FAILED
    assert record_from_hangup(hangup(rtp_use_dtls="true")).diagnosis == DTLS_FAILED  # a BIC


def test_other_out_of_order_endings_are_not_called_dtls_failures() -> None:
    keyed = hangup(wa_srtp_mode="DTLS", rtp_has_crypto="AES_CM_128_HMAC_SHA1_80")
    assert record_from_hangup(keyed).diagnosis != DTLS_FAILED  # SRTP was up: not the handshake
    assert record_from_hangup(hangup(wa_srtp_mode="SDES")).diagnosis != DTLS_FAILED
    remote = hangup(wa_srtp_mode="DTLS", sip_hangup_disposition="recv_bye")
    assert record_from_hangup(remote).diagnosis != DTLS_FAILED  # Meta ended it

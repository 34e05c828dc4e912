"""DTMF both ways through the edge and rtpengine ([media] anchor = "rtpengine") on any
FreeSWITCH, stock included: WhatsApp's media peer behind Meta's side (RFC 4733 events, Meta's
telephone-event/8000 only), FreeSWITCH's plain profile on the other side of rtpengine.

Business-initiated calls are the one that needed something: a stock FreeSWITCH offers one
telephone-event per codec clock rate, so OPUS alone gives telephone-event/48000 only, which the
edge drops (kemi/sdp_codecs.py) and rtpengine 10.5 cannot turn into /8000; with PCMU after OPUS
in the offer (esl/media.py, bic_codecs) it offers /8000 too, the edge keeps that one and drops
PCMU and /48000, and Meta's answer carries telephone-event/8000.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from esl.cdr import srtp_text
from lab.bundle import BundleLab
from lab.media.freeswitch_call import MediaCall
from lab.media.freeswitch_patch import is_patched
from lab.media.sdp import SrtpMode
from lab.media_section import MEDIA_NUMBERS, _business_initiated, _user_initiated, media_overrides
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing
from tests.e2e.conftest import skip_without_freeswitch

pytestmark = skip_without_freeswitch()
log = logging.getLogger(__name__)

WHATSAPP_DIGIT = "7"
BUSINESS_DIGIT, BUSINESS_MS = "5", 200


@pytest.fixture(scope="module")
def anchored(tmp_path_factory: pytest.TempPathFactory, e2e_dtls_pem: Path) -> Iterator[BundleLab]:
    missing = freeswitch_missing()
    if missing is not None:
        pytest.skip(missing)
    if shutil.which("rtpengine") is None:
        pytest.skip("no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
    numbers, routes = media_overrides()
    bundle = BundleLab(tmp_path_factory.mktemp("dtmf"), dtls_pem=e2e_dtls_pem, overrides={
        "numbers": numbers, "esl": {"routes": routes}, "media": {"anchor": "rtpengine"}})
    try:
        bundle.start()
        yield bundle
    finally:
        bundle.stop()


def telephone_events(sdp: str) -> list[str]:
    """The clock rate of each telephone-event rtpmap line."""
    return re.findall(r"^a=rtpmap:\d+ telephone-event/(\d+)", sdp, re.MULTILINE)


def business_duration_range() -> range:
    """RFC 4733 duration (the field WhatsApp reads in 8 kHz units) of FreeSWITCH's 200 ms digit:
    1600 with patches/freeswitch/0002 (sdp_telephone_event_rate); a stock FreeSWITCH counts it in
    the audio codec's 48 kHz clock, six times that (9600; WhatsApp still gets the digit)."""
    expected = 8 * BUSINESS_MS * (1 if is_patched(freeswitch_binary()) else 6)
    return range(expected * 3 // 4, expected * 5 // 4 + 1)


@pytest.mark.parametrize("who", ["user", "business"], ids=["uic", "bic"])
@pytest.mark.parametrize("mode", [SrtpMode.SDES, SrtpMode.DTLS], ids=["sdes", "dtls"])
def test_dtmf_both_ways_through_rtpengine(anchored: BundleLab, tmp_path: Path, who: str,
                                          mode: SrtpMode) -> None:
    play = _user_initiated if who == "user" else _business_initiated
    call: MediaCall = asyncio.run(play(anchored, mode, tmp_path, dtmf=WHATSAPP_DIGIT,
                                       business_dtmf=f"{BUSINESS_DIGIT}@{BUSINESS_MS}"))
    assert call.sip_status == 200 and call.report.failure is None, call.line()
    if who == "business":  # Meta's offer: telephone-event/8000 alone, beside Opus
        assert telephone_events(call.offer) == ["8000"], call.offer
        assert re.search(r"^a=rtpmap:\d+ (?i:opus)/48000", call.offer, re.MULTILINE), call.offer
        assert not re.search(r"(?i)^a=rtpmap:\d+ pcm[ua]/", call.offer, re.MULTILINE), call.offer
    # WhatsApp's digit reached FreeSWITCH (a DTMF event on the channel, over ESL)
    assert call.business_dtmf == WHATSAPP_DIGIT, (call.business_dtmf, call.line())
    # FreeSWITCH's digit reached WhatsApp as one RFC 4733 event, ended
    received = call.report.dtmf_received
    assert [(e.digit, e.ended) for e in received] == [(BUSINESS_DIGIT, True)], received
    assert received[0].duration in business_duration_range(), received
    # several packets, the last one within the digit's length (on 1.11.1 stock through
    # rtpengine a digit's packets came within 80-100 ms)
    assert 0 < received[0].last_at - received[0].first_at <= 0.6, received
    log.info("%s %s: FreeSWITCH got %r, WhatsApp got %s", who, mode.value, call.business_dtmf,
             received)
    number = MEDIA_NUMBERS[mode.value][0]
    record = anchored.cdr(call_uuid=call.call_uuid) if call.call_uuid else None
    assert record is not None and record.business_number == number, record
    # the CDR says what Meta's side used and that rtpengine anchored it (FreeSWITCH: plain RTP)
    assert (record.srtp_mode, record.freeswitch_srtp_mode) == (mode.value, "RTP"), record
    assert srtp_text(record) == f"{mode.value} (rtpengine)"

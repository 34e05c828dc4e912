"""Real media through a real FreeSWITCH: the peer plays WhatsApp's media side, a UDP user
agent plays the edge, wa-esl answers (SRTP per number, silence first) and routes to a tone.
FreeSWITCH plays 440 Hz, WhatsApp 1000 Hz; each side must name the other's tone.

DTLS needs a FreeSWITCH built with patches/freeswitch/0001 (a build of the user's own, with the
patch marker: README, "FreeSWITCH patch"): stock FreeSWITCH never sends its ClientHello to an
ICE-lite peer, so on a stock one those tests are skipped with that reason."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from esl.controller import Controller
from esl.diagnosis import DTLS_FAILED
from esl.site import controller_settings
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate
from lab.media.freeswitch_call import (
    DTLS_NUMBER,
    FREESWITCH_TONE_HZ,
    PEER_TONE_HZ,
    SDES_NUMBER,
    bic_call,
    media_site,
    uic_call,
)
from lab.media.freeswitch_patch import is_patched
from lab.media.peer import MediaTimeouts
from lab.media.sdp import SrtpMode
from provisioning.freeswitch_binary import freeswitch_binary
from tests.esl.controller_fixtures import ended_by_wacid, running_controller

pytestmark = pytest.mark.needs_freeswitch  # skipped, and counted, without one

log = logging.getLogger(__name__)
FS_TONE_HZ = FREESWITCH_TONE_HZ


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreeswitchLab]:
    folder = tmp_path_factory.mktemp("media-switch")
    pem = dtls_certificate(tmp_path_factory.mktemp("media-dtls") / "dtls-srtp.pem")
    with FreeswitchLab(folder, media_site(FreeswitchPorts(), folder), pem) as lab:
        yield lab


@pytest.fixture
async def controller(switch: FreeswitchLab) -> AsyncIterator[Controller]:
    async with running_controller(controller_settings(switch.config)) as running:
        yield running


def heard(value: float | None, tone: float) -> bool:
    return value is not None and abs(value - tone) < 5


async def test_uic_sdes_audio_both_ways(switch: FreeswitchLab, controller: Controller,
                                        tmp_path: Path) -> None:
    call = await uic_call(switch, SrtpMode.SDES, SDES_NUMBER, tmp_path, hold_s=4)
    log.info("%s", call.line())
    report = call.report
    assert call.sip_status == 200 and call.bye_status == 200, call
    assert report.auth_failures == 0 and report.rtcp_auth_failures == 0
    assert heard(report.heard_hz, FS_TONE_HZ), call.line()
    assert heard(call.business_heard_hz, PEER_TONE_HZ), call.line()
    # media first: FreeSWITCH's silence reaches WhatsApp long before Meta's 20 s
    assert report.first_packet_after_ack_ms is not None and report.first_packet_after_ack_ms < 2000
    assert report.packets_received > 100 and report.packets_sent > 100


async def test_uic_dtls_audio_both_ways(switch: FreeswitchLab, controller: Controller,
                                        tmp_path: Path) -> None:
    require_patch()
    call = await uic_call(switch, SrtpMode.DTLS, DTLS_NUMBER, tmp_path, hold_s=4)
    log.info("%s", call.line())
    report = call.report
    assert call.sip_status == 200 and call.bye_status == 200, call
    assert report.failure is None and report.dtls_handshake_ms is not None, call.line()
    assert report.role_conflicts == 0  # CONTROLLING from its first check
    assert report.auth_failures == 0
    assert heard(report.heard_hz, FS_TONE_HZ), call.line()
    assert heard(call.business_heard_hz, PEER_TONE_HZ), call.line()
    assert report.packets_received > 100 and report.packets_sent > 100


def require_patch() -> None:
    """DTLS with an ICE-lite peer needs the patch: skipped, with the reason, on a stock one."""
    if not is_patched(freeswitch_binary()):
        pytest.skip(f"{freeswitch_binary()} is stock: DTLS numbers need patches/freeswitch/0001 "
                    "or the rtpengine anchor (stock FreeSWITCH sends no DTLS ClientHello to an "
                    "ICE-lite peer)")


@pytest.mark.parametrize("mode", [SrtpMode.SDES, SrtpMode.DTLS])
async def test_bic_audio_both_ways(switch: FreeswitchLab, controller: Controller, tmp_path: Path,
                                   mode: SrtpMode) -> None:
    if mode is SrtpMode.DTLS:
        require_patch()
    number = SDES_NUMBER if mode is SrtpMode.SDES else DTLS_NUMBER
    call, result = await bic_call(switch, mode, number, tmp_path, hold_s=4,
                                  settings=controller_settings(switch.config),
                                  business_tone_hz=FS_TONE_HZ)
    log.info("%s", call.line())
    report = call.report
    assert result.answered and call.sip_status == 200, (result, call)
    assert report.failure is None and report.auth_failures == 0, call.line()
    assert heard(report.heard_hz, FS_TONE_HZ), call.line()
    assert heard(call.business_heard_hz, PEER_TONE_HZ), call.line()
    if mode is SrtpMode.DTLS:
        assert report.dtls_handshake_ms is not None and report.role_conflicts == 0


def skip_without_dtmf_patch() -> None:
    if not is_patched(freeswitch_binary()):
        pytest.skip(f"{freeswitch_binary()} is stock: it offers telephone-event per codec rate "
                    "(patches/freeswitch/0002 gives 8000 Hz only)")


def rtpmaps(sdp: str) -> list[tuple[str, str, str]]:
    """(payload type, encoding, clock rate) of each a=rtpmap line."""
    return re.findall(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", sdp, re.MULTILINE)  # \r\n lines too


@pytest.mark.parametrize(("mode", "g711"), [(SrtpMode.SDES, ()), (SrtpMode.DTLS, ()),
                                            (SrtpMode.SDES, ("PCMU",))])
async def test_bic_offer_has_the_numbers_codecs_and_dtmf_at_8000_only(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path, mode: SrtpMode,
        g711: tuple[str, ...]) -> None:
    """Meta takes DTMF as telephone-event/8000 only and the codecs enabled on the number. Stock
    FreeSWITCH offers one telephone-event per codec rate (/48000 beside Opus) and counts the
    events it sends in Opus's 48 kHz clock; patches/freeswitch/0002 with wa-esl's
    sdp_telephone_event_rate=8000 offers /8000 alone and counts in 8 kHz units."""
    skip_without_dtmf_patch()
    if mode is SrtpMode.DTLS:
        require_patch()
    number = SDES_NUMBER if mode is SrtpMode.SDES else DTLS_NUMBER
    settings = controller_settings(switch.config)
    settings = settings.model_copy(update={"numbers": tuple(
        n.model_copy(update={"additional_codecs": g711}) for n in settings.numbers)})
    call, result = await bic_call(switch, mode, number, tmp_path, hold_s=3, settings=settings,
                                  business_tone_hz=FS_TONE_HZ, business_dtmf="5@200")
    log.info("%s; offer: %s", call.line(), rtpmaps(call.offer))
    assert result.answered and call.report.auth_failures == 0, call.line()
    maps = rtpmaps(call.offer)
    events = [(name, rate) for _, name, rate in maps if name == "telephone-event"]
    assert events == [("telephone-event", "8000")], f"needs patches/freeswitch/0002: {maps}"
    assert [name.upper() for _, name, _ in maps if name != "telephone-event"] == ["OPUS", *g711]
    m_line = re.search(r"^m=audio \d+ \S+ ([\d ]+)\r?$", call.offer, re.MULTILINE)
    assert m_line is not None and m_line.group(1).split() == [pt for pt, _, _ in maps], call.offer
    # FreeSWITCH's own DTMF toward WhatsApp: one digit of 200 ms, its duration field in 8 kHz
    # units (1600), not Opus's 48 kHz ones (9600), and about as long as its packets lasted
    received = call.report.dtmf_received
    assert [(e.digit, e.ended) for e in received] == [("5", True)], received
    assert 1200 <= received[0].duration <= 2000, received
    assert 0.1 <= received[0].last_at - received[0].first_at <= 0.6, received


@pytest.mark.parametrize(("offered", "number", "number_mode"),
                         [(SrtpMode.SDES, DTLS_NUMBER, "DTLS"), (SrtpMode.DTLS, SDES_NUMBER, "SDES")])
async def test_srtp_mode_mismatch_is_refused_with_488_and_a_diagnosis(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, offered: SrtpMode, number: str, number_mode: str) -> None:
    """Meta offers the mode set on its side; a number set otherwise here must not be answered
    (FreeSWITCH would, and the call would fail as silence): 488, Warning 305, CDR and log say
    which mismatch."""
    caplog.set_level(logging.INFO, logger="esl.uic")
    call = await uic_call(switch, offered, number, tmp_path, hold_s=3)
    assert call.sip_status == 488, call
    assert call.warning == (f'305 wa-esl "Incompatible media format: {offered.value} offered, '
                            f'number is {number_mode}"'), call
    assert call.report.packets_received == 0 and call.report.packets_sent == 0
    record = await ended_by_wacid(controller, call.wacid)
    assert record.hangup_cause == "INCOMPATIBLE_DESTINATION", record
    assert record.answer_at is None and record.srtp_mode == number_mode
    assert record.diagnosis is not None and record.diagnosis.startswith(
        f"SRTP mode mismatch: Meta offered {offered.value}"), record.diagnosis
    lines = [r.getMessage() for r in caplog.records if call.wacid in r.getMessage()]
    assert len(lines) == 1 and "SRTP mode mismatch" in lines[0], lines


async def test_uic_business_dtmf_counts_in_8000_hz(switch: FreeswitchLab, controller: Controller,
                                                   tmp_path: Path) -> None:
    """On user-initiated calls too (Meta offers telephone-event/8000 beside Opus 48000):
    FreeSWITCH's events toward WhatsApp count their duration in 8 kHz units (0002)."""
    skip_without_dtmf_patch()
    call = await uic_call(switch, SrtpMode.SDES, SDES_NUMBER, tmp_path, hold_s=3,
                          business_dtmf="7@200")
    received = call.report.dtmf_received
    assert [(e.digit, e.ended) for e in received] == [("7", True)], received
    assert 1200 <= received[0].duration <= 2000, f"needs patches/freeswitch/0002: {received}"


async def test_bic_183_with_sdp_is_not_answered(switch: FreeswitchLab, controller: Controller,
                                                tmp_path: Path) -> None:
    """A 183 with SDP before the 200 (Meta sends none, but a proxy or a future Meta may): the
    originate must report the call answered only at the 200, not at the early media."""
    call, result = await bic_call(switch, SrtpMode.SDES, SDES_NUMBER, tmp_path, hold_s=2,
                                  settings=controller_settings(switch.config),
                                  answer_after_s=2.0, business_tone_hz=FS_TONE_HZ)
    log.info("%s", call.line())  # WhatsApp's clock started at the 183
    assert result.answered, (result, call)
    assert call.status_at_result == 200, f"place_bic said answered while Meta had sent {call}"
    assert heard(call.report.heard_hz, FS_TONE_HZ), call.line()


async def test_rfc4733_dtmf_arrives_as_digits(switch: FreeswitchLab, controller: Controller,
                                              tmp_path: Path) -> None:
    call = await uic_call(switch, SrtpMode.SDES, SDES_NUMBER, tmp_path, hold_s=4, dtmf="1#9")
    assert call.report.auth_failures == 0
    assert call.business_dtmf == "1#9", call


async def test_wrong_fingerprint_ends_the_call_with_a_diagnosis(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path) -> None:
    """WhatsApp's SDP names a certificate it does not have: FreeSWITCH must refuse the DTLS
    association (no SRTP keys, no media either way) and end the call itself."""
    require_patch()
    log_start = switch.log.stat().st_size

    def wrong_fingerprint(offer: str) -> str:
        return re.sub(r"(a=fingerprint:sha-256 )(\S+)", lambda m: m.group(1) + "AB:" * 31 + "CD", offer)

    call = await uic_call(switch, SrtpMode.DTLS, DTLS_NUMBER, tmp_path, hold_s=15,
                          timeouts=MediaTimeouts(start_s=10, mid_call_s=10),
                          mutate_offer=wrong_fingerprint)
    log.info("%s", call.line())
    report = call.report
    assert call.sip_status == 200 and call.business_hung_up, call
    assert report.packets_received == 0 and report.packets_sent == 0, call.line()
    record = await ended_by_wacid(controller, call.wacid)
    assert record.hangup_cause == "DESTINATION_OUT_OF_ORDER", record
    assert "Fingerprint Verification Failed" in fs_log_since(switch, log_start)
    assert record.diagnosis == DTLS_FAILED, record


async def test_business_sending_no_media_is_ended_by_whatsapp(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path) -> None:
    """ICE fails (WhatsApp's SDP carries an ice-pwd its agent does not use, so every check of
    FreeSWITCH's gets 401): no DTLS, no business media, and WhatsApp's no-media limit ends the
    call with Meta's BYE, as Meta does after 20 s (3 s here)."""
    require_patch()

    def wrong_ice_pwd(offer: str) -> str:
        return re.sub(r"a=ice-pwd:\S+", "a=ice-pwd:" + "x" * 24, offer)

    call = await uic_call(switch, SrtpMode.DTLS, DTLS_NUMBER, tmp_path, hold_s=15,
                          timeouts=MediaTimeouts(start_s=3, mid_call_s=3), mutate_offer=wrong_ice_pwd)
    log.info("%s", call.line())
    report = call.report
    assert report.ended_by == "no business media 3 s after ACK", call.line()
    assert call.bye_status == 200 and not call.business_hung_up, call
    assert report.packets_sent == 0 and report.packets_received == 0
    assert report.dtls_handshake_ms is None and report.stun_requests > 0
    record = await ended_by_wacid(controller, call.wacid)
    assert record.hangup_cause == "NORMAL_CLEARING", record


def fs_log_since(switch: FreeswitchLab, offset: int) -> str:
    with switch.log.open("rb") as fs_log:
        fs_log.seek(offset)
        return fs_log.read().decode(errors="replace")



async def test_concurrent_calls_keep_their_own_media(switch: FreeswitchLab, controller: Controller,
                                                     tmp_path: Path) -> None:
    """Three calls at once (as a capacity run places them, without per-call observation): each
    WhatsApp side hears FreeSWITCH's tone on its own keys, none sees another call's packets."""
    calls = await asyncio.gather(*[
        uic_call(switch, SrtpMode.SDES, SDES_NUMBER, tmp_path, hold_s=3, observe=False)
        for _ in range(3)])
    for call in calls:
        assert call.sip_status == 200 and call.bye_status == 200, call
        assert call.report.auth_failures == 0, call.line()
        assert heard(call.report.heard_hz, FS_TONE_HZ), call.line()
        assert call.report.packets_received > 100

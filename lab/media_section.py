"""`make lab`'s media section: the four media flows (user- and business-initiated, SDES and
DTLS) through the whole bundle, with lab/media's peer playing WhatsApp's media side and audio
checked both ways.

User-initiated: Meta's INVITE carrying the peer's offer goes over TLS (the lab's stunnel) to the
edge, which challenges it (407, digest) and relays it to FreeSWITCH; the bundle's `wa-esl run`
answers (SRTP per number, silence first) and routes it to a tone; Meta hangs up. SIPp plays
Meta elsewhere in the lab but cannot carry an SDP made at run time, so `MetaUac` does it here.
Business-initiated: `wa-esl originate`, FreeSWITCH's gateway, the edge, the Meta stand-in (407
answered by the edge), then the WhatsApp user, played by `SipUas` with the peer's SDP in place
of the SIPp UAS; FreeSWITCH plays its tone and hangs up.

FreeSWITCH plays 440 Hz, WhatsApp 1000 Hz; a call passes when each side names the other's tone
and no SRTP packet failed authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esl.cdr import srtp_text
from lab.bundle import BundleLab
from lab.edge import LAB_PASSWORD, META_USER
from lab.media.freeswitch_call import (
    FREESWITCH_TONE_HZ,
    PEER_TONE_HZ,
    MediaCall,
    heard_in,
    record_read_stream,
    watch_dtmf,
)
from lab.media.peer import MediaPeer, MediaReport
from lab.media.sdp import SdpError, SrtpMode
from lab.media.sip_uas import SipUas
from lab.meta_standin import WHATSAPP_USER
from lab.meta_uac import MetaUac
from lab.processes import LabError

MEDIA_NUMBERS = {"SDES": ("+15550100018", "100000000000018"),
                 "DTLS": ("+15550100019", "100000000000019")}
"""Numbers the lab adds for its media calls; their routes play FreeSWITCH's tone."""
HOLD_S = 3.0  # media flows this long on each call
TONE_TOLERANCE_HZ = 5.0
SETTLE_S = 0.3  # FreeSWITCH closes the recording as the channel goes
TONE = f"tone_stream://%(1000,0,{FREESWITCH_TONE_HZ:g});loops=-1"


def media_overrides() -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """The media numbers and, per number, a route to FreeSWITCH's endless tone."""
    numbers = [{"business_number": number, "phone_number_id": number_id, "srtp_mode": mode}
               for mode, (number, number_id) in MEDIA_NUMBERS.items()]
    routes: list[dict[str, Any]] = [
        {"name": f"lab-media-{mode.lower()}", "match": {"business_number": number},
         "target": {"action": "ivr", "destination": f"playback {TONE}"}}
        for mode, (number, _) in MEDIA_NUMBERS.items()]
    return numbers, routes


@dataclass
class MediaOutcome:
    name: str
    passed: bool
    notes: list[str] = field(default_factory=list)
    detail: str = ""
    answered: bool = False  # what both /metrics endpoints count, heard or not


def _heard(value: float | None, tone: float) -> bool:
    return value is not None and abs(value - tone) < TONE_TOLERANCE_HZ


def _judge(call: MediaCall) -> str:
    """Why the call failed ("" when audio went both ways)."""
    report = call.report
    problems = []
    if call.sip_status != 200:
        problems.append(f"SIP final status {call.sip_status}")
    if report.failure:
        problems.append(report.failure)
    if report.auth_failures or report.rtcp_auth_failures:
        problems.append(f"{report.auth_failures} SRTP / {report.rtcp_auth_failures} SRTCP "
                        "authentication failures")
    if not _heard(report.heard_hz, FREESWITCH_TONE_HZ):
        problems.append(f"WhatsApp did not hear FreeSWITCH's {FREESWITCH_TONE_HZ:g} Hz")
    if not _heard(call.business_heard_hz, PEER_TONE_HZ):
        problems.append(f"FreeSWITCH did not hear WhatsApp's {PEER_TONE_HZ:g} Hz")
    return "; ".join(problems)


def _cdr_note(bundle: BundleLab, **which: str) -> str:
    try:
        record = bundle.cdr(timeout=5, **which)
    except LabError as error:
        return f"CDR: {error}"
    return (f"CDR {record.direction} {record.state}: cause {record.hangup_cause}, "
            f"route {record.route or '-'}, srtp {srtp_text(record)}")


async def _send_dtmf(bundle: BundleLab, peer: MediaPeer, call_uuid: str, dtmf: str,
                     business_dtmf: str) -> None:
    """Once the business's media reached WhatsApp: `dtmf` from WhatsApp as RFC 4733 events,
    `business_dtmf` (``uuid_send_dtmf`` syntax, e.g. ``5@200``) from FreeSWITCH."""
    if not (dtmf or business_dtmf):
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(peer.first_packet.wait(), HOLD_S)
    if dtmf:
        peer.send_dtmf(dtmf)
    if business_dtmf:
        await bundle.freeswitch.api_async(f"uuid_send_dtmf {call_uuid} {business_dtmf}")


async def _user_initiated(bundle: BundleLab, mode: SrtpMode, folder: Path, dtmf: str = "",
                          business_dtmf: str = "") -> MediaCall:
    """Meta's INVITE with the peer's offer through stunnel (TLS) to the edge, its 407 answered,
    relayed to FreeSWITCH, answered by wa-esl and routed to the tone; Meta's BYE after HOLD_S.
    `dtmf`/`business_dtmf`: digits each side sends (`_send_dtmf`); those FreeSWITCH reported
    are in the call's `business_dtmf`, WhatsApp's in its report's `dtmf_received`."""
    number = MEDIA_NUMBERS[mode.value][0]
    ports = bundle.edge.ports
    peer = await MediaPeer(mode, tone_hz=PEER_TONE_HZ).open()
    uac = await MetaUac(ports.meta_client, bundle.config.site.sip_domain, META_USER,
                        f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                        f"<sip:127.0.0.1:{ports.internal};r2=on;lr>").open()
    call = MediaCall(None, peer.report, wacid=f"wacid.labmedia{uuid.uuid4().hex[:16]}")
    events = await watch_dtmf(bundle.freeswitch, call) if dtmf else None
    try:
        response = await uac.invite(number, number[1:], LAB_PASSWORD, call.wacid,
                                    f"lab-media-{mode.value.lower()}", peer.offer())
        call.sip_status = response.status
        if response.status != 200:
            return call
        try:
            peer.accept_answer(response.body)
        except SdpError as error:
            peer.report.failure = f"answer refused: {error}"
            await uac.bye(call.wacid, 0)
            return call
        peer.start()
        record = await asyncio.to_thread(bundle.cdr, wacid=call.wacid, state="active", timeout=5)
        call.call_uuid = record.call_uuid
        call.recording = await record_read_stream(bundle.freeswitch, record.call_uuid,
                                                  folder / f"heard-{record.call_uuid}.wav")
        await _send_dtmf(bundle, peer, record.call_uuid, dtmf, business_dtmf)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(uac.remote_bye.wait(), HOLD_S)
        call.business_hung_up = uac.remote_bye.is_set()
        if not call.business_hung_up:
            call.bye_status = await uac.bye(call.wacid, round(HOLD_S))
    finally:
        call.report = await peer.close()
        await uac.close()
        if events is not None:
            await events.close()
    if call.recording is not None:
        await asyncio.sleep(SETTLE_S)
        call.business_heard_hz = heard_in(call.recording)
    return call


WHATSAPP_DIGIT, BUSINESS_DIGIT = "7", "5"
BUSINESS_DTMF = f"{BUSINESS_DIGIT}@200"  # uuid_send_dtmf: digit 5 for 200 ms


def _digits(dtmf: bool) -> dict[str, str]:
    return {"dtmf": WHATSAPP_DIGIT, "business_dtmf": BUSINESS_DTMF} if dtmf else {}


def _dtmf_check(call: MediaCall) -> tuple[str, str]:
    """(note, problem) of a call where each side sent one digit ("" problem: both arrived)."""
    received = call.report.dtmf_received
    got = "".join(e.digit for e in received if e.ended) or "nothing"
    durations = ", ".join(str(e.duration) for e in received) or "-"
    note = (f"DTMF: WhatsApp's {WHATSAPP_DIGIT} -> FreeSWITCH got {call.business_dtmf or 'nothing'}; "
            f"FreeSWITCH's {BUSINESS_DIGIT} -> WhatsApp got {got} (RFC 4733 duration {durations})")
    problems = []
    if call.business_dtmf != WHATSAPP_DIGIT:
        problems.append(f"FreeSWITCH did not get WhatsApp's digit {WHATSAPP_DIGIT}")
    if got != BUSINESS_DIGIT:
        problems.append(f"WhatsApp did not get FreeSWITCH's digit {BUSINESS_DIGIT}")
    return note, "; ".join(problems)


def user_initiated(bundle: BundleLab, mode: str, folder: Path, dtmf: bool = False) -> MediaOutcome:
    number = MEDIA_NUMBERS[mode][0]
    call = asyncio.run(_user_initiated(bundle, SrtpMode(mode), folder, **_digits(dtmf)))
    why = _judge(call)
    if call.sip_status == 200 and call.bye_status != 200:
        why = "; ".join(filter(None, [why, f"Meta's BYE got {call.bye_status}"]))
    notes = [call.line().replace("by the business", "by FreeSWITCH")]
    if dtmf and call.sip_status == 200:
        note, problem = _dtmf_check(call)
        notes.append(note)
        why = "; ".join(filter(None, [why, problem]))
    if call.wacid and call.sip_status == 200:
        notes.append(_cdr_note(bundle, wacid=call.wacid))
    return MediaOutcome(f"media: user-initiated {mode} call to {number}: Meta's INVITE with "
                        "WhatsApp's offer through TLS to the edge, digest-challenged, relayed to "
                        f"FreeSWITCH, answered by wa-esl, route lab-media-{mode.lower()}, Meta "
                        "hangs up", not why, notes, why, call.sip_status == 200)


async def _business_initiated(bundle: BundleLab, mode: SrtpMode, folder: Path, dtmf: str = "",
                              business_dtmf: str = "") -> MediaCall:
    """`wa-esl originate` through the gateway, edge and Meta stand-in to a `SipUas` where the
    lab's WhatsApp user is; FreeSWITCH plays its tone once answered, then hangs up. DTMF as in
    `_user_initiated`; the offer WhatsApp got is the call's `offer`."""
    peer = await MediaPeer(mode, tone_hz=PEER_TONE_HZ).open()
    uas = await SipUas(("127.0.0.1", bundle.edge.ports.meta.whatsapp_user), peer).open()
    call = MediaCall(None, peer.report)
    switch = bundle.freeswitch
    events = await watch_dtmf(switch, call) if dtmf else None
    try:
        result = await asyncio.to_thread(bundle.originate, MEDIA_NUMBERS[mode.value][0],
                                         WHATSAPP_USER)
        call.call_uuid = result.call_uuid
        if call.call_uuid is None:
            peer.report.failure = f"wa-esl originate: {' '.join(result.output.split())}"
        else:
            await switch.api_async(f"uuid_broadcast {call.call_uuid} {TONE} aleg")
            call.recording = await record_read_stream(switch, call.call_uuid,
                                                      folder / f"heard-{call.call_uuid}.wav")
            await _send_dtmf(bundle, peer, call.call_uuid, dtmf, business_dtmf)
            await asyncio.sleep(HOLD_S)
            await switch.api_async(f"uuid_kill {call.call_uuid} NORMAL_CLEARING")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(uas.ended.wait(), 5)
            if not uas.ended.is_set():
                peer.report.failure = "WhatsApp user never got FreeSWITCH's BYE"
    finally:
        report: MediaReport = await peer.close()
        uas.close()
        if events is not None:
            await events.close()
        if uas.invite is not None:
            call.offer = uas.invite.body
    call.report = report
    call.sip_status = uas.final_status
    if uas.refusal:
        report.failure = f"offer refused: {uas.refusal}"
    if call.recording is not None:
        await asyncio.sleep(SETTLE_S)
        call.business_heard_hz = heard_in(call.recording)
    return call


def business_initiated(bundle: BundleLab, mode: str, folder: Path,
                       dtmf: bool = False) -> MediaOutcome:
    number = MEDIA_NUMBERS[mode][0]
    call = asyncio.run(_business_initiated(bundle, SrtpMode(mode), folder, **_digits(dtmf)))
    why = _judge(call)
    notes = [call.line().replace("by the business", "by FreeSWITCH")]
    if dtmf and call.call_uuid:
        note, problem = _dtmf_check(call)
        notes.append(note)
        why = "; ".join(filter(None, [why, problem]))
    if call.call_uuid:
        notes.append(_cdr_note(bundle, call_uuid=call.call_uuid))
    return MediaOutcome(f"media: business-initiated {mode} call from {number} by `wa-esl "
                        "originate` through FreeSWITCH's gateway, the edge and the Meta stand-in "
                        "to WhatsApp's media peer, FreeSWITCH hangs up", not why, notes, why,
                        call.sip_status == 200)


MEDIA_CALLS = [("user", "SDES"), ("user", "DTLS"), ("business", "SDES"), ("business", "DTLS")]


def media_call(bundle: BundleLab, who: str, mode: str, folder: Path,
               dtmf: bool = False) -> MediaOutcome:
    """One media call; a call that could not be placed at all fails with the reason. `dtmf`:
    each side sends a digit too (`_dtmf_check`), which must arrive."""
    play = user_initiated if who == "user" else business_initiated
    try:
        return play(bundle, mode, folder, dtmf)
    except (LabError, TimeoutError, OSError, RuntimeError) as error:
        return MediaOutcome(f"media: {who}-initiated {mode} call", False, [],
                            f"{type(error).__name__}: {error}")

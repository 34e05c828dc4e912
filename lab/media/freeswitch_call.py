"""Calls with real media through a real FreeSWITCH: the peer plays WhatsApp's media, a small
UDP user agent plays the edge's signalling, and FreeSWITCH records what it hears.

What FreeSWITCH heard is found by recording the channel's read stream (`RECORD_READ_ONLY`,
`uuid_record`, mod_sndfile) and naming its dominant frequency; mod_tone_detect is not built.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tomllib
import uuid
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from esl.bic import BicRequest, BicResult, place_bic
from esl.client import EslConnection, connect_inbound
from esl.event import Event
from lab.edge import EXAMPLE_CONFIG, merge
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, loopback_overrides
from lab.media.peer import MediaPeer, MediaReport, MediaTimeouts
from lab.media.sdp import SdpError, SrtpMode
from lab.media.sip_uac import SipUac
from lab.media.sip_uas import SipUas
from lab.media.tone import dominant_frequency
from lab.processes import free_port
from siteconfig.controller import ControllerSettings
from siteconfig.model import SiteConfig

PEER_TONE_HZ = 1000.0
FREESWITCH_TONE_HZ = 440.0
FIND_CHANNEL_S = 5.0
SDES_NUMBER, DTLS_NUMBER = "+15550100001", "+15550100002"
TONE_ROUTE = {"name": "tone", "target": {
    "action": "ivr",
    "destination": f"playback tone_stream://%(1000,0,{FREESWITCH_TONE_HZ:g});loops=-1"}}


def media_site(ports: FreeswitchPorts, folder: Path) -> SiteConfig:
    """The example site on loopback with an SDES and a DTLS number whose calls wa-esl answers
    and routes to FreeSWITCH's tone (the media tests and bench-media-patch)."""
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw = merge(raw, loopback_overrides(ports, f"127.0.0.1:{free_port()}", "esl-Media-42"))
    return SiteConfig.model_validate(merge(raw, {
        "media": {"anchor": "freeswitch"},  # the direct path: FreeSWITCH terminates Meta's SRTP
        "numbers": [
            {"business_number": SDES_NUMBER, "phone_number_id": "100000000000001", "srtp_mode": "SDES"},
            {"business_number": DTLS_NUMBER, "phone_number_id": "100000000000002", "srtp_mode": "DTLS"},
        ],
        "esl": {"cdr_db": str(folder / "cdr.sqlite3"), "linger_s": 5, "routes": [TONE_ROUTE],
                "reconnect": {"initial_s": 0.05, "max_s": 0.5}},
    }))


@dataclass
class MediaCall:
    """One call's outcome: SIP, WhatsApp's media report, and what the business heard."""

    sip_status: int | None
    report: MediaReport
    business_heard_hz: float | None = None
    bye_status: int | None = None  # our BYE's response
    business_hung_up: bool = False  # FreeSWITCH sent BYE
    call_uuid: str | None = None
    recording: Path | None = None
    business_dtmf: str = ""  # digits FreeSWITCH reported (DTMF events) on this call
    wacid: str = ""
    offer: str = ""  # FreeSWITCH's SDP offer (business-initiated calls)
    warning: str = ""  # the Warning header of FreeSWITCH's final response (user-initiated calls)
    status_at_result: int | None = None  # what Meta had answered when place_bic returned

    def line(self) -> str:
        return self.report.line(self.business_heard_hz)


def whatsapp_user() -> str:
    """A fresh +1555 number per call, so the call's channel can be found by caller number."""
    return f"+1555{random.randint(0, 9_999_999):07d}"


async def channel_of(switch: FreeswitchLab, caller: str) -> str | None:
    """The UUID of the channel whose caller number is `caller`, once FreeSWITCH lists it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FIND_CHANNEL_S
    while loop.time() < deadline:
        listing = json.loads(await switch.api_async("show channels as json") or "{}")
        for row in listing.get("rows") or []:
            if row.get("cid_num") in (caller, caller.lstrip("+")):
                return str(row["uuid"])
        await asyncio.sleep(0.1)
    return None


async def record_read_stream(switch: FreeswitchLab, call_uuid: str, path: Path) -> Path | None:
    """Record only what FreeSWITCH receives on the channel (not its own tone); None when the
    channel is already gone (a call FreeSWITCH ended at once)."""
    await switch.api_async(f"uuid_setvar {call_uuid} RECORD_READ_ONLY true")
    reply = await switch.api_async(f"uuid_record {call_uuid} start {path}")
    if reply.startswith("+OK"):
        return path
    if "Cannot locate session" in reply:
        return None
    raise RuntimeError(f"uuid_record refused: {reply.strip()}")


def heard_in(path: Path) -> float | None:
    """Dominant frequency of a mono 16-bit WAV, or None if there is none or it is silent."""
    try:
        with wave.open(str(path)) as recording:
            return dominant_frequency(recording.readframes(recording.getnframes()),
                                      recording.getframerate())
    except (OSError, EOFError, wave.Error):
        return None


async def watch_dtmf(switch: FreeswitchLab, call: MediaCall) -> EslConnection:
    """An Event Socket connection adding each digit FreeSWITCH reports on `call`'s channel
    (DTMF events, once `call.call_uuid` is known) to `call.business_dtmf`; close it after."""
    events = await connect_inbound(switch.esl_host, switch.esl_port, switch.password)

    def on_event(event: Event) -> None:
        if event.name == "DTMF" and event.unique_id == call.call_uuid:
            call.business_dtmf += event.get("DTMF-Digit") or ""

    events.on_event(on_event)
    await events.command("event json DTMF")
    return events


async def uic_call(switch: FreeswitchLab, mode: SrtpMode, business_number: str, folder: Path, *,
                   hold_s: float, timeouts: MediaTimeouts | None = None,
                   peer_tone_hz: float = PEER_TONE_HZ, dtmf: str = "",
                   mutate_offer: Callable[[str], str] | None = None,
                   observe: bool = True, business_dtmf: str = "", lean: bool = False) -> MediaCall:
    """A user-initiated call: WhatsApp's offer, FreeSWITCH's answer, media for `hold_s`, then
    Meta's BYE; or the peer's BYE when its no-media limit strikes first. `dtmf` is sent as
    RFC 4733 events once media flows; `mutate_offer` changes the offer (bad-case tests);
    `observe=False` skips what needs the Event Socket per call (the channel's recording, DTMF
    events), for many calls at once. `business_dtmf` (``uuid_send_dtmf`` syntax) is sent by
    FreeSWITCH once its media reaches WhatsApp. `lean` makes the peer bench-media's lean one
    (pre-encoded tone, nothing decoded)."""
    timed_out = asyncio.Event()
    peer = await MediaPeer(mode, tone_hz=peer_tone_hz, timeouts=timeouts, lean=lean,
                           on_media_timeout=lambda _reason: timed_out.set()).open()
    uac = await SipUac(("127.0.0.1", switch.sip_port)).open()
    caller = whatsapp_user()
    call = MediaCall(None, peer.report)
    events = await watch_dtmf(switch, call) if observe else None
    try:
        offer = peer.offer()
        if mutate_offer is not None:
            offer = mutate_offer(offer)
        call.wacid = f"wacid.{uuid.uuid4().hex}"
        response = await uac.invite(business_number, caller, call.wacid, offer)
        call.sip_status = response.status
        call.warning = response.header("Warning") or ""
        if response.status != 200:
            return call
        try:
            peer.accept_answer(response.body)
        except SdpError as error:
            peer.report.failure = f"answer refused: {error}"
            call.bye_status = await uac.bye(0)
            return call
        peer.start()
        if observe:
            call.call_uuid = await channel_of(switch, caller)
        if call.call_uuid is not None:
            call.recording = await record_read_stream(switch, call.call_uuid,
                                                      folder / f"heard-{call.call_uuid}.wav")
        if dtmf or business_dtmf:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(peer.first_packet.wait(), hold_s)
        if dtmf:
            peer.send_dtmf(dtmf)
        if business_dtmf and call.call_uuid is not None:
            await switch.api_async(f"uuid_send_dtmf {call.call_uuid} {business_dtmf}")
        waits = [asyncio.ensure_future(timed_out.wait()), asyncio.ensure_future(uac.remote_bye.wait())]
        await asyncio.wait(waits, timeout=hold_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waits:
            waiter.cancel()
        call.business_hung_up = uac.remote_bye.is_set()
        if not call.business_hung_up:
            call.bye_status = await uac.bye(max(0, round(hold_s)))
    finally:
        call.report = await peer.close()
        uac.close()
        if events is not None:
            await events.close()
    if call.recording is not None:
        await asyncio.sleep(0.3)  # FreeSWITCH closes the file as the channel goes
        call.business_heard_hz = heard_in(call.recording)
    return call


async def bic_call(switch: FreeswitchLab, mode: SrtpMode, business_number: str, folder: Path, *,
                   settings: ControllerSettings, hold_s: float,
                   timeouts: MediaTimeouts | None = None, answer_after_s: float = 0.0,
                   peer_tone_hz: float = PEER_TONE_HZ, business_tone_hz: float = 440.0,
                   ring_s: float = 20.0, business_dtmf: str = "") -> tuple[MediaCall, BicResult]:
    """A business-initiated call placed by wa-esl (`place_bic`) through FreeSWITCH's gateway to
    a `SipUas` at the edge's address; once answered FreeSWITCH plays `business_tone_hz` and
    records what it hears; Meta's BYE after `hold_s` (or the peer's 408/BYE on no media).
    `business_dtmf` (``uuid_send_dtmf`` syntax, e.g. ``5@200``) is sent by FreeSWITCH once
    WhatsApp's media arrives; the peer's report lists the events it received."""
    peer = await MediaPeer(mode, tone_hz=peer_tone_hz, timeouts=timeouts).open()
    uas = await SipUas(switch.config.listen.internal_socket(), peer,
                       answer_after_s=answer_after_s).open()
    call = MediaCall(None, peer.report)
    connection = await connect_inbound(switch.esl_host, switch.esl_port, switch.password)
    try:
        await connection.command("event json CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
        result = await place_bic(connection, BicRequest(business_number, whatsapp_user()), settings,
                                 timeout=ring_s)
        call.sip_status = call.status_at_result = uas.final_status
        if uas.invite is not None:
            call.offer = uas.invite.body
        if result.answered:
            call.call_uuid = result.call_uuid
            await switch.api_async(f"uuid_broadcast {result.call_uuid} "
                                   f"tone_stream://%(1000,0,{business_tone_hz:g});loops=-1 aleg")
            call.recording = await record_read_stream(switch, result.call_uuid,
                                                      folder / f"heard-{result.call_uuid}.wav")
            if business_dtmf:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peer.first_packet.wait(), hold_s)
                await switch.api_async(f"uuid_send_dtmf {result.call_uuid} {business_dtmf}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(uas.ended.wait(), hold_s)
            if not uas.ended.is_set():
                uas.bye()
            await asyncio.sleep(0.3)
    finally:
        await connection.close()
        call.report = await peer.close()
        uas.close()
        call.sip_status = uas.final_status
        if uas.refusal:
            call.report.failure = f"offer refused: {uas.refusal}"
    if call.recording is not None:
        await asyncio.sleep(0.3)
        call.business_heard_hz = heard_in(call.recording)
    return call, result

"""`make lab`'s rtpengine section: the four media flows with rtpengine anchoring Meta's media.

The real edge ([media] anchor = "rtpengine", rendered by `provision render`) and Debian's
rtpengine started from the rendered file; Meta's side played by lab/media's strict ICE-lite
peer (DTLS server or SDES, silent until the business's first packet) through TLS and, for
business-initiated calls, the Meta stand-in; the business side by a plain-RTP party as a stock
FreeSWITCH behind rtpengine would be (lab/media/plain_peer.py). It runs on any machine with the
registry packages, FreeSWITCH or not. A call passes when each side hears the other's tone.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.edge import LAB_PASSWORD, META_USER, EdgeLab, merge
from lab.edge_only_section import edge_overrides
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import SrtpMode
from lab.media.sip_uac import SipUac
from lab.media.sip_uas import SipUas
from lab.meta_standin import WHATSAPP_USER
from lab.meta_uac import MetaUac
from lab.processes import LabError, free_port

META_TONE_HZ = 440.0
BUSINESS_TONE_HZ = 700.0
TONE_TOLERANCE_HZ = 5.0
HOLD_S = 3.0
DTLS_NUMBER = "+15550100001"
SDES_NUMBER = "+15550100003"
NUMBERS = {SrtpMode.DTLS: DTLS_NUMBER, SrtpMode.SDES: SDES_NUMBER}
PASSWORDS = {DTLS_NUMBER: LAB_PASSWORD, SDES_NUMBER: LAB_PASSWORD}
FLOWS = (("user", SrtpMode.DTLS), ("user", SrtpMode.SDES),
         ("business", SrtpMode.DTLS), ("business", SrtpMode.SDES))


def rtpengine_overrides() -> dict[str, Any]:
    """The edge-only config with rtpengine as the anchor (EdgeLab gives it ports of its own),
    and an SDES number beside the DTLS one (both with the lab's credentials)."""
    changes = merge(edge_overrides(), {"media": {"anchor": "rtpengine"}})
    changes["numbers"] = [*changes["numbers"], {
        "business_number": SDES_NUMBER, "phone_number_id": "100000000000003",
        "srtp_mode": "SDES", "sdes_suites": ["AES_CM_128_HMAC_SHA1_80"]}]
    return changes


@dataclass
class MediaFlow:
    """One call's media as both ends saw it."""

    status: int
    meta: MediaPeer
    business: PlainRtpPeer

    def heard_both_ways(self) -> bool:
        meta_heard = self.meta.report.heard_hz
        business_heard = self.business.report.heard_hz
        return (self.status == 200 and self.meta.report.failure is None
                and meta_heard is not None and abs(meta_heard - BUSINESS_TONE_HZ) <= TONE_TOLERANCE_HZ
                and business_heard is not None
                and abs(business_heard - META_TONE_HZ) <= TONE_TOLERANCE_HZ)


async def user_initiated(edge: EdgeLab, mode: SrtpMode) -> MediaFlow:
    """Meta's INVITE with the peer's offer through TLS to the edge (407, digest), rtpengine's
    plain offer to the business, the business's plain answer back in Meta's profile."""
    ports = edge.ports
    number = NUMBERS[mode]
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
    uas = await SipUas(("127.0.0.1", ports.freeswitch[0]), business).open()
    uac = await MetaUac(ports.meta_client, edge.config.site.sip_domain, META_USER,
                        f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                        f"<sip:127.0.0.1:{ports.internal};r2=on;lr>").open()
    wacid = f"wacid.rtpengine{mode.value.lower()}{free_port()}"
    try:
        response = await uac.invite(number, number[1:], LAB_PASSWORD, wacid, "rtpengine-media",
                                    meta.offer())
        if response.status == 200:
            meta.accept_answer(response.body)
            meta.start()
            await asyncio.sleep(HOLD_S)
            await uac.bye(wacid, round(HOLD_S))
        return MediaFlow(response.status or 0, meta, business)
    finally:
        meta.report = await meta.close()
        await business.close()
        uas.close()
        await uac.close()


async def business_initiated(edge: EdgeLab, mode: SrtpMode) -> MediaFlow:
    """FreeSWITCH's gateway (a plain-RTP UAC at a FreeSWITCH node's address) calls the WhatsApp
    user behind the Meta stand-in, whose media peer answers ICE-lite as Meta does."""
    ports = edge.ports
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ).open()
    user = await SipUas(("127.0.0.1", ports.meta.whatsapp_user), meta).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
    uac = await SipUac(("127.0.0.1", ports.internal), local_port=ports.freeswitch[0]).open()
    try:
        response = await uac.invite(WHATSAPP_USER, NUMBERS[mode], "", business.sdp(),
                                    from_host=f"127.0.0.1:{ports.internal}")
        if response.status == 200:
            business.accept(response.body)
            business.start()
            await asyncio.sleep(HOLD_S)
            await uac.bye(round(HOLD_S))
        return MediaFlow(response.status or 0, meta, business)
    finally:
        meta.report = await meta.close()
        await business.close()
        user.close()
        uac.close()


@dataclass
class RtpengineCall:
    name: str
    passed: bool
    notes: list[str] = field(default_factory=list)
    detail: str = ""


def play(edge: EdgeLab, who: str, mode: SrtpMode) -> RtpengineCall:
    flow = asyncio.run(user_initiated(edge, mode) if who == "user"
                       else business_initiated(edge, mode))
    direction = "user-initiated" if who == "user" else "business-initiated"
    name = (f"rtpengine: {direction} {mode.value} call to {NUMBERS[mode]}: Meta's {mode.value} "
            "media anchored by rtpengine, the business on plain RTP")
    line = flow.meta.report.line(flow.business.report.heard_hz)
    detail = "" if flow.heard_both_ways() else (
        f"SIP {flow.status}" if flow.status != 200 else "a tone was not heard both ways")
    return RtpengineCall(name, flow.heard_both_ways(), [line], detail)


def run_rtpengine_media(folder: Path, config_path: Path) -> list[RtpengineCall]:
    """Start the rtpengine edge (with the Meta stand-in) in `folder`, play FLOWS, print each."""
    if shutil.which("rtpengine") is None:
        print("\nlab: rtpengine section skipped: no rtpengine installed (Debian's "
              "rtpengine-daemon; make lab installs it)")
        return []
    results = []
    try:
        with EdgeLab(folder / "edge-rtpengine", rtpengine_overrides(), config_path=config_path,
                     passwords=PASSWORDS, meta_standin=True) as edge:
            print(f"\nlab: rtpengine section: [media] anchor = \"rtpengine\", rtpengine on "
                  f"{edge.config.media.rtpengine.ng_listen}; Meta's media is lab/media's peer "
                  f"({META_TONE_HZ:.0f} Hz), the business a plain-RTP party "
                  f"({BUSINESS_TONE_HZ:.0f} Hz)")
            for who, mode in FLOWS:
                call = play(edge, who, mode)
                results.append(call)
                print(f"\n[{'PASS' if call.passed else 'FAIL'}] {call.name}")
                for note in call.notes:
                    print(f"  {note}")
                if call.detail:
                    print(f"  why: {call.detail}")
    except LabError as error:
        print(f"lab: rtpengine section cannot run: {error}")
        results.append(RtpengineCall("rtpengine section set-up", False, [], str(error)))
    return results

"""A stock FreeSWITCH gateway's offer (Opus, G.711, G.722, telephone-event at 48 and 8 kHz)
through the real edge and Debian's rtpengine reaches Meta with only what Meta takes for the number
(Opus, one telephone-event/8000, G.711 only where enabled), on the INVITE re-sent after Meta's
407; tones still heard both ways; an offer with nothing Meta plays is refused before Meta sees it.

Why the edge cuts the offer and not rtpengine: kemi/sdp_codecs.py (rtpengine 10.5's codec flags
turn Opus + telephone-event/8000 into Opus + a telephone-event/48000 of its own).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.edge import EdgeLab
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import OPUS_PT, TELEPHONE_EVENT_PT, SrtpMode
from lab.media.sip_uac import SipUac
from lab.media.sip_uas import SipUas
from lab.meta_standin import WHATSAPP_USER
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    NUMBERS,
    PASSWORDS,
    TONE_TOLERANCE_HZ,
    rtpengine_overrides,
)

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")
HOLD_S = 2.0
TE_48K_PT = 101


def overrides() -> dict[str, Any]:
    """The lab's rtpengine edge; its SDES number has PCMA enabled at Meta."""
    changes = rtpengine_overrides()
    changes["numbers"] = [
        {**n, "additional_codecs": ["PCMA"]} if n["business_number"] == NUMBERS[SrtpMode.SDES]
        else n for n in changes["numbers"]]
    return changes


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("edge-rtpengine-codecs"), overrides(),
                 passwords=PASSWORDS, meta_standin=True) as lab:
        yield lab


def stock_offer(port: int, formats: str = f"{OPUS_PT} 0 8 9 {TE_48K_PT} {TELEPHONE_EVENT_PT}") -> str:
    """What a stock FreeSWITCH gateway offers with its default codec string plus Opus."""
    rtpmaps = {str(OPUS_PT): [f"a=rtpmap:{OPUS_PT} opus/48000/2",
                              f"a=fmtp:{OPUS_PT} useinbandfec=1; maxplaybackrate=48000"],
               "0": ["a=rtpmap:0 PCMU/8000"], "8": ["a=rtpmap:8 PCMA/8000"],
               "9": ["a=rtpmap:9 G722/8000"],
               str(TE_48K_PT): [f"a=rtpmap:{TE_48K_PT} telephone-event/48000",
                                f"a=fmtp:{TE_48K_PT} 0-16"],
               str(TELEPHONE_EVENT_PT): [f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000",
                                         f"a=fmtp:{TELEPHONE_EVENT_PT} 0-16"]}
    lines = ["v=0", "o=FreeSWITCH 1 2 IN IP4 127.0.0.1", "s=FreeSWITCH", "c=IN IP4 127.0.0.1",
             "t=0 0", f"m=audio {port} RTP/AVP {formats}"]
    for pt in formats.split():
        lines += rtpmaps[pt]
    return "\r\n".join([*lines, "a=ptime:20", "a=sendrecv"]) + "\r\n"


@dataclass
class Call:
    status: int
    offer_at_meta: str | None
    meta: MediaPeer
    business: PlainRtpPeer


async def call(lab: EdgeLab, mode: SrtpMode, formats: str | None = None) -> Call:
    ports = lab.ports
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ).open()
    user = await SipUas(("127.0.0.1", ports.meta.whatsapp_user), meta).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
    uac = await SipUac(("127.0.0.1", ports.internal), local_port=ports.freeswitch[0]).open()
    sdp = stock_offer(business.port) if formats is None else stock_offer(business.port, formats)
    try:
        response = await uac.invite(WHATSAPP_USER, NUMBERS[mode], "", sdp,
                                    from_host=f"127.0.0.1:{ports.internal}")
        if response.status == 200:
            business.accept(response.body)
            business.start()
            await asyncio.sleep(HOLD_S)
            await uac.bye(round(HOLD_S))
        offer = user.invite.body if user.invite is not None else None
        return Call(response.status or 0, offer, meta, business)
    finally:
        meta.report = await meta.close()
        await business.close()
        user.close()
        uac.close()


def m_line_formats(sdp: str) -> list[str]:
    line = next(x for x in sdp.splitlines() if x.startswith("m=audio"))
    return line.split()[3:]


@pytest.mark.parametrize(("mode", "kept"), [
    (SrtpMode.DTLS, [str(OPUS_PT), str(TELEPHONE_EVENT_PT)]),
    (SrtpMode.SDES, [str(OPUS_PT), "8", str(TELEPHONE_EVENT_PT)]),  # PCMA enabled at Meta
], ids=["DTLS", "SDES+PCMA"])
def test_a_stock_freeswitch_offer_reaches_meta_with_only_what_meta_takes(
        edge: EdgeLab, mode: SrtpMode, kept: list[str]) -> None:
    result = asyncio.run(call(edge, mode))
    assert result.status == 200, edge.kamailio_log()[-3000:]
    assert result.offer_at_meta is not None
    offer = result.offer_at_meta
    assert m_line_formats(offer) == kept, offer
    assert "telephone-event/48000" not in offer and "G722" not in offer
    assert offer.count("telephone-event/8000") == 1
    assert "PCMU" not in offer
    # Opus passed through, not transcoded: the business hears Meta's tone and Meta the business's
    assert result.meta.report.failure is None, result.meta.report.failure
    heard_at_meta = result.meta.report.heard_hz
    heard_at_business = result.business.report.heard_hz
    assert heard_at_meta is not None and abs(heard_at_meta - BUSINESS_TONE_HZ) <= TONE_TOLERANCE_HZ
    assert (heard_at_business is not None
            and abs(heard_at_business - META_TONE_HZ) <= TONE_TOLERANCE_HZ)
    assert "offer to Meta without 0 pcmu/8000" in edge.kamailio_log()
    assert "answered with SHA-256" in edge.kamailio_log()  # the cut offer survived the 407


def test_an_offer_without_opus_is_refused_before_meta_sees_it(edge: EdgeLab) -> None:
    """G.711 and G.722 only, to a DTLS number without G.711 at Meta: 488 with the diagnosis."""
    result = asyncio.run(call(edge, SrtpMode.DTLS, formats=f"0 8 9 {TELEPHONE_EVENT_PT}"))
    assert result.status == 488
    assert result.offer_at_meta is None
    log = edge.kamailio_log()
    assert "no_common_codec" in log

"""G.711 end to end through the real edge and Debian's rtpengine, for a number with PCMU in its
additional_codecs (Meta then offers PCMU after Opus: ``audio.additional_codecs``, set by
`provision apply`).

A user-initiated call: Meta's offer (Opus, PCMU, telephone-event/8000) reaches the business as it
is, the business answers PCMU only (a G.711 PBX, or a FreeSWITCH whose codec string is PCMU), and
Meta gets PCMU back. Tones are heard both ways, DTMF goes both ways as RFC 4733 events, and
rtpengine transcodes nothing: its session shows PCMU/8000 on both legs (the edge never asks it to
transcode; where a call needs it, FreeSWITCH does, bench/README.md's bench-rtpengine section).
The business-initiated direction (PCMU kept in the offer to Meta only for such a number) is
tests/test_edge_rtpengine_codecs.py's and tests/test_sdp_codecs.py's.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from lab.edge import LAB_PASSWORD, META_USER, EdgeLab
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import OPUS_PT, TELEPHONE_EVENT_PT, SrtpMode
from lab.media.sip_uas import SipUas
from lab.meta_uac import MetaUac
from lab.processes import free_port
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    NUMBERS,
    PASSWORDS,
    TONE_TOLERANCE_HZ,
    rtpengine_overrides,
)
from provisioning.rtpengine_ng import call_ids, command
from siteconfig.listen_address import parse_listen_address

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")
HOLD_S = 3.0
DTMF_AT_S = 0.8  # after the codec settles; 400 ms apart (each digit 100 ms)
META_DIGITS = "159#"
BUSINESS_DIGITS = "2580"


def overrides() -> dict[str, Any]:
    """The lab's rtpengine edge, both numbers with PCMU enabled at Meta (in lower case, as a
    site may write it)."""
    changes = rtpengine_overrides()
    changes["numbers"] = [{**n, "additional_codecs": ["pcmu"]} for n in changes["numbers"]]
    return changes


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("edge-rtpengine-g711"), overrides(),
                 passwords=PASSWORDS, meta_standin=True) as lab:
        yield lab


@dataclass
class G711Call:
    status: int
    meta: MediaPeer
    business: PlainRtpPeer
    at_business: str  # rtpengine's plain offer to the business
    at_meta: str  # the answer Meta got
    session: dict[str, Any]  # rtpengine's ng query of the call, mid-call


def ng_address(edge: EdgeLab) -> tuple[str, int]:
    return parse_listen_address(edge.config.media.rtpengine.ng_listen)


def query(edge: EdgeLab) -> dict[str, Any]:
    (call_id,) = call_ids(*ng_address(edge))
    return command(*ng_address(edge), {"command": "query", "call-id": call_id})


async def talk(edge: EdgeLab, meta: MediaPeer, business: PlainRtpPeer) -> dict[str, Any]:
    """Both sides send; DTMF both ways once the codec settled; rtpengine asked mid-call."""
    await asyncio.sleep(DTMF_AT_S)
    meta.send_dtmf(META_DIGITS)
    business.send_dtmf(BUSINESS_DIGITS)
    await asyncio.sleep(HOLD_S / 2)
    session = await asyncio.to_thread(query, edge)
    await asyncio.sleep(HOLD_S / 2)
    return session


async def user_initiated(edge: EdgeLab, mode: SrtpMode) -> G711Call:
    ports = edge.ports
    number = NUMBERS[mode]
    meta = await MediaPeer(mode, tone_hz=META_TONE_HZ, g711=("PCMU",)).open()
    business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ, codec="PCMU").open()
    uas = await SipUas(("127.0.0.1", ports.freeswitch[0]), business).open()
    uac = await MetaUac(ports.meta_client, edge.config.site.sip_domain, META_USER,
                        f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                        f"<sip:127.0.0.1:{ports.internal};r2=on;lr>").open()
    wacid = f"wacid.g711{mode.value.lower()}{free_port()}"
    session: dict[str, Any] = {}
    try:
        response = await uac.invite(number, number[1:], LAB_PASSWORD, wacid, "g711-media",
                                    meta.offer())
        if response.status == 200:
            meta.accept_answer(response.body)
            meta.start()
            session = await talk(edge, meta, business)
            await uac.bye(wacid, round(HOLD_S))
        at_business = uas.invite.body if uas.invite is not None else ""
        return G711Call(response.status or 0, meta, business, at_business, response.body or "",
                        session)
    finally:
        meta.report = await meta.close()
        await business.close()
        uas.close()
        await uac.close()


def audio_formats(sdp: str) -> list[str]:
    line = next(x for x in sdp.splitlines() if x.startswith("m=audio"))
    return line.split()[3:]


@pytest.mark.parametrize("mode", [SrtpMode.SDES, SrtpMode.DTLS], ids=["SDES", "DTLS"])
def test_uic_meta_offers_opus_and_pcmu_the_business_answers_pcmu_only(edge: EdgeLab,
                                                                      mode: SrtpMode) -> None:
    call = asyncio.run(user_initiated(edge, mode))
    assert call.status == 200, edge.kamailio_log()[-3000:]
    opus_pt = str(OPUS_PT)
    te_pt = str(TELEPHONE_EVENT_PT)
    # Meta's offer passed as it is (plain RTP now), PCMU after Opus; Meta's answer PCMU only
    assert audio_formats(call.at_business) == [opus_pt, "0", te_pt], call.at_business
    assert "RTP/AVP" in call.at_business
    assert audio_formats(call.at_meta) == ["0", te_pt], call.at_meta
    assert "opus" not in call.at_meta.lower()
    meta, business = call.meta.report, call.business.report
    assert meta.failure is None, meta.failure
    assert meta.codec == "PCMU"
    assert meta.heard_hz is not None and abs(meta.heard_hz - BUSINESS_TONE_HZ) <= TONE_TOLERANCE_HZ
    assert business.heard_hz is not None and abs(business.heard_hz - META_TONE_HZ) <= TONE_TOLERANCE_HZ
    assert "".join(e.digit for e in meta.dtmf_received) == BUSINESS_DIGITS
    assert business.dtmf_received == META_DIGITS
    # no transcoding in rtpengine: both legs of its session are PCMU, each passed packets on
    legs = [m for tag in call.session["tags"].values() for m in tag["medias"]]
    assert len(legs) == 2 and {m["codec"] for m in legs} == {"PCMU/8000"}, legs
    assert all(not any("transcod" in f for f in m["flags"]) for m in legs), legs
    assert all(m["streams"][0]["stats"]["packets"] > 50 for m in legs), legs

"""Meta's signalling side of a business-initiated call with the media peer behind it: the
answer carries the peer's SDP, and no business media before the limit means 408 RTP Timeout
(early media) or Meta's BYE with Reason 408 (after the answer)."""

from __future__ import annotations

import asyncio

from lab.media.peer import MediaPeer, MediaTimeouts
from lab.media.sdp import SrtpMode
from lab.media.sip_uac import SipUac
from lab.media.sip_uas import SipUas
from lab.processes import free_port
from tests.media.business_end import BusinessEnd

TIMEOUTS = MediaTimeouts(start_s=0.3, mid_call_s=0.3)


async def call(answer_after_s: float) -> tuple[SipUas[MediaPeer], SipUac, int | None, str]:
    business = await BusinessEnd(SrtpMode.SDES).open()
    peer = await MediaPeer(SrtpMode.SDES, timeouts=TIMEOUTS).open()
    uas = await SipUas(("127.0.0.1", free_port()), peer, answer_after_s=answer_after_s).open()
    uac = await SipUac(uas.local).open()
    try:
        response = await uac.invite("+15550123456", "+15550100001", "wacid.x", business.offer())
        if response.status == 200:
            await asyncio.wait_for(uac.remote_bye.wait(), 10)
        bye = uac.remote_bye_headers.header("Reason") if uac.remote_bye_headers else None
        return uas, uac, response.status, bye or ""
    finally:
        uac.close()
        uas.close()
        await peer.close()
        business.close()


async def test_no_media_during_early_media_gets_408_rtp_timeout() -> None:
    uas, _, status, _ = await call(answer_after_s=30)
    assert status == 408 and uas.final_status == 408
    assert uas.peer.report.ended_by == "no business media 0.3 s after ACK"


async def test_no_media_after_answer_gets_bye_with_reason_408() -> None:
    uas, _, status, reason = await call(answer_after_s=0)
    assert status == 200
    assert reason == 'SIP;cause=408;text="RTP Timeout"'
    assert uas.peer.report.packets_sent == 0

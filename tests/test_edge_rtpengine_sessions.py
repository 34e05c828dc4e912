"""rtpengine sessions through the real edge: none left once a call ends (rtpengine's own `list`
is empty at once), one log line per answered call of what rtpengine received from each side, and
a restarted rtpengine named as the reason a call went silent (rtpengine_session_lost), not a
silent call nobody can explain."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator

import pytest

from lab.edge import LAB_PASSWORD, META_USER, EdgeLab
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import SdpError, SrtpMode
from lab.media.sip_uas import SipUas
from lab.meta_uac import MetaUac
from lab.processes import free_port
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    NUMBERS,
    PASSWORDS,
    business_initiated,
    rtpengine_overrides,
    user_initiated,
)
from provisioning.rtpengine_ng import NgError, call_ids, ping
from siteconfig.listen_address import parse_listen_address

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")
MEDIA_LINE = re.compile(r"media from_meta=(\d+) from_business=(\d+) packets call-id=(\S+)")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("edge-rtpengine-sessions"), rtpengine_overrides(),
                 passwords=PASSWORDS, meta_standin=True) as lab:
        yield lab


def ng_address(edge: EdgeLab) -> tuple[str, int]:
    return parse_listen_address(edge.config.media.rtpengine.ng_listen)


def media_lines(edge: EdgeLab) -> list[tuple[int, int, str]]:
    return [(int(a), int(b), c) for a, b, c in MEDIA_LINE.findall(edge.kamailio_log())]


def wait_for_log(edge: EdgeLab, text: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while text not in (log := edge.kamailio_log()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return log


@pytest.mark.parametrize(("who", "mode"), [("user", SrtpMode.DTLS), ("business", SrtpMode.SDES)],
                         ids=["UIC-DTLS", "BIC-SDES"])
def test_an_ended_call_leaves_no_session_and_says_what_each_side_sent(
        edge: EdgeLab, who: str, mode: SrtpMode) -> None:
    before = len(media_lines(edge))
    flow = asyncio.run(user_initiated(edge, mode) if who == "user"
                       else business_initiated(edge, mode))
    assert flow.heard_both_ways(), (flow.status, flow.meta.report.line())
    wait_for_log(edge, "media from_meta=")
    lines = media_lines(edge)[before:]
    assert len(lines) == 1, edge.kamailio_log()[-2000:]
    from_meta, from_business, _ = lines[0]
    # ~3 s of 20 ms packets each way (150 sent); rtpengine counted what it received per side
    assert from_meta > 50 and from_business > 50, lines
    assert call_ids(*ng_address(edge)) == []  # deleted at once, not 30 s later


def test_a_refused_call_leaves_no_session(edge: EdgeLab) -> None:
    """Meta's offer taken by rtpengine, the business refuses it (488): the session goes too."""

    class Refusing(PlainRtpPeer):
        def answer(self, offer: str) -> str:
            raise SdpError("refused by the test")

    async def refused() -> int:
        meta = await MediaPeer(SrtpMode.DTLS).open()
        business = await Refusing().open()
        uas = await SipUas(("127.0.0.1", edge.ports.freeswitch[0]), business).open()
        uac = await MetaUac(edge.ports.meta_client, edge.config.site.sip_domain, META_USER,
                            f"<sip:127.0.0.1:{edge.ports.tls};transport=tls;r2=on;lr>,"
                            f"<sip:127.0.0.1:{edge.ports.internal};r2=on;lr>").open()
        try:
            number = NUMBERS[SrtpMode.DTLS]
            response = await uac.invite(number, number[1:], LAB_PASSWORD,
                                        f"wacid.refused{free_port()}", "refused", meta.offer())
            return response.status or 0
        finally:
            await meta.close()
            await business.close()
            uas.close()
            await uac.close()

    status = asyncio.run(refused())
    assert status >= 400
    assert call_ids(*ng_address(edge)) == []


def test_a_restarted_rtpengine_is_named_when_the_call_ends(tmp_path_factory: pytest.TempPathFactory
                                                           ) -> None:
    """rtpengine killed and started again mid-call: its sessions are gone, both sides go quiet;
    at the BYE the edge logs rtpengine_session_lost (and counts it) instead of nothing."""
    with EdgeLab(tmp_path_factory.mktemp("edge-rtpengine-restart"), rtpengine_overrides(),
                 passwords={NUMBERS[SrtpMode.DTLS]: LAB_PASSWORD}) as lab:
        assert lab.rtpengine is not None
        rtpengine = lab.rtpengine

        async def restarted_mid_call() -> tuple[int, MediaPeer]:
            ports = lab.ports
            number = NUMBERS[SrtpMode.DTLS]
            meta = await MediaPeer(SrtpMode.DTLS, tone_hz=META_TONE_HZ).open()
            business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ).open()
            uas = await SipUas(("127.0.0.1", ports.freeswitch[0]), business).open()
            uac = await MetaUac(ports.meta_client, lab.config.site.sip_domain, META_USER,
                                f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                                f"<sip:127.0.0.1:{ports.internal};r2=on;lr>").open()
            wacid = f"wacid.restart{free_port()}"
            try:
                response = await uac.invite(number, number[1:], LAB_PASSWORD, wacid, "restart",
                                            meta.offer())
                assert response.status == 200
                meta.accept_answer(response.body)
                meta.start()
                await asyncio.sleep(1.0)
                rtpengine.kill()
                rtpengine.start()
                await asyncio.to_thread(wait_for_ping, lab)
                await asyncio.sleep(1.0)
                await uac.bye(wacid, 2)
                return response.status or 0, meta
            finally:
                meta.report = await meta.close()
                await business.close()
                uas.close()
                await uac.close()

        status, _meta = asyncio.run(restarted_mid_call())
        assert status == 200
        log = wait_for_log(lab, "rtpengine_session_lost")
        assert "diagnosis=rtpengine_session_lost" in log, log[-3000:]
        assert "rtpengine had no session for this call at its end" in log
        assert call_ids(*ng_address(lab)) == []


def wait_for_ping(lab: EdgeLab, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ping(*ng_address(lab), timeout_s=0.3)
            return
        except NgError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

"""A user-initiated call held 40 s, past Meta's 32-s trap, through the edge to the real switch.

Meta answers any re-INVITE or UPDATE with 500 and a session refresh kills the call, so the
rendered profile and wa-esl's variables turn session timers and hold off. Nothing but the real
FreeSWITCH can show they work: for 40 s it must send nothing in the dialog (no re-INVITE,
UPDATE, OPTIONS or BYE) toward the edge, and the call must end with Meta's BYE. Meta's audio is
sent (SRTP Opus silence with the offer's key), since a silent call is ended by FreeSWITCH's
media timeout at 15 s by design. This test takes ~45 s of wall time; `make test` and CI run it.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab.bundle import BundleLab
from lab.freeswitch_trace import wait_for_call
from lab.processes import LabError, free_port
from lab.srtp_sender import SrtpSender
from tests.e2e.conftest import SDES_NUMBER, skip_without_freeswitch

pytestmark = [skip_without_freeswitch(), pytest.mark.long]

HOLD_MS = 40_000
META_SDES_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # sipp-scenarios/uic-freeswitch-sdes


def freeswitch_rtp_port(bundle: BundleLab, wacid: str, timeout: float = 20) -> tuple[str, int]:
    """The live call's UUID and FreeSWITCH's RTP port, once wa-esl answered it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in bundle.records() if r.wacid == wacid]
        if found:
            port = bundle.api(f"uuid_getvar {found[0].call_uuid} local_media_port").strip()
            if port.isdigit():
                return found[0].call_uuid, int(port)
        time.sleep(0.05)
    raise LabError(f"call {wacid} not answered within {timeout:.0f} s")


def test_forty_second_call_gets_no_refresh_and_no_early_bye(bundle: BundleLab,
                                                          tmp_path: Path) -> None:
    start = bundle.freeswitch.log.stat().st_size
    wacid = f"wacid.long{uuid.uuid4().hex[:12]}"
    meta_rtp = free_port()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(bundle.uic, SDES_NUMBER, wacid=wacid, hold_ms=HOLD_MS,
                              duration_s=40, rtp_port=meta_rtp, folder=tmp_path, timeout_s=90)
        try:
            call_uuid, fs_port = freeswitch_rtp_port(bundle, wacid)
        except LabError:
            running.result(timeout=120)
            raise
        sender = SrtpSender(META_SDES_KEY, ("127.0.0.1", fs_port), meta_rtp).start()
        try:
            call = running.result(timeout=120)
        finally:
            sender.stop()
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    record = bundle.cdr(wacid=wacid)
    assert record.call_uuid == call_uuid
    assert record.hangup_cause == "NORMAL_CLEARING" and not record.media_timeout, record
    assert record.meta_duration_s == 40
    assert record.fs_duration_s is not None and record.fs_duration_s >= 39.5, record
    assert sender.sent > 1000  # Meta's audio flowed all along

    call_id = next(line.split(":", 1)[1].strip()
                   for line in call.result.trace[0].text.split("\r\n")
                   if line.lower().startswith("call-id:"))
    leg = wait_for_call(bundle.freeswitch.log, start, call_id)
    requests_sent = [m.first_line.split(" ", 1)[0] for m in leg
                     if m.sent and not m.first_line.startswith("SIP/2.0")]
    assert requests_sent == [], requests_sent  # no re-INVITE, UPDATE, OPTIONS, BYE
    received = [m.first_line.split(" ", 1)[0] for m in leg
                if not m.sent and not m.first_line.startswith("SIP/2.0")]
    assert received == ["INVITE", "ACK", "BYE"], received
    ok = next(m for m in leg if m.sent and m.first_line.startswith("SIP/2.0 200")
              and "INVITE" in m.text)
    headers = ok.text.split("\r\n\r\n", 1)[0].lower().split("\r\n")
    assert not [h for h in headers if h.startswith(("session-expires:", "min-se:"))], headers
    supported = next((h for h in headers if h.startswith("supported:")), "")
    assert "timer" not in supported, supported

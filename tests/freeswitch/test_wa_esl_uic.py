"""wa-esl drives a real FreeSWITCH: user-initiated calls sent by SIPp playing the edge."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from esl.controller import Controller
from esl.site import controller_settings
from lab.freeswitch import FreeswitchLab
from lab.processes import free_port
from lab.sipp import SippResult, run_sipp_client
from tests.esl.controller_fixtures import ended_by_wacid, running_controller
from tests.freeswitch.conftest import DTLS_NUMBER, META_USER, SDES_NUMBER

pytestmark = pytest.mark.needs_freeswitch  # skipped, and counted, without one


@pytest.fixture
async def controller(switch: FreeswitchLab) -> AsyncIterator[Controller]:
    async with running_controller(controller_settings(switch.config)) as running:
        yield running


@dataclass
class EdgeCall:
    wacid: str
    result: SippResult


async def edge_call(switch: FreeswitchLab, flow: str, number: str, hold_ms: int,
                    folder: Path) -> EdgeCall:
    """One call from SIPp playing the edge, held `hold_ms` after the ACK, then BYE'd."""
    wacid = f"wacid.{uuid.uuid4().hex}"
    keys = {"business_number": number, "meta_user": META_USER, "wacid": wacid,
            "rtp_port": str(free_port())}
    result = await asyncio.to_thread(
        run_sipp_client, flow, "edge", folder, switch.sip_port, free_port(), keys=keys,
        timeout_s=30, extra=["-d", str(hold_ms)], transport="u1")
    return EdgeCall(wacid, result)


async def test_sdes_call_ends_when_meta_hangs_up(switch: FreeswitchLab, controller: Controller,
                                                 tmp_path: Path) -> None:
    """The profile's RTP timer: without it the BYE waited ~5 s behind a blocked playback."""
    call = await edge_call(switch, "fs-uic-sdes", SDES_NUMBER, 3000, tmp_path)
    result = call.result
    assert result.passed, (result.errors, result.first_lines())
    record = await ended_by_wacid(controller, call.wacid)
    assert record.srtp_mode == "SDES" and record.route == "catch-all"
    assert record.meta_duration_s == 3
    assert record.fs_duration_s is not None and 2.8 <= record.fs_duration_s < 4.5, record
    assert bye_answered_within(result) < 1.5  # at once, not behind RTP


async def test_dtls_call_without_media_ends_when_meta_hangs_up(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path) -> None:
    """Without the RTP timer this call never ended (the BYE waited for RTP that never came)."""
    call = await edge_call(switch, "fs-uic-dtls", DTLS_NUMBER, 3000, tmp_path)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    assert bye_answered_within(call.result) < 1.5
    record = await ended_by_wacid(controller, call.wacid)
    assert record.srtp_mode == "DTLS" and record.hangup_cause == "NORMAL_CLEARING"
    # FreeSWITCH marks a DTLS leg answered once its media is up (here: never), so billmsec is 0;
    # the call's life is what shows it ended with the BYE
    assert record.invite_at and record.end_at
    life = (datetime.fromisoformat(record.end_at)
            - datetime.fromisoformat(record.invite_at)).total_seconds()
    assert 2.8 <= life < 4.5, record


def bye_answered_within(result: SippResult) -> float:
    """Seconds between our BYE and FreeSWITCH's 200 for it."""
    bye = next(m for m in result.trace if m.sent and m.first_line.startswith("BYE"))
    ok = next(m for m in result.trace if not m.sent and m.first_line.startswith("SIP/2.0 200")
              and "CSeq: 3 BYE" in m.text)
    return seconds(ok.time) - seconds(bye.time)


def seconds(clock: str) -> float:
    hours, minutes, rest = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


async def test_park_route_holds_the_call_without_an_error(
        switch: FreeswitchLab, controller: Controller, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """`park` under the socket: FreeSWITCH refused it ("Cannot park channels that are under
    control already") and the call only lived because the socket held it."""
    caplog.set_level(logging.INFO)
    log_start = switch.log.stat().st_size
    call = await edge_call(switch, "fs-uic-sdes", SDES_NUMBER, 1000, tmp_path)
    assert call.result.passed, (call.result.errors, call.result.first_lines())
    record = await ended_by_wacid(controller, call.wacid)
    assert record.route == "catch-all" and record.hangup_cause == "NORMAL_CLEARING"
    with switch.log.open("rb") as log:
        log.seek(log_start)
        fs_log = log.read().decode(errors="replace")
    assert "Cannot park channels that are under control already" not in fs_log
    assert not [r for r in caplog.records if "refused a command" in r.getMessage()]
    # the CDR may come from the inbound connection first; the call's own socket logs the outcome
    outcomes: list[str] = []
    for _ in range(50):
        outcomes = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.INFO and record.call_uuid in r.getMessage()]
        if outcomes:
            break
        await asyncio.sleep(0.1)
    assert len(outcomes) == 1, outcomes  # one line per call outcome
    assert "ended: NORMAL_CLEARING" in outcomes[0] and "route=catch-all" in outcomes[0]

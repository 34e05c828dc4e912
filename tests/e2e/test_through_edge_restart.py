"""FreeSWITCH killed (SIGKILL) mid-call and started again, with `wa-esl run` and the edge up.

A crash sends no hangup event, so the call's CDR stays "active" until wa-esl's inbound
connection comes back and asks FreeSWITCH (`uuid_exists`) about every call it still thinks is
up: those are closed as "missed". The controller must reconnect by itself and the next call
must work end to end. Its own bundle: the module-wide one must not lose its switch.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from esl.controller import MISSED_DIAGNOSIS
from lab.bundle import BundleLab
from lab.processes import LabError
from tests.e2e.conftest import SDES_NUMBER, skip_without_freeswitch, start_bundle

pytestmark = skip_without_freeswitch()


@pytest.fixture
def own_bundle(tmp_path: Path, e2e_dtls_pem: Path) -> Iterator[BundleLab]:
    running = start_bundle(tmp_path / "bundle", e2e_dtls_pem)
    try:
        yield running
    finally:
        running.stop()


def wait_answered(bundle: BundleLab, wacid: str, timeout: float = 20) -> str:
    """The call's UUID once FreeSWITCH has answered it (its RTP port is chosen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in bundle.records() if r.wacid == wacid]
        if found and bundle.api(f"uuid_getvar {found[0].call_uuid} local_media_port").strip().isdigit():
            return found[0].call_uuid
        time.sleep(0.05)
    raise LabError(f"call {wacid} not answered within {timeout:.0f} s")


def test_killed_switch_calls_closed_as_missed_and_new_calls_work(own_bundle: BundleLab,
                                                                 tmp_path: Path) -> None:
    bundle = own_bundle
    assert bundle.wa_esl is not None
    wacid = f"wacid.crash{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(1) as pool:
        # Meta holds the call 5 s; FreeSWITCH dies under it right after the answer
        doomed = pool.submit(bundle.uic, SDES_NUMBER, wacid=wacid, hold_ms=5000, folder=tmp_path,
                             timeout_s=10)
        call_uuid = wait_answered(bundle, wacid)
        log_at_kill = bundle.wa_esl.log_size()
        bundle.freeswitch.kill()
        bundle.wa_esl.wait_for_line(r"inbound ESL connection to \S+ lost", 20, log_at_kill)
        assert [r.state for r in bundle.records() if r.wacid == wacid] == ["active"]
        doomed.result(timeout=60)  # Meta's BYE finds no switch; what it got does not matter

    log_at_restart = bundle.wa_esl.log_size()
    bundle.freeswitch.start()
    bundle.wa_esl.wait_ready(start=log_at_restart)  # reconnected by itself
    assert bundle.wa_esl.running()

    record = bundle.cdr(wacid=wacid, state="missed", timeout=5)  # reconciled before "up"
    assert record.call_uuid == call_uuid and record.diagnosis == MISSED_DIAGNOSIS
    assert "marked 'missed'" in bundle.wa_esl.text()[log_at_restart:]

    after = bundle.uic(SDES_NUMBER, hold_ms=300, folder=tmp_path)
    assert after.result.passed, (after.result.errors, after.result.first_lines())
    fresh = bundle.cdr(wacid=after.wacid)
    assert fresh.hangup_cause == "NORMAL_CLEARING" and fresh.route == "catch-all"

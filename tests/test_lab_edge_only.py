"""`make lab` without FreeSWITCH (`python -m lab` with the finder pointed at nothing): the
edge-only section places its calls through the real edge and Meta's stand-ins, the business
side played by SIPp, and the last lines say how many FreeSWITCH calls were skipped."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.edge_only_section import EDGE_CALLS, wrong_password
from lab.rtpengine_section import FLOWS

ROOT = Path(__file__).resolve().parents[1]


def test_lab_without_freeswitch_runs_the_edge_only_calls() -> None:
    env = {**os.environ, "WA_SIP_FREESWITCH": "/nonexistent"}  # a named binary is the only answer
    done = subprocess.run([sys.executable, "-m", "lab"], capture_output=True, text=True,
                          timeout=240, check=False, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.fullmatch(r"lab: FreeSWITCH calls: 0 ran, \d+ skipped \(no FreeSWITCH installed\)",
                        lines[-2]), lines[-2]
    rtpengine_flows = len(FLOWS) if shutil.which("rtpengine") else 0
    permission_steps = 4  # the call-permission section without its placed call (skipped)
    assert lines[-1] == (f"lab: {len(EDGE_CALLS) + rtpengine_flows + permission_steps} passed, "
                         "0 failed")
    assert lines[1].startswith("lab: no FreeSWITCH 1.10 or later: install SignalWire's")
    assert "(looked for /nonexistent)" in lines[1] and "FreeSWITCH calls are skipped" in lines[1]
    text = done.stdout
    # each call's ladder and its result against what was expected
    assert "Meta        ──▶ edge        INVITE sip:+15550100001;tgrp=wacall" in text
    assert "Meta        ◀── edge        SIP/2.0 407 Proxy Authentication Required" in text
    assert "edge        ──▶ business    BYE " in text
    assert "result: answered (expected answered)" in text
    assert "result: refused (expected refused)" in text
    assert "the business side received 0 messages" in text
    assert re.search(r"Meta stand-in offered SHA-256,MD5; it accepted (SHA-256|MD5)", text)
    assert "edge        ──▶ WhatsApp" not in text  # WhatsApp's leg is drawn from Meta
    assert "Meta        ──▶ WhatsApp    INVITE sip:+15550123456@" in text
    if rtpengine_flows:  # the four media flows through rtpengine, tones heard both ways
        heard = re.findall(r"^  media: (DTLS|SDES) .*tone 700 Hz heard by WhatsApp, 440 Hz heard "
                           r"by the business$", text, flags=re.M)
        assert sorted(heard) == ["DTLS", "DTLS", "SDES", "SDES"], text[-3000:]
    assert "result: diagnosis declined (expected diagnosis declined)" in text
    assert "X-WA-Diagnosis: declined; cause=" in text
    assert "lab: call-permission section: " in text
    assert "[SKIP] the same call placed through FreeSWITCH and answered" in text


def test_a_call_with_the_wrong_outcome_is_reported_failed(clean_edge: EdgeLab,
                                                          tmp_path: Path) -> None:
    """The wrong-password call is judged by what happened: refused passes; the same call with
    the right password reaches the business side and fails."""
    (tmp_path / "wrong").mkdir()
    refused = wrong_password(clean_edge, tmp_path / "wrong")
    assert (refused.outcome, refused.passed) == ("refused", True), refused.detail
    (tmp_path / "right").mkdir()
    answered = wrong_password(clean_edge, tmp_path / "right", password=LAB_PASSWORD, timeout_s=3)
    assert answered.outcome == "answered"
    assert not answered.passed
    assert answered.detail.startswith("expected refused, got answered")

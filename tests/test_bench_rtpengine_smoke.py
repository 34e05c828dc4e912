"""The rtpengine media benchmark's harness works end to end (`make bench-rtpengine`, scaled down).

Two concurrent calls per scenario (SDES, DTLS) through the real edge and Debian's rtpengine, Meta's
lean media peer against the lean plain-RTP business: the RESULT line must carry every key with
each scenario's two calls passed (answered, media both ways, loss under 0.5 %), an rtpengine CPU
figure and, for DTLS, a handshake time. A harness that no longer counts packets on either side,
or a scenario whose calls stop flowing, fails here instead of at the next long run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("rtpengine") is None,
                                reason="no rtpengine installed (Debian's rtpengine-daemon; "
                                       "make test installs it)")


def test_two_calls_per_scenario_pass_with_cpu_loss_both_ways_and_times() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.media.rtpengine.run", "--levels", "2", "--measure", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), output
    result = dict(item.split("=", 1) for item in last.split()[1:])
    for scenario in ("sdes", "dtls"):
        assert result[f"{scenario}_calls"] == "2", output
        assert float(result[f"rtpengine_cpu_us_per_call_{scenario}"]) > 0, output
        assert float(result[f"{scenario}_loss_pct"]) < 0.5, output
        assert float(result[f"{scenario}_first_packet_ms_p50"]) >= 0, output
    assert float(result["dtls_handshake_ms_p50"]) > 0, output
    assert float(result["ref_one_call_rtpengine_cpu_us"]) > 0, output
    # packets were counted at both receive sides, none lost
    for scenario in ("sdes", "dtls"):
        assert re.search(rf"^{scenario} +2 calls: 2 answered .*to Meta 0/[1-9]\d*, to the "
                         r"business 0/[1-9]\d*\)", done.stdout, re.MULTILINE), output
    folder = re.search(r"^edge in (\S+) ", done.stdout, re.MULTILINE)
    assert folder, output
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                               check=True).stdout
    assert folder[1] not in processes, processes  # rtpengine, Kamailio, stunnel: all stopped

"""The abuse benchmark's harness works end to end (`make bench-abuse`, scaled down).

A few hundred fuzzed messages each way, a few seconds of TLS abuse, flood and scan, against a
real edge, while Meta's legitimate calls run. The assertions are the RESULT line's shape and
its four counters at zero, so a change that breaks the harness, or lets one fuzzed request
through, shows in CI instead of at the next long run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.kamailio_binary import kamailio_available

ROOT = Path(__file__).resolve().parent.parent
RESULT = re.compile(r"^RESULT crashes=(\d+) relayed_unauthenticated=(\d+) tracebacks=(\d+) "
                    r"legit_calls_failed=(\d+) shm_free_min_mb=(\d+\.\d) log_mb=(\d+\.\d)$")

pytestmark = pytest.mark.skipif(
    not kamailio_available() or any(shutil.which(tool) is None for tool in ("sipp", "stunnel4")),
    reason="kamailio, sipp and stunnel4 are installed by 'make test'")


def test_small_run_prints_result_line_with_nothing_broken() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.abuse.run", "--udp-messages", "300", "--tls-messages",
         "300", "--abuse-seconds", "3", "--flood-seconds", "1", "--scan-seconds", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    output = done.stdout + done.stderr
    match = RESULT.match(done.stdout.strip().splitlines()[-1])
    assert match, output
    crashes, relayed, tracebacks, legit_failed, shm_free_min_mb, _log_mb = match.groups()
    assert (crashes, relayed, tracebacks, legit_failed) == ("0", "0", "0", "0"), output
    assert float(shm_free_min_mb) > 32, output
    assert done.returncode == 0, output
    for phase in ("sip fuzz over UDP", "sip fuzz over TLS", "TLS abuse", "1-s flood",
                  "TLS scan"):
        assert f"{phase}: done" in done.stdout, output

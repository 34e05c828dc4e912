"""The edge benchmark's harness works end to end (`make bench-edge` without the timing).

`python -m bench.edge.run --smoke` starts the three Kamailio set-ups (the rendered KEMI edge,
the native-config reference, the stateless ceiling) and the product over TLS, places a handful
of complete UIC calls through each, and prints the RESULT line. Nothing here is timed: the
assertions are the line's shape and zero failed calls, so a template or scenario change that
breaks the bench shows in CI instead of at the next benchmark.
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
RESULT = re.compile(r"^RESULT kemi_cps=(\d+) native_cps=(\d+) ceiling_cps=(\d+) "
                    r"ratio=(\d+\.\d+) p99_ms_at_500=(\d+\.\d+) failed=(\d+)$")

pytestmark = pytest.mark.skipif(
    not kamailio_available() or any(shutil.which(tool) is None for tool in ("sipp", "stunnel4")),
    reason="kamailio, sipp and stunnel4 are installed by 'make test'")


def test_smoke_run_prints_result_line_without_failed_calls() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.edge.run", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    lines = done.stdout.strip().splitlines()
    match = RESULT.match(lines[-1])
    assert match, output
    kemi_cps, native_cps, ceiling_cps, _ratio, _p99, failed = match.groups()
    assert failed == "0", output
    # Each set-up completed its one smoke step: every call of it answered.
    assert kemi_cps != "0" and native_cps != "0" and ceiling_cps != "0", output
    assert "[kemi-tls]" in done.stdout, output

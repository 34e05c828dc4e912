"""bench-edge-site's harness works end to end (`make bench-edge-site` without the timing).

`python -m bench.edge.site_run --smoke` starts one KEMI edge, then two edges of one site
(`[cluster]`, DMQ peered, edge B on 127.0.0.2) with Meta's calls split between them, then the
native reference, and places a handful of complete UIC calls through each. Nothing is timed:
the assertions are the RESULT line's keys, every call of every set-up answered (a call Meta's
second SIPp placed through edge B counts there too) and no failed call.
"""

from __future__ import annotations

import subprocess
import sys

from tests.test_bench_edge_smoke import ROOT, pytestmark  # noqa: F401 (the same skip)
from tests.test_bench_media_rtpengine_smoke import result_of


def test_smoke_run_places_calls_through_one_edge_and_two_without_failed_calls() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.edge.site_run", "--smoke"], cwd=ROOT,
                          capture_output=True, text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    result = result_of(done)
    assert result["failed"] == "0", output
    # the smoke step is 10 calls/s: each set-up answered every call of it (two edges: 5 each)
    assert result["one_edge_cps"] == result["two_edge_cps"] == result["native_cps"] == "10", output
    for key in ("cpu_us_one", "cpu_us_two", "cpu_us_native"):
        assert float(result[key]) > 0, output
    assert "[two-edges]" in done.stdout and "10/10 calls" in done.stdout, output

"""The pre-flight benchmark's harness works end to end (`make bench-preflight`, scaled down).

A few users and originates against the stand-ins in their own processes: the RESULT line
carries every key, errors=0 (no refused verdict, no 613 to the product, every call answered),
the paced rate stays under Graph's limit while an unpaced client at the same limit is refused,
and the controller's cache is hit. Nothing is timed here: speed is bench/README.md's.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "users", "lookups_per_s", "limit_per_s", "ratio_to_limit", "raw_gets_per_s", "ratio_to_raw",
    "errors", "product_613", "unpaced_613", "cached_checks_per_s", "originate_force_p50_ms",
    "originate_force_p99_ms", "originate_preflight_p50_ms", "originate_preflight_p99_ms",
    "originate_added_p50_ms", "originate_added_p99_ms", "api_force_p50_ms", "api_miss_p50_ms",
    "api_miss_p99_ms", "api_hit_p50_ms", "api_hit_p99_ms", "api_added_miss_p50_ms",
    "api_added_hit_p50_ms",
}


def test_small_run_prints_every_key_with_no_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.preflight.run", "--users", "30", "--raw", "60",
         "--unpaced", "60", "--rounds", "3", "--max-seconds", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), output
    result = dict(item.split("=", 1) for item in last.split()[1:])
    assert set(result) == KEYS, output
    assert result["errors"] == "0" and result["product_613"] == "0", output
    assert result["users"] == "30", output
    assert 0 < float(result["lookups_per_s"]) <= float(result["limit_per_s"]), output
    assert int(result["unpaced_613"]) > 0, output  # the limit is enforced: pacing is what passes
    assert float(result["api_hit_p50_ms"]) > 0 and float(result["originate_preflight_p50_ms"]) > 0

"""The abuse benchmark's harness works end to end (`make bench-abuse`, scaled down).

A few hundred fuzzed messages each way, a few seconds of TLS abuse, flood and scan, against a
real edge, while Meta's legitimate calls run; then the many-source idle-connection attack,
scaled down (60 idle connections from 20 sources against a cap of 40, Meta's budget 8), on the
phase's own edge in network namespaces, with the rendered admission rules and without. The
assertions are the RESULT line's shape and its four counters at zero, Meta's calls during the
idle attack with admission all connected, the attackers held to the others' budget (40 - 8)
with the rules and to the edge's cap without, and the namespaces gone afterwards; so a change
that breaks the harness, or lets one fuzzed request through, shows in CI instead of at the next
long run. Without root (or ip/nft) the phase must say skipped, and the RESULT still prints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.netns import unavailable_reason
from provisioning.kamailio_binary import kamailio_available

ROOT = Path(__file__).resolve().parent.parent
RESULT = re.compile(r"^RESULT crashes=(\d+) relayed_unauthenticated=(\d+) tracebacks=(\d+) "
                    r"legit_calls_failed=(\d+) shm_free_min_mb=(\d+\.\d) log_mb=(\d+\.\d) "
                    r"idle_sources=(\S+) idle_conns_held=(\S+) meta_calls_during_idle=(\S+) "
                    r"meta_calls_without_admission=(\S+) meta_call_max_s_during_idle=(\S+) "
                    r"meta_call_max_s_without_admission=(\S+)$")
IDLE = ["--idle-connections", "60", "--idle-sources", "20", "--idle-max-connections", "40",
        "--idle-meta-connections", "8", "--idle-meta-calls", "2", "--idle-seconds", "6"]

pytestmark = pytest.mark.skipif(
    not kamailio_available() or any(shutil.which(tool) is None for tool in ("sipp", "stunnel4")),
    reason="kamailio, sipp and stunnel4 are installed by 'make test'")


def namespaces_of(pid: int) -> list[str]:
    if shutil.which("ip") is None:
        return []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in listed.stdout.splitlines()
            if line.startswith(f"wsidle{pid}")]


def test_small_run_prints_result_line_with_nothing_broken() -> None:
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench.abuse.run", "--udp-messages", "300", "--tls-messages",
         "300", "--abuse-seconds", "3", "--flood-seconds", "1", "--scan-seconds", "3", *IDLE],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = bench.communicate(timeout=300)
    finally:
        if bench.poll() is None:
            bench.kill()
    output = stdout + stderr
    match = RESULT.match(stdout.strip().splitlines()[-1])
    assert match, output
    crashes, relayed, tracebacks, legit_failed, shm_free_min_mb, _log_mb = match.groups()[:6]
    sources, held, during, without, slowest, _slowest_without = match.groups()[6:]
    assert (crashes, relayed, tracebacks, legit_failed) == ("0", "0", "0", "0"), output
    assert float(shm_free_min_mb) > 32, output
    assert bench.returncode == 0, output
    for phase in ("sip fuzz over UDP", "sip fuzz over TLS", "TLS abuse", "1-s flood",
                  "TLS scan"):
        assert f"{phase}: done" in stdout, output
    assert namespaces_of(bench.pid) == [], output
    if (reason := unavailable_reason()) is not None:
        assert (sources, during) == ("skipped", "skipped"), output
        assert f"many-source idle attack: skipped: {reason}" in stdout, output
        return
    assert (sources, during) == ("20", "2/2"), output
    assert int(held) == 40 - 8, output            # the others' budget, not the edge's cap
    assert float(slowest) < 3, output
    assert re.search(r"without admission: Meta's calls \d/2 connected .*attacker held 40 "
                     r"\(median\)", stdout), output
    assert re.fullmatch(r"\d/2", without), output

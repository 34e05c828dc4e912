"""bench-media's rtpengine path works end to end (`make bench-media`, scaled down).

Two concurrent calls per rtpengine-path scenario (Opus passed through, Opus <-> PCMU in
FreeSWITCH, Meta offering PCMU too; each with SDES and DTLS toward Meta) through the real edge,
Debian's rtpengine and the FreeSWITCH in use on plain RTP, beside the direct path's sdes ramp of
the same run: the RESULT line must carry, per scenario, both calls passed, CPU per call of
rtpengine and of FreeSWITCH, loss both ways under 0.5 %, first-packet and (DTLS) handshake
times, and the ratio against the direct sdes figure; the PCMU leg carried media on the bridged
scenarios, and every process of the bundle is gone afterwards. Without FreeSWITCH the bench says
why it skipped and RESULT is still its last line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = [f"rtpengine-{variant}-{mode}" for variant in ("opus", "transcode", "g711")
             for mode in ("sdes", "dtls")]  # bench/media/anchored.py's


def bench(*args: str, env: dict[str, str] | None = None, timeout: int = 150
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.media.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)


def result_of(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), output
    return dict(item.split("=", 1) for item in last.split()[1:])


@pytest.mark.needs_freeswitch
@pytest.mark.skipif(shutil.which("rtpengine") is None,
                    reason="no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
def test_two_calls_per_rtpengine_path_scenario_with_both_cpus_loss_both_ways_and_times(
        tmp_path: Path) -> None:
    done = bench("--levels", "2", "--rtpengine-levels", "2", "--measure", "1",
                 "--scenarios", ",".join(["sdes", *SCENARIOS]), "--plot", str(tmp_path / "p.png"))
    output = done.stdout + done.stderr
    result = result_of(done)
    assert float(result["fs_cpu_us_per_call_sdes"]) > 0, output
    assert result["direct_sdes_figure"] == "ramp", output
    for name in SCENARIOS:
        key = name.replace("-", "_")
        assert result[f"{key}_calls"] == "2", output
        assert float(result[f"rtpengine_cpu_us_per_call_{key}"]) > 0, output
        assert float(result[f"fs_cpu_us_per_call_{key}"]) > 0, output
        for direction in ("to_meta", "to_business"):
            assert 0 <= float(result[f"{key}_loss_{direction}_pct"]) < 0.5, output
        assert float(result[f"{key}_first_packet_ms_p50"]) >= 0, output
        assert float(result[f"{key}_fs_vs_direct_sdes"]) > 0, output
        assert float(result[f"{key}_total_vs_direct_sdes"]) > float(
            result[f"{key}_fs_vs_direct_sdes"]), output  # rtpengine's share is added
        if name.endswith("dtls"):
            assert float(result[f"{key}_handshake_ms_p50"]) > 0, output
        # packets counted on Meta's side and FreeSWITCH's, none lost
        line = re.search(rf"^{name} +2 calls: 2 answered .*to Meta 0/[1-9]\d*, to the "
                         r"business 0/[1-9]\d*\).*$", done.stdout, re.MULTILINE)
        assert line, output
        if "opus" not in name:  # bridged by FreeSWITCH to the PCMU leg, which got media
            assert re.search(r"PCMU leg 0/[1-9]\d* lost", line[0]), output
    assert result["rtpengine_opus_sdes_meta_codec"] == "opus", output
    folder = re.search(r"^rtpengine path in (\S+):", done.stdout, re.MULTILINE)
    assert folder, output
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                               check=True).stdout
    assert folder[1] not in processes, processes  # Kamailio, rtpengine, FreeSWITCH: all stopped


def test_without_freeswitch_the_bench_says_why_and_result_is_last(tmp_path: Path) -> None:
    env = {**os.environ, "WA_SIP_FREESWITCH": str(tmp_path / "no-freeswitch")}
    done = bench(env=env, timeout=60)
    result = result_of(done)
    assert result == {"skipped": "no_freeswitch"}, done.stdout
    assert "bench-media skipped: no FreeSWITCH installed" in done.stdout, done.stdout

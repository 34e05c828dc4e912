"""bench/edge/cpu_cap.py (bench-edge-site's `--edge-cores`): the quota is written, the edge's
processes are in the group, the group goes at the end. The kernel's enforcement of the quota
is the kernel's; what is checked is what the bench asks of it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest

from bench.edge.cpu_cap import PERIOD_US, CpuCap, CpuCapError


def _cap_or_skip(name: str, cores: float) -> CpuCap:
    try:
        return CpuCap(name, cores)
    except CpuCapError as error:
        pytest.skip(f"no CPU cgroup here: {error}")


def test_a_launched_process_and_what_it_forks_are_in_a_group_with_the_quota() -> None:
    """Kamailio forks its workers after start: they are in the group from their first
    instruction because their parent was (moving them in after start missed some)."""
    cap = _cap_or_skip("test", 0.25)
    with cap:
        # only the parent prints: the child's pid
        forker = "import os, time\npid = os.fork()\nif pid: print(pid, flush=True)\ntime.sleep(30)"
        child = subprocess.Popen(cap.launch([sys.executable, "-c", forker]),
                                 stdout=subprocess.PIPE, text=True)
        forked = 0
        try:
            assert child.stdout is not None
            forked = int(child.stdout.readline())
            procs = (cap.folder / "cgroup.procs").read_text().split()
            assert str(child.pid) in procs and str(forked) in procs, procs
            if cap.v2:
                assert (cap.folder / "cpu.max").read_text().split() == [
                    str(PERIOD_US // 4), str(PERIOD_US)]
            else:
                assert int((cap.folder / "cpu.cfs_quota_us").read_text()) == PERIOD_US // 4
                assert int((cap.folder / "cpu.cfs_period_us").read_text()) == PERIOD_US
        finally:
            for pid in (child.pid, forked):
                if pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            child.wait()
    assert not cap.folder.exists()


@pytest.mark.parametrize("cores", [0.0, 0.001, float(os.cpu_count() or 1) + 1])
def test_a_budget_outside_the_machine_is_refused(cores: float) -> None:
    with pytest.raises(CpuCapError, match=r"between 0\.01 and"):
        CpuCap("test", cores)

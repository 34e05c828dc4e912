"""bench/edge/cpu_cap.py (bench-edge-site's `--edge-cores`): the quota is written, the edge's
processes are in the group, the group goes at the end. The kernel's enforcement of the quota
is the kernel's; what is checked is what the bench asks of it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.edge.cpu_cap import PERIOD_US, CpuCap, CpuCapError


def _cap_or_skip(name: str, cores: float) -> CpuCap:
    try:
        return CpuCap(name, cores)
    except CpuCapError as error:
        pytest.skip(f"no CPU cgroup here: {error}")


def test_a_capped_process_is_in_a_group_with_the_quota_and_the_group_goes_after() -> None:
    cap = _cap_or_skip("test", 0.25)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with cap:
            cap.add([child.pid])
            procs = (cap.folder / "cgroup.procs").read_text().split()
            assert str(child.pid) in procs
            if cap.v2:
                assert (cap.folder / "cpu.max").read_text().split() == [
                    str(PERIOD_US // 4), str(PERIOD_US)]
            else:
                assert int((cap.folder / "cpu.cfs_quota_us").read_text()) == PERIOD_US // 4
                assert int((cap.folder / "cpu.cfs_period_us").read_text()) == PERIOD_US
            assert cap.throttled_s() >= 0
            child.kill()
            child.wait()
        assert not cap.folder.exists()
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("cores", [0.0, 0.001, float(os.cpu_count() or 1) + 1])
def test_a_budget_outside_the_machine_is_refused(cores: float) -> None:
    with pytest.raises(CpuCapError, match=r"between 0\.01 and"):
        CpuCap("test", cores)

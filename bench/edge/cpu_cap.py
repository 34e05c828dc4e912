"""A CPU budget for one edge's processes: a cgroup with a CFS quota (`--edge-cores`).

Why: on this machine two edges and the load generator share 2 cores, so a second edge adds
processes, not hardware, and the site's call rate cannot grow with edges. Giving every edge the
same fixed share of a core (its "machine"), with the load generator outside the caps, is what
one edge per machine looks like: a site of two edges has twice the edge CPU of one, and the call
rate it reaches says what the second edge buys after the cluster's own cost (DMQ).

The kernel enforces the quota (cpu.max on cgroup v2, cpu.cfs_quota_us on v1's cpu controller);
root only. Kamailio is started inside the group (`launch`: a shell joins it and execs
Kamailio), so every process it forks is in it from its first instruction; moving its processes
in once it answered RPC missed some (the TCP workers, the busiest, forked after it), which let
an edge use three times its budget. The group is removed at the end, its processes stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PERIOD_US = 100_000
CGROUP_ROOT = Path("/sys/fs/cgroup")


class CpuCapError(Exception):
    """No cgroup CPU controller this process may use; the message says what is missing."""


def _cpu_hierarchy() -> tuple[Path, bool]:
    """(folder to make groups in, is cgroup v2)."""
    if (CGROUP_ROOT / "cgroup.controllers").is_file():
        if "cpu" not in (CGROUP_ROOT / "cgroup.controllers").read_text().split():
            raise CpuCapError("cgroup v2 without the cpu controller")
        return CGROUP_ROOT, True
    if (CGROUP_ROOT / "cpu" / "cpu.cfs_quota_us").is_file():
        return CGROUP_ROOT / "cpu", False
    raise CpuCapError(f"no cgroup cpu controller under {CGROUP_ROOT}")


class CpuCap:
    """One cgroup holding `cores` of CPU (0.4: 40 ms of every 100 ms); a context manager."""

    def __init__(self, name: str, cores: float) -> None:
        if not 0.01 <= cores <= (os.cpu_count() or 1):
            raise CpuCapError(f"--edge-cores {cores}: between 0.01 and the machine's "
                              f"{os.cpu_count()} cores")
        if os.geteuid() != 0:
            raise CpuCapError("--edge-cores needs root (it makes cgroups)")
        self.cores = cores
        hierarchy, self.v2 = _cpu_hierarchy()
        self.folder = hierarchy / f"wa-sip-bench-{name}-{os.getpid()}"

    def __enter__(self) -> CpuCap:
        try:
            self.folder.mkdir()
            quota = int(self.cores * PERIOD_US)
            if self.v2:
                (self.folder / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            else:
                (self.folder / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
                (self.folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        except OSError as error:
            self._remove()
            raise CpuCapError(f"cannot make the CPU cgroup {self.folder}: {error}") from error
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def launch(self, argv: list[str]) -> list[str]:
        """`argv` run inside this group: a shell writes its own pid into the group, then execs
        `argv` (the same pid: a foreground Kamailio's, `-DD`)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.folder / "cgroup.procs"),
                *argv]

    def add(self, pids: list[int]) -> None:
        for pid in pids:
            try:
                (self.folder / "cgroup.procs").write_text(f"{pid}\n")
            except ProcessLookupError:
                continue  # ended between listing and moving
            except OSError as error:
                raise CpuCapError(f"cannot move pid {pid} into {self.folder}: {error}") from error

    def _remove(self) -> None:
        """rmdir once the group is empty (a stopped process leaves it a moment later)."""
        deadline = time.monotonic() + 5
        while self.folder.exists():
            try:
                self.folder.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    return  # left behind: an empty group costs nothing, the name is per pid
                time.sleep(0.05)

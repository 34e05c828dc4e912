"""CPU time: a process's (FreeSWITCH's, rtpengine's, a Kamailio's, all threads, from the kernel's
CPU clock of that process), this process's, and the whole machine's (/proc/stat), so a step can
say who used the cores."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")
_CPUCLOCK_SCHED = 2  # linux/posix-timers.h


def process_cpu_s(pid: int) -> float:
    """CPU seconds of a process, every thread it has or had, in nanoseconds' resolution: the
    kernel's CPU clock of the process, the clock id glibc's clock_getcpuclockid(3) makes
    (MAKE_PROCESS_CPUCLOCK: ~pid << 3 | CPUCLOCK_SCHED). Not utime + stime of /proc/PID/stat,
    which are 10 ms ticks: a short run (10 calls of about 1 ms of CPU each) read 0 or 1000 us a
    call by where the ticks fell; not /proc/PID/task/*/schedstat either, which forgets a thread
    once it ended (FreeSWITCH's per-call threads). OSError when the process is gone."""
    return time.clock_gettime((~pid << 3) | _CPUCLOCK_SCHED)


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot (/proc/stat's first line)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already in user
    return (total - idle) / TICKS, total / TICKS


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuSample:
    """CPU counters at one instant."""

    freeswitch_s: float
    own_s: float
    machine_busy_s: float
    machine_total_s: float

    @classmethod
    def take(cls, freeswitch_pid: int) -> CpuSample:
        busy, total = machine_cpu_s()
        return cls(process_cpu_s(freeswitch_pid), own_cpu_s(), busy, total)


@dataclass
class CpuUse:
    """CPU between two samples, as cores used (1.0 = one core busy the whole time)."""

    freeswitch_cores: float
    own_cores: float
    machine_busy: float  # share of all cores, 0..1

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample, wall_s: float) -> CpuUse:
        total = after.machine_total_s - before.machine_total_s
        return cls((after.freeswitch_s - before.freeswitch_s) / wall_s,
                   (after.own_s - before.own_s) / wall_s,
                   (after.machine_busy_s - before.machine_busy_s) / total if total > 0 else 0.0)

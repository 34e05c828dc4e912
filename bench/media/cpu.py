"""CPU time from /proc: FreeSWITCH's (its pid's utime + stime, all threads), this process's, and
the whole machine's, so a step can say who used the cores."""

from __future__ import annotations

import os
from dataclasses import dataclass

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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


def threads_cpu_s(pid: int) -> float:
    """CPU seconds of all of a process's threads from /proc/PID/task/*/schedstat (nanoseconds):
    a process using a few milliseconds a second (rtpengine on one call) needs finer than the
    10 ms ticks of /proc/PID/stat. A thread that ended no longer counts, so use it on processes
    with a fixed pool of threads."""
    total_ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as stat:
                total_ns += int(stat.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # the thread ended between listing and reading
    return total_ns / 1e9

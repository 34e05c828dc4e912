"""The benches' CPU reading (bench.media.cpu.process_cpu_s) is a process's CPU clock: fine
enough for a few milliseconds and counting threads that ended.

10 ms ticks of /proc/PID/stat made the bench-edge-site smoke run read 0 us a call for 10
calls (CI, 2026-12-07); /proc/PID/task/*/schedstat would forget FreeSWITCH's ended call threads.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from bench.media.cpu import process_cpu_s


def _burn(seconds: float) -> float:
    """Spin on this thread for `seconds` of its own CPU; return the CPU it used."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass
    return time.thread_time() - start


def test_reads_this_process_as_its_own_clock_does() -> None:
    _burn(0.002)
    before, own = process_cpu_s(os.getpid()), time.process_time()
    assert abs(before - own) < 0.005  # the same clock, read a moment apart
    used = _burn(0.003)
    assert process_cpu_s(os.getpid()) - before >= used  # 3 ms is seen: no 10 ms ticks


def test_counts_a_thread_after_it_ended() -> None:
    used: list[float] = []
    before = process_cpu_s(os.getpid())
    worker = threading.Thread(target=lambda: used.append(_burn(0.02)))
    worker.start()
    worker.join()
    assert process_cpu_s(os.getpid()) - before >= used[0]


def test_a_process_that_is_gone_raises_oserror() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(OSError):
        process_cpu_s(pid)

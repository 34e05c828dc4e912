"""One Kamailio of the bench: started in the foreground, observed, stopped by its own pid.

CPU is the kernel's CPU clock of the main process and of every child it forked
(bench.media.cpu.process_cpu_s, nanoseconds, not /proc's 10 ms ticks), so "CPU per call" counts
every worker, timer and TCP process, not only the busiest.
Memory comes from Kamailio's own accounting over JSON-RPC: `core.shmmem` (shared) and
`pkg.stats` (private, summed over processes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.media.cpu import process_cpu_s
from lab.processes import LabError, ManagedProcess
from lab.tls_front import start_haproxy
from provisioning.kamailio_binary import kamailio_binary
from provisioning.kamailio_rpc import RpcError, call

from .cpu_cap import CpuCap
from .setups import Setup

SHM_MB = 256  # enough for the transactions a 5 s wait timer keeps at a few thousand calls/s
PKG_MB = 16


@dataclass(frozen=True)
class Memory:
    shm_used_kb: int
    pkg_used_kb: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[1]) == parent:
                pids.append(int(entry))
    return pids


def cpu_seconds_of(pid: int) -> float:
    """CPU seconds of one process (0 when it is gone)."""
    try:
        return process_cpu_s(pid)
    except OSError:
        return 0.0


class Kamailio:
    """A running set-up; use as a context manager."""

    def __init__(self, setup: Setup, folder: Path, cpu_cap: CpuCap | None = None) -> None:
        """`cpu_cap`: Kamailio starts inside it (every process it forks with it) and its front
        is moved in once started."""
        self.setup = setup
        self.run_dir = folder / f"run-{setup.name}"
        self.cpu_cap = cpu_cap
        argv = [kamailio_binary(), "-f", str(setup.config), "-DD", "-E", "-m", str(SHM_MB),
                "-M", str(PKG_MB), "-Y", str(self.run_dir), "-P", str(self.run_dir / "kamailio.pid"),
                *(["-x", setup.memory_manager] if setup.memory_manager else [])]
        self.process = ManagedProcess(f"kamailio {setup.name}",
                                      cpu_cap.launch(argv) if cpu_cap is not None else argv,
                                      folder / f"kamailio-{setup.name}.log")
        self.main_pid = 0
        self.front: ManagedProcess | None = None  # HAProxy, where the render put one
        self.front_log = folder / f"haproxy-{setup.name}.log"

    def __enter__(self) -> Kamailio:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        try:
            self._wait_ready()
            if self.setup.front_config is not None:
                self.front = start_haproxy(self.setup.front_config, self.setup.front_port,
                                           self.front_log)
                if self.cpu_cap is not None and self.front.pid:
                    self.cpu_cap.add([self.front.pid])
        except BaseException:
            self.process.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.front is not None:
            self.front.stop()
        self.process.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.process.running():
                raise LabError(f"kamailio {self.setup.name} exited at start:\n"
                               + self.process.log_tail())
            try:
                call(self.setup.rpc_socket, "core.uptime", timeout=0.5)
                break
            except RpcError:
                time.sleep(0.1)
        else:
            raise LabError(f"kamailio {self.setup.name} did not answer RPC within 30 s; "
                           f"see {self.process.log}")
        self.main_pid = int((self.run_dir / "kamailio.pid").read_text().strip())

    def cpu_seconds(self) -> float:
        """CPU of every Kamailio process so far (children listed anew each time: right after
        start some may not be forked yet)."""
        return sum(cpu_seconds_of(pid) for pid in [self.main_pid, *children_of(self.main_pid)])

    def memory(self) -> Memory:
        shm: dict[str, Any] = call(self.setup.rpc_socket, "core.shmmem")
        pkg: list[dict[str, Any]] = call(self.setup.rpc_socket, "pkg.stats")
        return Memory(int(shm["real_used"]) // 1024,
                      sum(int(entry["real_used"]) for entry in pkg) // 1024)

    def running(self) -> bool:
        return self.process.running()

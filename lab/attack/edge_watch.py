"""What an attack did to the edge: shared memory over time, its processes, its log.

A defence is shown to hold when, under attack, shared memory stays well above zero, the same
Kamailio processes are still there (no crash, no respawn) and the log holds no BUG, CRITICAL
or Python traceback lines.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from provisioning.kamailio_rpc import RpcError, call

MB = 1024 * 1024
# Kamailio's own "hit the limit of connections per source IP" is logged at CRITICAL for every
# refused connection: it is the defence working, not a fault.
EXPECTED_CRITICAL = ("hit the limit of connections per source IP",)
PROBLEM = re.compile(r"\b(BUG|CRITICAL)\b|Traceback \(most recent call last\)|"
                     r"segfault|Segmentation fault|SIGSEGV|SIGABRT")


def shm_free(rpc_socket: Path) -> int:
    """Free shared memory, in bytes (Kamailio RPC core.shmmem)."""
    return int(call(rpc_socket, "core.shmmem", timeout=5)["free"])


def shm_total(rpc_socket: Path) -> int:
    return int(call(rpc_socket, "core.shmmem", timeout=5)["total"])


def kamailio_pids(rpc_socket: Path) -> dict[int, str]:
    """Every Kamailio process, pid -> what it does (RPC core.psx)."""
    result: Any = call(rpc_socket, "core.psx", timeout=5)
    return {int(entry["PID"]): str(entry["DSC"]) for entry in result}


def log_problems(text: str) -> list[str]:
    """BUG / CRITICAL / traceback / crash lines, except the expected per-source refusals."""
    return [line for line in text.splitlines()
            if PROBLEM.search(line) and not any(ok in line for ok in EXPECTED_CRITICAL)]


def count_tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


class ShmWatch:
    """Samples free shared memory every `interval_s` in a background thread; `minimum` is
    the lowest value seen, `failed_samples` how often the edge did not answer RPC at all."""

    def __init__(self, rpc_socket: Path, interval_s: float = 0.2) -> None:
        self.rpc_socket = rpc_socket
        self.interval_s = interval_s
        self.samples: list[int] = []
        self.failed_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shm-watch", daemon=True)

    def __enter__(self) -> ShmWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(shm_free(self.rpc_socket))
            except RpcError:
                self.failed_samples += 1
            self._stop.wait(self.interval_s)

    @property
    def minimum(self) -> int:
        return min(self.samples, default=0)

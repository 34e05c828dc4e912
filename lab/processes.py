"""Child processes of the lab and the tests: started with their output in a log file, waited
for until they listen, and always stopped (process group, TERM then KILL)."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self


class LabError(Exception):
    """A lab component failed to start or to answer; the message says which and where its log is."""


# Ports free_port() handed out lately: nothing holds a port between free_port() and the bind of
# whoever gets it, and the kernel may offer the same one again meanwhile (it did, in a fresh
# network namespace, within one EdgePorts()), so this process never gets the same port twice.
_HANDED_OUT: collections.deque[int] = collections.deque(maxlen=4096)


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port that is free for both TCP and UDP right now (Kamailio may use either), and not
    one this process was given lately."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind((host, 0))
            port = int(first.getsockname()[1])
            if port in _HANDED_OUT:
                continue
            other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind((host, port))
                except OSError:
                    continue
                _HANDED_OUT.append(port)
                return port
    raise LabError("no free loopback port found")


def wait_for_tcp(host: str, port: int, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    hint = f"; see {log}" if log else ""
    raise LabError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s{hint}")


def wait_for_udp_bound(host: str, port: int, timeout: float, what: str) -> None:
    """Until something has bound UDP host:port (our own bind fails), e.g. a SIPp UAS that
    must be listening before a switch sends it an INVITE (else: ICMP unreachable, 503)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return
        time.sleep(0.05)
    raise LabError(f"{what} did not bind UDP {host}:{port} within {timeout:.0f} s")


class LabParty:
    """A part of the lab used as a context manager: started on entry, stopped on exit, and
    stopped again when starting fails half-way, so no process of a failed start outlives it."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ManagedProcess:
    """One child process with its combined output in `log`."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.log.open("wb") as output:
                self._process = subprocess.Popen(
                    self.argv, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    cwd=self.cwd, start_new_session=True)
        except FileNotFoundError:
            raise LabError(f"{self.name}: {self.argv[0]} is not installed (run 'make lab' "
                           "or 'make test', which install it)") from None
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout: float) -> int:
        """The exit code; raises LabError if still running after `timeout` seconds."""
        assert self._process is not None, "not started"
        try:
            return self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name} still running after {timeout:.0f} s; "
                           f"see {self.log}") from None

    def stop(self, grace: float = 5.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=grace)
        except ProcessLookupError:
            pass

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL at once (a crash, for tests that restart a component)."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

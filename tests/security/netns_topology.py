"""Three network namespaces for the admission tests: the server (the rendered rules and a
listener on the TLS port), Meta (one address in a range the test configures as Meta's) and the
attackers (many addresses on one veth). Links are created inside the namespaces, never on the
host, and the host's own nftables are never touched: `nft` runs only in the server namespace.
Everything is removed on exit, failed or not."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from lab.netns import benchmark_addresses as attacker_addresses
from lab.netns import unavailable_reason as unavailable_reason  # re-exported for the tests
from tests.security.admission_parties import ListenerCounts

REPO = Path(__file__).resolve().parents[2]
SERVER_META, META_ADDRESS, META_RANGE = "10.77.0.1", "10.77.0.2", "10.77.0.0/24"
SERVER_ATTACK = "198.18.0.1"
PREFIX = "wsadm"
COMMAND_TIMEOUT_S = 20
SETTLE_TIMEOUT_S = 20  # the listener getting through 1600 connections on a loaded machine


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


class Listener:
    """The capped listener in the server namespace, asked for its counts over its stdin/stdout.

    Connections a flood completed are the listener's to count only once it has got through
    them: until then some wait in its accept queue and some it refused are not closed yet, and
    an attacker's socket looks held. `settle` waits for that moment instead of guessing it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._buffer = b""

    def read_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        descriptor = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                raise RuntimeError(f"the listener wrote no line within {timeout} s")
            chunk = os.read(descriptor, 65536)
            if not chunk:
                raise RuntimeError(f"the listener ended (exit status {self.process.poll()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def status(self) -> ListenerCounts:
        assert self.process.stdin is not None
        self.process.stdin.write(b"status\n")
        self.process.stdin.flush()
        return cast(ListenerCounts, json.loads(self.read_line(COMMAND_TIMEOUT_S)))

    def settle(self, accepted: int | None = None, held: int | None = None) -> ListenerCounts:
        """Wait until the listener has been handed `accepted` connections in all (or more),
        holds at most `held`, has none in its accept queue and no refused one left to close."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            counts = self.status()
            if (counts["queued"] == 0 and counts["closing"] == 0
                    and (accepted is None or counts["accepted"] >= accepted)
                    and (held is None or counts["held"] <= held)):
                return counts
            if time.monotonic() > deadline:
                raise RuntimeError(f"the listener did not settle within {SETTLE_TIMEOUT_S} s "
                                   f"(waiting for accepted >= {accepted}, held <= {held}): {counts}")
            time.sleep(0.05)

    def stop(self) -> None:
        """End it (closing its stdin ends it; terminate if that does not)."""
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=5)


@dataclass
class Topology:
    server: str
    meta: str
    attackers: str
    attacker_sources: list[str]
    processes: list[subprocess.Popen[str] | subprocess.Popen[bytes]] = field(default_factory=list)
    listener: Listener | None = None

    def exec(self, namespace: str, *command: str) -> list[str]:
        return ["ip", "netns", "exec", namespace, *command]

    def party(self, namespace: str, *args: str) -> list[str]:
        return self.exec(namespace, sys.executable, "-m", "tests.security.admission_parties", *args)

    def load_rules(self, ruleset: Path) -> None:
        run(*self.exec(self.server, "nft", "-f", str(ruleset)))

    def clear_rules(self) -> None:
        run(*self.exec(self.server, "nft", "delete", "table", "inet", "wa_sip"), check=False)

    def counters(self) -> dict[str, int]:
        """Packets counted by each commented rule of table inet wa_sip (same comments summed)."""
        listed = run(*self.exec(self.server, "nft", "-j", "list", "table", "inet", "wa_sip"))
        counts: dict[str, int] = {}
        for entry in json.loads(listed.stdout)["nftables"]:
            rule = entry.get("rule")
            if not rule or "comment" not in rule:
                continue
            packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
            counts[rule["comment"]] = counts.get(rule["comment"], 0) + packets
        return counts

    def start_listener(self, port: int, cap: int) -> Listener:
        process = subprocess.Popen(self.party(self.server, "listener", "--port", str(port),
                                              "--cap", str(cap)),
                                   cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.processes.append(process)
        listener = Listener(process)
        if listener.read_line(COMMAND_TIMEOUT_S).strip() != "listening":
            raise RuntimeError("the listener did not start")
        self.listener = listener
        return listener

    def stop_listener(self) -> None:
        if self.listener is not None:
            self.listener.stop()
            self.processes.remove(self.listener.process)
            self.listener = None

    @contextmanager
    def flood(self, sources: list[str], per_source: int, port: int,
              timeout: float = 0.8) -> Iterator[dict[str, int]]:
        """Connections from `sources`, held while the block runs; yields the counts.

        The flood's own counts say how each handshake ended; `held` is what the listener holds
        of them once it has got through them all. When the block ends normally, the listener has
        let go of them too, so the next flood starts from the same listener state."""
        if self.listener is None:
            raise RuntimeError("flood needs a listener (start_listener)")
        before = self.listener.settle()
        flood = subprocess.Popen(self.party(self.attackers, "flood", "--sources", *sources,
                                            "--per-source", str(per_source), "--target",
                                            SERVER_ATTACK, "--port", str(port), "--timeout", str(timeout)),
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.processes.append(flood)
        try:
            assert flood.stdout is not None
            line = flood.stdout.readline()
            if not line:
                raise RuntimeError("the flood ended without counts")
            counts: dict[str, int] = json.loads(line)
            settled = self.listener.settle(accepted=before["accepted"] + counts["connected"])
            counts["held"] = settled["held"] - before["held"]
            counts["listener_refused"] = settled["refused"] - before["refused"]
            yield counts
            if flood.stdin:
                flood.stdin.close()
            flood.wait(timeout=10)
            self.listener.settle(held=before["held"])
        finally:
            if flood.stdin:
                flood.stdin.close()
            try:
                flood.wait(timeout=10)
            except subprocess.TimeoutExpired:
                flood.kill()

    def probe(self, port: int, timeout: float = 3.0, namespace: str | None = None,
              source: str = META_ADDRESS, target: str = SERVER_META) -> dict[str, Any]:
        done = run(*self.party(namespace or self.meta, "probe", "--source", source, "--target", target,
                               "--port", str(port), "--timeout", str(timeout)))
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self.processes.clear()


def _remove_namespaces(names: list[str]) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=20)


@contextmanager
def topology(attacker_count: int) -> Iterator[Topology]:
    tag = f"{PREFIX}{os.getpid()}"
    names = [f"{tag}-srv", f"{tag}-meta", f"{tag}-atk"]
    server, meta, attackers = names
    sources = attacker_addresses(attacker_count)
    net = Topology(server, meta, attackers, sources)
    try:
        for name in names:
            run("ip", "netns", "add", name)
            run("ip", "-n", name, "link", "set", "lo", "up")
        run("ip", "-n", server, "link", "add", "m0", "type", "veth", "peer", "name", "m1", "netns", meta)
        run("ip", "-n", server, "link", "add", "a0", "type", "veth", "peer", "name", "a1", "netns", attackers)
        run("ip", "-n", server, "addr", "add", f"{SERVER_META}/24", "dev", "m0")
        run("ip", "-n", server, "addr", "add", f"{SERVER_ATTACK}/15", "dev", "a0")
        run("ip", "-n", meta, "addr", "add", f"{META_ADDRESS}/24", "dev", "m1")
        batch = "".join(f"addr add {address}/15 dev a1\n" for address in sources)
        loaded = subprocess.run(["ip", "-n", attackers, "-batch", "-"], input=batch, text=True,
                                capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
        if loaded.returncode != 0:
            raise RuntimeError(f"attacker addresses: {loaded.stderr.strip()}")
        for name, link in ((server, "m0"), (server, "a0"), (meta, "m1"), (attackers, "a1")):
            run("ip", "-n", name, "link", "set", link, "up")
        deadline = time.monotonic() + 10  # both ends of each veth carrying (LOWER_UP)
        for name, link in ((meta, "m1"), (attackers, "a1"), (server, "m0"), (server, "a0")):
            while "LOWER_UP" not in run("ip", "-n", name, "-o", "link", "show", "dev", link).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{link} in {name} did not come up")
                time.sleep(0.1)
        yield net
    finally:
        net.stop_processes()
        _remove_namespaces(names)

"""Three network namespaces for the admission tests: the server (the rendered rules and a
listener on the TLS port), Meta (one address in a range the test configures as Meta's) and the
attackers (many addresses on one veth). Links are created inside the namespaces, never on the
host, and the host's own nftables are never touched: `nft` runs only in the server namespace.
Everything is removed on exit, failed or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.netns import benchmark_addresses as attacker_addresses
from lab.netns import unavailable_reason as unavailable_reason  # re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
SERVER_META, META_ADDRESS, META_RANGE = "10.77.0.1", "10.77.0.2", "10.77.0.0/24"
SERVER_ATTACK = "198.18.0.1"
PREFIX = "wsadm"
COMMAND_TIMEOUT_S = 20


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                            check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


@dataclass
class Topology:
    server: str
    meta: str
    attackers: str
    attacker_sources: list[str]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

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

    def start_listener(self, port: int, cap: int) -> subprocess.Popen[str]:
        listener = subprocess.Popen(self.party(self.server, "listener", "--port", str(port),
                                               "--cap", str(cap)),
                                    cwd=REPO, stdout=subprocess.PIPE, text=True)
        self.processes.append(listener)
        assert listener.stdout is not None
        if listener.stdout.readline().strip() != "listening":
            raise RuntimeError("the listener did not start")
        return listener

    @contextmanager
    def flood(self, sources: list[str], per_source: int, port: int,
              timeout: float = 0.8) -> Iterator[dict[str, int]]:
        """Connections from `sources`, held while the block runs; yields the counts."""
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
            yield json.loads(line)
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

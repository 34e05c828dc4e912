"""Network namespaces of our own for a bench or lab party: their own loopback, addresses and
nftables, so rules such as the admission ruleset can be loaded without touching the host's
tables (the bench may run on a user's production box).

`namespaces()` creates them with loopback up (`link()` joins two with a veth pair, made inside
them) and on exit, failed or interrupted, ends every process still inside (by pid, from
`ip netns pids`: all ours, we made the namespace) and deletes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

COMMAND_TIMEOUT_S = 20


class NetnsError(Exception):
    """A namespace could not be made or driven; the message has `ip`'s words."""


def unavailable_reason() -> str | None:
    """Why no namespace can be made here (not root, no ip/nft, netns refused), or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    probe = f"wsprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if made.returncode != 0:
        return f"ip netns is unavailable: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=COMMAND_TIMEOUT_S,
                   check=False)
    return None


def netns_id(pid: str = "self") -> str | None:
    """The network namespace a process is in (`net:[inode]`), None when it cannot be read."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def inside_other_namespace(outside: str) -> bool:
    """True only when this process is provably not in `outside` (the namespace its parent ran
    in, from `netns_id()`) nor in PID 1's (when readable): the only place rules may be loaded."""
    here = netns_id()
    return here is not None and here != outside and here != netns_id("1")


def nft_inside(outside: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`nft ARGS` in this process's namespace, refused (NetnsError) unless that is provably not
    `outside`: the guard that keeps a bench's rules out of the host's tables."""
    if not inside_other_namespace(outside):
        raise NetnsError("refusing to run nft outside a network namespace of our own")
    return subprocess.run(["nft", *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)


def benchmark_addresses(count: int) -> list[str]:
    """`count` addresses of 198.18.0.0/15 (RFC 2544, set aside for benchmarks), never .0/.255."""
    if not 0 < count <= 25000:
        raise ValueError("between 1 and 25000 addresses")
    return [f"198.18.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(command, input=stdin, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(command[:5])}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class Namespace:
    name: str

    def argv(self, *command: str) -> list[str]:
        """`command` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def pids(self) -> list[int]:
        """Processes inside the namespace now (only ours: we made it)."""
        try:
            listed = _run("ip", "netns", "pids", self.name)
        except (NetnsError, subprocess.TimeoutExpired):
            return []
        return [int(word) for word in listed.split() if word.isdigit()]

    def end_processes(self, grace_s: float = 5.0) -> list[int]:
        """TERM, then KILL after `grace_s`, every process still inside; returns the pids found."""
        found = self.pids()
        for pid in found:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while (left := self.pids()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return found


    def add_addresses(self, device: str, addresses: list[str], prefix: int) -> None:
        """`addresses`/`prefix` on `device`, in one `ip -batch` (hundreds take a moment)."""
        _run("ip", "-n", self.name, "-batch", "-",
             stdin="".join(f"addr add {address}/{prefix} dev {device}\n" for address in addresses))


def link(first: Namespace, first_device: str, second: Namespace, second_device: str) -> None:
    """A veth pair between two of our namespaces (created inside them, never on the host), up on
    both ends and carrying (LOWER_UP) before this returns."""
    _run("ip", "-n", first.name, "link", "add", first_device, "type", "veth", "peer", "name",
         second_device, "netns", second.name)
    for net, device in ((first, first_device), (second, second_device)):
        _run("ip", "-n", net.name, "link", "set", device, "up")
    deadline = time.monotonic() + 10
    for net, device in ((first, first_device), (second, second_device)):
        while "LOWER_UP" not in _run("ip", "-n", net.name, "-o", "link", "show", "dev", device):
            if time.monotonic() > deadline:
                raise NetnsError(f"{device} in {net.name} did not come up")
            time.sleep(0.05)


@contextmanager
def namespaces(tag: str, roles: list[str]) -> Iterator[list[Namespace]]:
    """New namespaces `<tag><pid><role>`, loopback up; on exit every process left inside each is
    ended and every one deleted, whatever happened."""
    made: list[Namespace] = []
    try:
        for role in roles:
            net = Namespace(f"{tag}{os.getpid()}{role}")
            _run("ip", "netns", "add", net.name)
            made.append(net)
            _run("ip", "-n", net.name, "link", "set", "lo", "up")
        yield made
    finally:
        for net in made:
            try:
                net.end_processes()
            finally:
                subprocess.run(["ip", "netns", "del", net.name], capture_output=True,
                               timeout=COMMAND_TIMEOUT_S, check=False)

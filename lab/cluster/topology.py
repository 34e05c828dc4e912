"""The cluster lab's network: one namespace per node on one Linux bridge, all of our own.

Every node (Meta's stand-ins, two edges, two business media nodes, PostgreSQL) gets a network
namespace `wscl<pid><role>` with one address of 198.18.20.0/24 (RFC 2544's benchmark range,
never routed) on a veth whose other end sits on a bridge inside a hub namespace: nothing is made
in the host's namespace, so the host's links, routes and nftables tables are never touched.
`site_network()` removes everything on exit, failed or not; `remove_leftovers()` removes the
namespaces of a run that crashed before its own clean-up (its pid no longer alive).

The lab process itself stays in the host's namespace. `inside(node)` moves the calling thread
into a node's namespace for a moment (setns(2): sockets made there stay there), and
`NamespaceLoop` runs an asyncio loop in a thread of its own that lives inside one namespace, so
a stand-in written for loopback (MetaUac, MediaPeer) runs unchanged at a node's address.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from lab.netns import COMMAND_TIMEOUT_S, Namespace, NetnsError, link, namespaces

TAG = "wscl"
PREFIX = 24
BRIDGE = "br0"
CLONE_NEWNET = 0x40000000
ROLES = {  # role -> its address on the site's segment
    "meta": "198.18.20.1",
    "edgea": "198.18.20.11",
    "edgeb": "198.18.20.12",
    "media1": "198.18.20.21",
    "media2": "198.18.20.22",
    "pg": "198.18.20.30",
}
_LEFTOVER = re.compile(rf"^{TAG}(\d+)[a-z0-9]+$")
T = TypeVar("T")


@dataclass(frozen=True)
class Node:
    role: str
    address: str
    net: Namespace

    def argv(self, *command: str) -> list[str]:
        return self.net.argv(*command)


@dataclass(frozen=True)
class SiteNetwork:
    nodes: dict[str, Node]
    hub: Namespace

    def __getitem__(self, role: str) -> Node:
        return self.nodes[role]


def _libc_setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise NetnsError(f"setns: {os.strerror(ctypes.get_errno())}")


@contextmanager
def inside(node: Node) -> Iterator[None]:
    """The calling thread in `node`'s namespace until the block ends (then back where it was)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{node.net.name}", os.O_RDONLY)
    try:
        _libc_setns(target)
        try:
            yield
        finally:
            _libc_setns(home)
    finally:
        os.close(target)
        os.close(home)


class NamespaceLoop:
    """An asyncio loop in a thread inside `node`'s namespace; `run()` runs a coroutine on it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._main, name=f"netns-{node.role}", daemon=True)
        self._thread.start()
        self._ready.result(timeout=10)

    def _main(self) -> None:
        try:
            fd = os.open(f"/run/netns/{self.node.net.name}", os.O_RDONLY)
            try:
                _libc_setns(fd)  # this thread only, for good: it exists for this namespace
            finally:
                os.close(fd)
        except (OSError, NetnsError) as error:
            self._ready.set_exception(error)
            return
        asyncio.set_event_loop(self.loop)
        self._ready.set_result(None)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=timeout)

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers() -> list[str]:
    """Delete the namespaces (and so their veths) of cluster runs whose process is gone."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, check=False).stdout
    removed = []
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _LEFTOVER.match(name)
        if match is None or _pid_alive(int(match[1])):
            continue
        Namespace(name).end_processes(grace_s=2)
        subprocess.run(["ip", "netns", "del", name], capture_output=True,
                       timeout=COMMAND_TIMEOUT_S, check=False)
        removed.append(name)
    return removed


def our_namespaces() -> list[str]:
    """The cluster namespaces that exist now (ours and leftovers), by name prefix."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT_S, check=False).stdout
    return [line.split()[0] for line in listed.splitlines()
            if line.split() and _LEFTOVER.match(line.split()[0])]


def _run(net: Namespace, *args: str) -> None:
    done = subprocess.run(["ip", "-n", net.name, *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip -n {net.name} {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def site_network(roles: dict[str, str] | None = None) -> Iterator[SiteNetwork]:
    """The hub (a bridge) and one namespace per role, linked and addressed; all removed on exit."""
    plan = roles or ROLES
    remove_leftovers()
    with namespaces(TAG, ["hub", *plan]) as made:
        hub, rest = made[0], made[1:]
        _run(hub, "link", "add", BRIDGE, "type", "bridge")
        _run(hub, "link", "set", BRIDGE, "up")
        nodes = {}
        for (role, address), net in zip(plan.items(), rest, strict=True):
            link(hub, f"p-{role}", net, "eth0")
            _run(hub, "link", "set", f"p-{role}", "master", BRIDGE)
            net.add_addresses("eth0", [address], PREFIX)
            nodes[role] = Node(role, address, net)
        yield SiteNetwork(nodes, hub)


def hosts_line_addresses(hosts_text: str, name: str) -> list[str]:
    """Every address a hosts file gives `name`, in file order (glibc's `multi on` answer)."""
    found = []
    for line in hosts_text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and name.lower() in (w.lower() for w in words[1:]):
            found.append(words[0])
    return found



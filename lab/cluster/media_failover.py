"""rtpengine's replication in the cluster lab: the site's Redis, and each edge's floating media
address moved as keepalived/VRRP would move it.

With `media_replication` the site runs Debian's redis-server on the state node (PostgreSQL's),
each edge's rtpengine writes its calls to a database of its own ([media.rtpengine] redis) and
keeps the other edge's ready from its keyspace notifications ([media.rtpengine] standby), media
on a floating address per edge (MEDIA_ADDRESSES, held by its edge at the start). `take_over`
is what VRRP does when an edge's host dies: the address leaves the dead host and comes up on
the survivor, which announces it with a gratuitous ARP so Meta's and the business's nodes send
to the survivor at once. Every edge may bind an address it does not hold yet
(net.ipv4.ip_nonlocal_bind, set in its own namespace only).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from lab.cluster.topology import PREFIX, Node, inside
from lab.netns import COMMAND_TIMEOUT_S, NetnsError
from lab.processes import LabError, ManagedProcess

REDIS_PORT = 6379
MEDIA_ADDRESSES = {"edgea": "198.18.20.111", "edgeb": "198.18.20.112"}
REDIS_DBS = {"edgea": 1, "edgeb": 2}
DEVICE = "eth0"


def redis_binary() -> str | None:
    return shutil.which("redis-server")


def _ip(node: Node, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", "-n", node.net.name, *args], capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        raise NetnsError(f"ip -n {node.net.name} {' '.join(args)}: {done.stderr.strip()}")
    return done


def allow_nonlocal_bind(node: Node) -> None:
    """rtpengine on `node` may bind the other edges' media addresses before they move here."""
    done = subprocess.run(node.argv("sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"),
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip_nonlocal_bind in {node.net.name}: {done.stderr.strip()}")


def hold_address(node: Node, address: str) -> None:
    """`address` up on `node` (keepalived's MASTER for it), announced with a gratuitous ARP."""
    _ip(node, "addr", "add", f"{address}/{PREFIX}", "dev", DEVICE)
    gratuitous_arp(node, address)


def drop_address(node: Node, address: str) -> None:
    _ip(node, "addr", "del", f"{address}/{PREFIX}", "dev", DEVICE, check=False)


def holds(node: Node, address: str) -> bool:
    shown = _ip(node, "-o", "addr", "show", "dev", DEVICE).stdout
    return f" {address}/" in shown


def take_over(dead: Node, survivor: Node, address: str) -> float:
    """The dead host's floating `address` moved to `survivor`; the time it took (s)."""
    started = time.monotonic()
    drop_address(dead, address)  # a dead host holds nothing
    hold_address(survivor, address)
    return time.monotonic() - started


def gratuitous_arp(node: Node, address: str, count: int = 2) -> None:
    """ARP requests for `address` from `node`'s eth0 to everyone (sender = target = address),
    as keepalived sends on taking over an address: neighbours update their entry for it."""
    mac_text = _ip(node, "-o", "link", "show", "dev", DEVICE).stdout
    words = mac_text.split()
    mac = bytes.fromhex(words[words.index("link/ether") + 1].replace(":", ""))
    ip = socket.inet_aton(address)
    broadcast = b"\xff" * 6
    frame = (broadcast + mac + b"\x08\x06"  # Ethernet: to all, from us, ARP
             + b"\x00\x01\x08\x00\x06\x04\x00\x01"  # Ethernet/IPv4, request
             + mac + ip + b"\x00" * 6 + ip)
    with inside(node):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        raw.bind((DEVICE, 0))
        for _ in range(count):
            raw.send(frame)
    finally:
        raw.close()


class RedisNode:
    """Debian's redis-server on `node` (the state node), nothing saved to disk, keyspace
    notifications of string and generic commands on (what rtpengine's subscription reads)."""

    def __init__(self, node: Node, folder: Path) -> None:
        self.node = node
        self.folder = folder
        self.process: ManagedProcess | None = None

    def url(self, db: int) -> str:
        return f"redis://{self.node.address}:{REDIS_PORT}/{db}"

    def start(self) -> RedisNode:
        binary = redis_binary()
        if binary is None:
            raise LabError("redis-server is not installed (Debian's redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess("redis", self.node.argv(
            binary, "--bind", self.node.address, "--port", str(REDIS_PORT), "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.folder),
            "--notify-keyspace-events", "K$g", "--daemonize", "no"),
            self.folder / "redis.log")
        self.process.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "PONG":
                return self
            if not self.process.running():
                break
            time.sleep(0.1)
        raise LabError(f"redis-server did not start:\n{self.process.log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def command(self, *words: str, db: int = 0) -> str:
        """One command through Debian's redis-cli on the node; its reply, '' on failure."""
        done = subprocess.run(self.node.argv(
            "redis-cli", "-h", self.node.address, "-p", str(REDIS_PORT), "-n", str(db), *words),
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    def keys_in(self, db: int) -> int:
        """How many calls' records database `db` holds now (-1: Redis did not answer)."""
        text = self.command("DBSIZE", db=db)
        return int(text) if text.isdigit() else -1

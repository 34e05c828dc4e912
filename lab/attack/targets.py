"""Where an attack may go (loopback only) and where it comes from (127.0.0.2 and up).

Kamailio counts connections per source address, so attack traffic leaves from other loopback
addresses than Meta's legitimate leg (stunnel on 127.0.0.1): the whole 127/8 block reaches
the edge's 127.0.0.1 sockets on Linux without any setup.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass


class NotLoopback(ValueError):
    """An attack was pointed at something other than this machine."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def loopback_target(host: str, port: int) -> Target:
    """A target on this machine's loopback; anything else raises NotLoopback."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(f"{host}: attacks only target loopback addresses")
    return Target(host, port)


def attacker_sources(count: int, first: int = 2) -> list[str]:
    """`count` loopback source addresses from 127.0.0.<first> on (never 127.0.0.1)."""
    if not 0 < count <= 250 or first < 2:
        raise ValueError("between 1 and 250 attacker sources, starting at 127.0.0.2 or later")
    return [f"127.0.0.{first + index}" for index in range(count)]


def connect(target: Target, source: str | None, timeout: float) -> socket.socket:
    """A TCP connection to `target` from `source` (an address of this host)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source is not None:
            sock.bind((source, 0))
        sock.connect(target.address)
    except OSError:
        sock.close()
        raise
    return sock

"""rtpengine's ng control protocol, as far as `doctor`, the lab and the tests need it: ``ping``,
``list`` (the calls rtpengine holds: a leak shows there) and ``statistics``.

The protocol is a cookie, a space and a bencoded dictionary over UDP; ``ping`` answers
``{"result": "pong"}``. Kamailio's rtpengine module does the real work (offer, answer, delete):
this only tells an operator whether the rtpengine the edge is configured for is there, and what
it holds.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from provisioning.bencode import BencodeError, decode, encode


class NgError(Exception):
    """rtpengine did not answer, or not as rtpengine would: the message says which."""


def ping(host: str, port: int, timeout_s: float = 1.0) -> None:
    """Raise NgError unless rtpengine at host:port answers ``pong`` within ``timeout_s``."""
    cookie = os.urandom(6).hex().encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(cookie + b" d7:command4:pinge", (host, port))
            answer = sock.recv(4096)
        except TimeoutError:
            raise NgError(f"rtpengine at {host}:{port} did not answer ng ping within "
                          f"{timeout_s:.0f} s (not running, or listen-ng differs)") from None
        except OSError as error:
            raise NgError(f"rtpengine at {host}:{port}: {error.strerror or error}") from None
    if answer != cookie + b" d6:result4:ponge":
        raise NgError(f"{host}:{port} answered ng ping with {answer[:80]!r}, not pong")


def command(host: str, port: int, request: dict[str, Any], timeout_s: float = 1.0) -> dict[str, Any]:
    """rtpengine's answer to one ng `request`; NgError when it is silent, not bencode, or an
    ``error`` result (with rtpengine's reason)."""
    cookie = os.urandom(6).hex().encode()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(cookie + b" " + encode(request), (host, port))
            answer = sock.recv(65535)
        except TimeoutError:
            raise NgError(f"rtpengine at {host}:{port} did not answer {request.get('command')!r} "
                          f"within {timeout_s:.0f} s") from None
        except OSError as error:
            raise NgError(f"rtpengine at {host}:{port}: {error.strerror or error}") from None
    if not answer.startswith(cookie + b" "):
        raise NgError(f"{host}:{port} answered with another cookie: {answer[:40]!r}")
    try:
        reply = decode(answer[len(cookie) + 1:])
    except BencodeError as error:
        raise NgError(f"{host}:{port} answered something that is not bencode ({error})") from None
    if not isinstance(reply, dict):
        raise NgError(f"{host}:{port} answered {type(reply).__name__}, not a dictionary")
    if reply.get("result") == "error":
        raise NgError(f"rtpengine refused {request.get('command')!r}: "
                      f"{reply.get('error-reason', 'no reason given')}")
    return reply


def call_ids(host: str, port: int, timeout_s: float = 1.0) -> list[str]:
    """The Call-IDs rtpengine holds a session for (``list``)."""
    calls = command(host, port, {"command": "list", "limit": 10000}, timeout_s).get("calls", [])
    return [str(c) for c in calls] if isinstance(calls, list) else []

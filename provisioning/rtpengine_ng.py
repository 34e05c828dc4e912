"""rtpengine's ng control protocol, as far as `doctor` and the lab need it: ``ping``.

The protocol is a cookie, a space and a bencoded dictionary over UDP; ``ping`` answers
``{"result": "pong"}``. Kamailio's rtpengine module does the real work (offer, answer, delete):
this only tells an operator whether the rtpengine the edge is configured for is there.
"""

from __future__ import annotations

import os
import socket


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

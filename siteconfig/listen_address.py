"""``host:port`` for a listening socket, checked when the settings load, not when binding fails.

Kept in ``esl/`` with the standard library only, so the controller's settings stay
self-contained (siteconfig/controller.py) and the site config can use the same check.
"""

from __future__ import annotations

import ipaddress


def parse_listen_address(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """``("127.0.0.1", 9094)`` from ``127.0.0.1:9094`` or ``[::1]:9094``; IP literals only.

    ``any_port`` also accepts port 0 (the system picks a free one: tests).

    A name would be resolved at start-up to whatever it means then; an address says exactly
    which interface serves metrics, which matters when the answer must stay internal.
    """
    host, separator, port_text = value.rpartition(":")
    if not separator:
        raise ValueError(f"{value!r}: give address:port, e.g. 127.0.0.1:9094")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: put an IPv6 address in brackets, e.g. [::1]:9094")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    lowest = 0 if any_port else 1
    if not port_text.isdigit() or not lowest <= int(port_text) < 65536:
        raise ValueError(f"{value!r}: port must be {lowest}-65535")
    return host, int(port_text)

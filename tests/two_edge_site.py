"""Two edges of one site ([cluster]) on loopback, as the cluster lab runs them on their own
addresses: A on 127.0.0.1, B on 127.0.0.2, the same ports, in-dialog key file, nonce secret and
advertised name, FreeSWITCH's nodes in both dispatchers, DMQ peered before the tests begin.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.edge import LAB_PASSWORD, EdgeLab, EdgePorts
from lab.processes import free_port
from tests.conftest import edge_overrides
from tests.test_edge_cluster import wait_for_dmq_peer

NUMBER = "+15550100001"
# every edge's Record-Route address toward Meta ([cluster]: the site's one name, resolving to
# every edge; Kamailio resolves it at start, so here an address: A's, which B takes as its own)
SITE_NAME = "127.0.0.1"


@contextlib.contextmanager
def two_edge_site(folder: Path) -> Iterator[tuple[EdgeLab, EdgeLab]]:
    """Edges A and B, running and peered; B trusts certificates of A's test CA (the Meta
    stand-in's)."""
    secret = folder / "nonce.secret"
    secret.write_text("0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f\n", encoding="utf-8")
    secret.chmod(0o600)
    dmq = [f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
           f"127.0.0.2:{free_port(socket.SOCK_DGRAM, '127.0.0.2')}"]
    ports_a = EdgePorts()
    ports_b = replace(ports_a, meta_client=free_port(), metrics=free_port())

    def overrides(host: str, this_edge: str, ports: EdgePorts, **more: Any) -> dict[str, Any]:
        return edge_overrides(
            cluster={"edges": dmq, "this_edge": this_edge, "nonce_secret_file": str(secret)},
            listen={"tls": f"{host}:{ports.tls}", "internal": f"{host}:{ports.internal}",
                    "front_backend": f"{host}:{ports.front_backend}",
                    "outbound_tls": f"{host}:{ports.outbound_tls}", "advertise": SITE_NAME},
            edge={"in_dialog_key_file": str(folder / "in-dialog-keys.json")}, **more)

    edge_a = EdgeLab(folder / "a", overrides("127.0.0.1", dmq[0], ports_a),
                     passwords={NUMBER: LAB_PASSWORD}, ports=ports_a)
    edge_b = EdgeLab(folder / "b", overrides("127.0.0.2", dmq[1], ports_b,
                                             tls={"ca_list": str(edge_a.ca.certificate)}),
                     passwords={NUMBER: LAB_PASSWORD}, ports=ports_b)
    with edge_a, edge_b:
        wait_for_dmq_peer(edge_a, dmq[1])
        wait_for_dmq_peer(edge_b, dmq[0])
        yield edge_a, edge_b

"""One edge of the cluster lab: Kamailio, its rtpengine and HAProxy (Meta's TLS port on 5.6),
all inside the edge's namespace at the edge's address, from what `provision render` writes.

The site config is the lab's (EdgeLab: examples/site.toml with scratch paths) with the node's
sockets, the site's PostgreSQL credential store, both business media nodes in the dispatcher
(probed every second), and [cluster] naming both edges' DMQ sockets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lab.certs import TestCa
from lab.cluster.media_failover import MEDIA_ADDRESSES
from lab.cluster.topology import Node, inside
from lab.edge import EdgeLab, merge
from lab.processes import LabError, ManagedProcess, wait_for_tcp
from lab.rtpengine import rtpengine_binary
from lab.rtpengine_section import rtpengine_overrides
from lab.tls_front import check_haproxy_config, haproxy_binary
from provisioning.in_dialog_keys import ensure_key_file
from provisioning.kamailio_binary import kamailio_binary
from provisioning.kamailio_rpc import RpcError, call
from provisioning.render import RenderOptions, render_kamailio, target_features, tls_front
from provisioning.rtpengine_ng import NgError, ping

TLS_PORT = 5061
INTERNAL_PORT = 5060
DMQ_PORT = 5090
BUSINESS_PORT = 5080
NG_LISTEN = "127.0.0.1:2223"  # the node's own loopback: each namespace has one
PROBE_INTERVAL_S = 1


def cluster_overrides(node: Node, edges: list[Node], business: list[Node], store_url: str,
                      shared: Path, site_name: str,
                      redis_urls: dict[str, str] | None = None) -> dict[str, Any]:
    """The site config of edge `node` (on top of the lab's rtpengine one). Every edge
    advertises the site's one name (`site_name`, resolving to all of them) in its Record-Route,
    so Meta's in-dialog requests go to whichever edge answers for the name.

    `redis_urls` (edge role -> its rtpengine's Redis database): rtpengine's replication, media
    on each edge's floating address (lab/cluster/media_failover.py), the other edges' calls
    kept ready. None: media on the edge's own address, nothing replicated."""
    address = node.address
    media: dict[str, Any] = {"ng_listen": NG_LISTEN, "interface": address, "port_min": 30000,
                             "port_max": 30199}
    if redis_urls is not None:
        media |= {"interface": MEDIA_ADDRESSES[node.role], "redis": redis_urls[node.role],
                  "standby": [{"interface": MEDIA_ADDRESSES[edge.role],
                               "redis_db": int(redis_urls[edge.role].rsplit("/", 1)[1])}
                              for edge in edges if edge.role != node.role]}
    return merge(rtpengine_overrides(), {
        "listen": {"tls": f"{address}:{TLS_PORT}", "internal": f"{address}:{INTERNAL_PORT}",
                   "advertise": site_name,
                   "front_backend": "127.0.0.1:5062", "outbound_tls": "127.0.0.1:5063"},
        "credentials": {"store": store_url},
        "freeswitch": {"sets": [{"id": 1, "algorithm": "priority", "nodes": [
            {"uri": f"sip:{media.address}:{BUSINESS_PORT}", "priority": 10 - 5 * i}
            for i, media in enumerate(business)]}]},
        "metrics": {"edge_listen": f"{address}:9095"},
        # one MAC key file for the whole site: every edge checks what any edge signed
        "edge": {"in_dialog_key_file": str(shared / "in-dialog-keys.json")},
        "media": {"anchor": "rtpengine", "rtpengine": media},
        "cluster": {"edges": [f"{edge.address}:{DMQ_PORT}" for edge in edges],
                    "this_edge": f"{address}:{DMQ_PORT}",
                    "nonce_secret_file": str(shared / "nonce.secret")},
    })


class ClusterEdge(EdgeLab):
    """EdgeLab's config and CA, started inside `node`'s namespace (no stunnel: Meta's stand-in
    speaks TLS itself, to the name that resolves to every edge)."""

    def __init__(self, node: Node, folder: Path, overrides: dict[str, Any], ca: TestCa) -> None:
        self.node = node
        super().__init__(folder, overrides, passwords={})
        # one site CA: Meta checks every edge's certificate for the one name against it (two
        # lab CAs share a subject, and OpenSSL would try only the first)
        self.ca = ca
        self.config = self._site_config()

    def start(self) -> None:
        ensure_key_file(self.config.edge.in_dialog_key_file)
        options = RenderOptions(workers=2, probe_interval=PROBE_INTERVAL_S, log_level=self.log_level)
        rendered = render_kamailio(self.config, self.folder / "out", options)
        front = tls_front(self.config, target_features(options))
        run_dir = self.folder / "run"
        run_dir.mkdir(exist_ok=True)
        self.rtpengine = ManagedProcess("rtpengine", self.node.argv(
            rtpengine_binary(), f"--config-file={rendered.parent / 'rtpengine' / 'rtpengine.conf'}",
            "--config-section=rtpengine", "--foreground", "--log-stderr",
            f"--pidfile={run_dir / 'rtpengine.pid'}"), self.folder / "rtpengine.log")
        self.processes.append(self.rtpengine.start())
        self._wait_for_rtpengine()
        self.kamailio = ManagedProcess("kamailio", self.node.argv(
            kamailio_binary(), "-f", str(rendered / "kamailio.cfg"), "-DD", "-E", "-m", "64",
            "-M", "8", "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid")),
            self.folder / "kamailio.log")
        self.processes.append(self.kamailio.start())
        self._wait_for_rpc()
        if front == "haproxy":
            config = self.folder / "out" / "haproxy" / "haproxy.cfg"
            check_haproxy_config(config)
            self.haproxy = ManagedProcess("haproxy", self.node.argv(
                haproxy_binary(), "-db", "-f", str(config)), self.folder / "haproxy.log")
            self.processes.append(self.haproxy.start())
        with inside(self.node):
            wait_for_tcp(self.node.address, TLS_PORT, 15, f"edge {self.node.role} TLS",
                         self.folder / "kamailio.log")

    def _wait_for_rtpengine(self) -> None:
        assert self.rtpengine is not None
        host, port = NG_LISTEN.split(":")
        for _ in range(100):
            try:
                with inside(self.node):
                    ping(host, int(port), timeout_s=0.1)
                return
            except NgError:
                if not self.rtpengine.running():
                    break
        raise LabError(f"rtpengine did not start on {self.node.role}:\n"
                       + self.rtpengine.log_tail())

    def _wait_for_rpc(self) -> None:
        assert self.kamailio is not None
        for _ in range(200):
            if not self.kamailio.running():
                raise LabError(f"kamailio on {self.node.role} exited at start:\n"
                               + self.kamailio.log_tail())
            try:
                call(self.rpc_socket, "core.uptime", timeout=0.5)
                return
            except RpcError:
                time.sleep(0.1)
        raise LabError(f"kamailio on {self.node.role} did not answer RPC; see {self.kamailio.log}")

    def kill(self) -> None:
        """The edge's host dying: Kamailio, HAProxy and rtpengine SIGKILLed at once."""
        for process in self.processes:
            process.kill()

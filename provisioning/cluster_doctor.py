"""`provision doctor` for a site of several edges ([cluster]): does this edge's DMQ see its peers?

An edge whose DMQ lost a peer still takes calls, but the digest lockout and the nonces it
accepts stay its own: a source locked out here can try again on the other edge, and a nonce
one edge issued still verifies on the other (the secret is shared) while its replays are
only refused where they were seen. Nothing in the call path says so; dmq.list_nodes does.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provisioning import kamailio_rpc
from provisioning.doctor import Finding, Level
from provisioning.render import RenderError, cluster_nonce_secret, socket_text
from siteconfig.model import SiteConfig

CHECK = "cluster.dmq"


def cluster_findings(cfg: SiteConfig, rpc_sockets: Sequence[Path]) -> list[Finding]:
    """Nothing for a single edge; else the nonce secret, and each peer as this edge's dmq sees
    it (active, or why not) through each RPC socket given."""
    cluster = cfg.cluster
    if not cluster.enabled:
        return []
    findings = [_secret_finding(cfg)]
    own = socket_text(*cluster.own_socket())
    if not rpc_sockets:
        return [*findings, Finding(
            CHECK, Level.WARN, f"edge {own}", "no Kamailio RPC socket given: cannot ask dmq "
            "whether the other edges are reached",
            "pass --rpc-socket OUT/kamailio/kamailio_rpc.sock (this edge's)")]
    for rpc in rpc_sockets:
        try:
            nodes = kamailio_rpc.call(rpc, "dmq.list_nodes")
        except kamailio_rpc.RpcError as error:
            findings.append(Finding(CHECK, Level.FAIL, f"edge {own}", f"cannot ask dmq: {error}",
                                    "check the --rpc-socket path, that Kamailio runs and that it "
                                    "was rendered with [cluster] (dmq loaded)"))
            continue
        findings += peer_findings(cfg, nodes if isinstance(nodes, list) else [nodes])
    return findings


def peer_findings(cfg: SiteConfig, nodes: list[Any]) -> list[Finding]:
    """One finding per peer edge, from dmq.list_nodes' answer."""
    known = {(str(n.get("host")), str(n.get("port"))): n for n in nodes if isinstance(n, dict)}
    own_host, own_port = cfg.cluster.own_socket()
    found = []
    local = known.get((own_host, str(own_port)))
    if local is None or not local.get("local"):
        found.append(Finding(
            CHECK, Level.FAIL, f"edge {socket_text(own_host, own_port)}",
            "the Kamailio asked is not this edge's DMQ node (cluster.this_edge)",
            "render this edge with its own this_edge, or give its --rpc-socket"))
    for host, port in cfg.cluster.peer_sockets():
        subject = f"peer edge {socket_text(host, port)}"
        node = known.get((host, str(port)))
        if node is not None and node.get("status") == "active":
            found.append(Finding(CHECK, Level.PASS, subject, "dmq reaches it (active): lockouts "
                                 "and accepted nonces are shared"))
            continue
        state = "not known to dmq" if node is None else f"dmq node {node.get('status')}"
        found.append(Finding(
            CHECK, Level.FAIL, subject, f"{state}: lockouts and nonce replays recorded on one "
            "edge are not enforced on the other",
            f"check that the peer's Kamailio runs with cluster.this_edge = "
            f"{socket_text(host, port)}, that UDP {port} is open between the edges, and that both "
            "list the same cluster.edges"))
    return found


def _secret_finding(cfg: SiteConfig) -> Finding:
    try:
        cluster_nonce_secret(cfg)
    except RenderError as error:
        return Finding("cluster.nonce_secret", Level.FAIL, "nonce secret", str(error),
                       "write the site's nonce secret (the same on every edge) to "
                       "cluster.nonce_secret_file, mode 0600")
    path = cfg.cluster.nonce_secret_file
    if path is not None and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Finding("cluster.nonce_secret", Level.WARN, f"nonce secret {path}",
                       "readable by others: whoever reads it can make nonces every edge accepts "
                       "(the password is still needed to answer them)", f"chmod 600 {path}")
    return Finding("cluster.nonce_secret", Level.PASS, "nonce secret",
                   "readable; every edge rendered from it verifies the others' nonces")

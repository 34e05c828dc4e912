"""The whole cluster lab site, started in order and always torn down: the network, PostgreSQL
(credentials written as `provision sync` would), two edges sharing DMQ state, two business
media nodes (FreeSWITCH + wa-esl each where a FreeSWITCH is installed, else the lab's plain
SIP/RTP business side: lab/cluster/freeswitch_node.py, business_node.py), the hosts file naming
both edges, and Meta's loop in Meta's namespace."""

from __future__ import annotations

import json
import secrets
import sys
import time
import tomllib
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from lab.certs import make_test_ca
from lab.cluster.edge_node import BUSINESS_PORT, DMQ_PORT, ClusterEdge, cluster_overrides
from lab.cluster.freeswitch_node import FreeswitchMediaNode, freeswitch_choice, node_config
from lab.cluster.media_failover import (
    MEDIA_ADDRESSES,
    REDIS_DBS,
    RedisNode,
    allow_nonlocal_bind,
    hold_address,
)
from lab.cluster.meta import (
    META_TONE_HZ,
    MetaCall,
    call_up,
    hang_up,
    resolve,
    tls_context,
    whole_call,
)
from lab.cluster.postgres import PostgresNode
from lab.cluster.topology import NamespaceLoop, Node, SiteNetwork, inside, site_network
from lab.edge import EXAMPLE_CONFIG
from lab.freeswitch import dtls_certificate
from lab.media.sdp import SrtpMode
from lab.processes import LabError, ManagedProcess
from lab.rtpengine_section import PASSWORDS
from provisioning.credential_store import credential_for
from provisioning.kamailio_rpc import call
from provisioning.pg_store import open_postgres_store

REPO = Path(__file__).resolve().parent.parent.parent
EDGES = ("edgea", "edgeb")
MEDIA = ("media1", "media2")
BusinessNode = ManagedProcess | FreeswitchMediaNode


class ClusterSite:
    """`media_replication`: rtpengine's Redis replication and floating media addresses
    (lab/cluster/media_failover.py); off, each edge's media is its own, as without them.
    `use_freeswitch`: the media nodes are FreeSWITCH + wa-esl when one is installed (None, the
    default), or the plain side whatever is installed (False); `media_kind` says which, why."""

    def __init__(self, folder: Path, media_replication: bool = True,
                 use_freeswitch: bool | None = None) -> None:
        self.folder = folder
        binary, self.media_kind = freeswitch_choice()
        if use_freeswitch is False and binary is not None:
            binary, self.media_kind = None, ("business media nodes: the lab's plain SIP/RTP "
                                             "side (lab/cluster/business_node.py), asked for")
        self.freeswitch = binary
        self.media_replication = media_replication
        self.redis: RedisNode | None = None
        self.stack = ExitStack()
        self.network: SiteNetwork | None = None
        self.postgres: PostgresNode | None = None
        self.edges: dict[str, ClusterEdge] = {}
        self.business: dict[str, BusinessNode] = {}
        self.meta: NamespaceLoop | None = None
        self.hosts_file = folder / "hosts"
        self.sip_domain = ""
        self.serial = 0
        self.calls: dict[str, MetaCall] = {}  # wacid -> the call, as Meta saw it

    # ---- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> ClusterSite:
        try:
            self._start()
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stack.close()

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.network = self.stack.enter_context(site_network())
        shared = self.folder / "site"
        shared.mkdir(exist_ok=True)
        secret = shared / "nonce.secret"
        secret.write_text(secrets.token_hex(24) + "\n", encoding="utf-8")
        secret.chmod(0o600)
        self.postgres = PostgresNode(self.network["pg"], self.folder / "postgres.log").create()
        self.stack.callback(self.postgres.remove)
        edge_nodes = [self.network[role] for role in EDGES]
        media_nodes = [self.network[role] for role in MEDIA]
        if self.freeswitch is None:
            for role in MEDIA:
                self.start_business(role)
        self.ca = make_test_ca(shared / "ca", "wa-sip cluster lab CA")
        redis_urls = None
        if self.media_replication:
            self.redis = RedisNode(self.network["pg"], self.folder / "redis").start()
            self.stack.callback(self.redis.stop)
            redis_urls = {role: self.redis.url(REDIS_DBS[role]) for role in EDGES}
            for node in edge_nodes:
                allow_nonlocal_bind(node)
                hold_address(node, MEDIA_ADDRESSES[node.role])
        first = True
        for node in edge_nodes:
            edge = ClusterEdge(node, self.folder / node.role, cluster_overrides(
                node, edge_nodes, media_nodes, self.postgres.url, shared, site_name(),
                redis_urls), self.ca)
            if first:
                self._write_credentials(edge)
                first = False
            self.stack.callback(edge.stop)
            edge.start()
            self.edges[node.role] = edge
        self.sip_domain = self.edges["edgea"].config.site.sip_domain
        self.hosts_file.write_text("".join(f"{node.address} {self.sip_domain}\n"
                                           for node in edge_nodes), encoding="utf-8")
        for edge in self.edges.values():
            self.wait_for_dmq_peers(edge)
        if self.freeswitch is not None:  # their config is the edge's, made above
            self.dtls_pem = dtls_certificate(shared / "dtls-srtp.pem")
            for role in MEDIA:
                self.start_business(role)
        self.meta = NamespaceLoop(self.network["meta"])
        self.stack.callback(self.meta.close)
        self.wait_for_probes()

    def _write_credentials(self, edge: ClusterEdge) -> None:
        """What `provision sync` writes: the lab numbers' HA1 pairs, in the site's PostgreSQL."""
        assert self.postgres is not None and self.network is not None
        domain = edge.config.site.sip_domain
        with inside(self.network["pg"]):
            store = open_postgres_store(self.postgres.url)
            try:
                store.put_many([credential_for(number, password, domain)
                                for number, password in PASSWORDS.items()], domain)
            finally:
                store.close()

    def start_business(self, role: str) -> BusinessNode:
        assert self.network is not None
        node = self.network[role]
        if self.freeswitch is not None:
            return self._start_freeswitch_node(node)
        log = self.folder / f"{role}.log"
        process = ManagedProcess(role, node.argv(
            sys.executable, "-m", "lab.cluster.business_node", node.address, str(BUSINESS_PORT)),
            log, cwd=REPO)
        process.start()
        self.stack.callback(process.stop)
        deadline = time.monotonic() + 20
        while '"listening"' not in log.read_text(errors="replace"):
            if not process.running() or time.monotonic() > deadline:
                raise LabError(f"business node {role} did not start:\n{process.log_tail()}")
            time.sleep(0.1)
        self.business[role] = process
        return process

    def _start_freeswitch_node(self, node: Node) -> FreeswitchMediaNode:
        assert self.postgres is not None and self.network is not None
        media = self.business.get(node.role)
        if not isinstance(media, FreeswitchMediaNode):  # else a restart: its logs go on
            edges = [self.network[role] for role in EDGES]
            folder = self.folder / node.role
            raw = node_config(self.edges["edgea"].raw_config, node, edges, self.postgres.url,
                              folder)
            media = FreeswitchMediaNode(node, folder, raw, self.dtls_pem)
            self.stack.callback(media.close)
            self.stack.callback(media.stop)
        try:
            media.start()
        except LabError as error:
            raise LabError(f"business node {node.role} (FreeSWITCH + wa-esl) did not start: "
                           f"{error}") from None
        self.business[node.role] = media
        return media

    def media_node(self, role: str) -> FreeswitchMediaNode:
        """The FreeSWITCH + wa-esl media node `role` (only when the site runs them)."""
        media = self.business[role]
        assert isinstance(media, FreeswitchMediaNode), "the site runs the plain business side"
        return media

    def wait_for_dmq_peers(self, edge: ClusterEdge, timeout_s: float = 20) -> None:
        others = {e.node.address for e in self.edges.values() if e is not edge}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            nodes = call(edge.rpc_socket, "dmq.list_nodes")
            listed = nodes if isinstance(nodes, list) else [nodes]
            active = {n.get("host") for n in listed
                      if n.get("status") == "active" and not n.get("local")
                      and str(n.get("port")) == str(DMQ_PORT)}
            if others <= active:
                return
            time.sleep(0.2)
        raise LabError(f"edge {edge.node.role} never saw its peers over DMQ")

    def dispatcher_states(self, edge: ClusterEdge) -> dict[str, str]:
        """Business node address -> the dispatcher's flags for it on `edge` (AP, IP, ...)."""
        answer = call(edge.rpc_socket, "dispatcher.list")
        found: dict[str, str] = {}
        for record in _records(answer):
            dest = record.get("DEST", record)
            uri = str(dest.get("URI", ""))
            found[uri.removeprefix("sip:").split(":")[0]] = str(dest.get("FLAGS", ""))
        return found

    def wait_for_probes(self, timeout_s: float = 15) -> None:
        """Until both edges' dispatchers see every running business node active."""
        assert self.network is not None
        wanted = {self.network[r].address for r, p in self.business.items() if p.running()}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(all(s.get(a, "") == "AP" for a in wanted)
                   for s in map(self.dispatcher_states, self.edges.values())):
                return
            time.sleep(0.2)
        raise LabError("the dispatchers never saw the business nodes answer OPTIONS")

    # ---- calls ---------------------------------------------------------------------------------

    def new_call(self, mode: SrtpMode = SrtpMode.SDES) -> MetaCall:
        self.serial += 1
        meta_call = MetaCall(f"wacid.cluster{self.serial:03d}",
                             resolve(self.hosts_file, self.sip_domain), mode)
        self.calls[meta_call.wacid] = meta_call
        return meta_call

    def _tls(self) -> Any:
        return tls_context([self.ca.certificate])

    def call_up(self, mode: SrtpMode = SrtpMode.SDES) -> MetaCall:
        assert self.meta is not None and self.network is not None
        return self.meta.run(call_up(self.new_call(mode), self.sip_domain, self.network["meta"].address,
                                     self._tls()), timeout=30)

    def hang_up(self, meta_call: MetaCall, via: str | None = None) -> MetaCall:
        """Meta's BYE; with `via` (an edge's role), over a new connection to that edge."""
        assert self.meta is not None
        hosts = [self.node(via).address] if via else None
        return self.meta.run(hang_up(meta_call, hosts=hosts), timeout=30)

    def whole_call(self, hold_s: float = 2.0) -> MetaCall:
        assert self.meta is not None and self.network is not None
        return self.meta.run(whole_call(self.new_call(), self.sip_domain,
                                        self.network["meta"].address, self._tls(), hold_s),
                             timeout=40)

    def remote_bye(self, meta_call: MetaCall) -> bool:
        """Has the site sent Meta a BYE for this call (still up on Meta's side)?"""
        uac = meta_call._uac
        return uac is not None and uac.remote_bye.is_set()

    def business_events(self, role: str) -> list[dict[str, Any]]:
        """The plain business node's JSON lines (lab/cluster/business_node.py)."""
        path = self.folder / f"{role}.log"
        events = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def business_saw(self, wacid: str, event: str) -> str | None:
        """Which business node logged `event` for the call, if one did ("invite" or "bye"; a
        FreeSWITCH node: its SIP trace holds the call's INVITE, or a BYE of its dialog)."""
        if self.freeswitch is not None:
            return next((role for role in MEDIA
                         if event in self.media_node(role).saw(wacid)), None)
        for role in MEDIA:
            if any(e.get("event") == event and e.get("wacid") == wacid
                   for e in self.business_events(role)):
                return role
        return None

    def business_event(self, wacid: str, event: str) -> dict[str, Any]:
        """The business node's log entry of `event` for the call ({} when none logged it; a
        FreeSWITCH node's has the call's Call-ID and the message's source only)."""
        if self.freeswitch is not None:
            answered_at = self.calls[wacid].answered_at if wacid in self.calls else None
            for role in MEDIA:
                entry = self.media_node(role).saw(wacid, answered_at).get(event)
                if entry is not None:
                    return entry
            return {}
        for role in MEDIA:
            for entry in self.business_events(role):
                if entry.get("event") == event and entry.get("wacid") == wacid:
                    return entry
        return {}

    def business_heard_meta(self, wacid: str) -> bool:
        """Did the business hear Meta's tone (a FreeSWITCH node: at its RTP port)?"""
        if self.freeswitch is not None:
            meta_call = self.calls.get(wacid)
            role = self.business_saw(wacid, "invite")
            if meta_call is None or meta_call.answered_at is None or role is None:
                return False
            hz = self.media_node(role).heard_hz(wacid, meta_call.answered_at)
            return hz is not None and abs(hz - META_TONE_HZ) <= 5.0
        for role in MEDIA:
            for e in self.business_events(role):
                if e.get("event") == "bye" and e.get("wacid") == wacid and e.get("heard_hz"):
                    return abs(float(e["heard_hz"]) - 440.0) <= 5.0
        return False

    def node(self, role: str) -> Node:
        assert self.network is not None
        return self.network[role]


def site_name() -> str:
    """The lab site's SIP domain (examples/site.toml's): the one name Meta resolves."""
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return str(raw["site"]["sip_domain"])


def _records(answer: Any) -> list[dict[str, Any]]:
    """dispatcher.list's destinations, whatever nesting this Kamailio gives them."""
    if isinstance(answer, dict):
        if "URI" in answer:
            return [answer]
        found = []
        for value in answer.values():
            found += _records(value)
        return found
    if isinstance(answer, list):
        found = []
        for item in answer:
            found += _records(item)
        return found
    return []



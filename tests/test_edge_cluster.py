"""Two edges of one site ([cluster]) on loopback: real Kamailios sharing digest state over DMQ.

Edge A's DMQ socket is on 127.0.0.1, edge B's on 127.0.0.2; Meta's stand-in (the Python TLS
client of tests/test_edge_digest.py) reaches both from 127.0.0.1. What one edge learns about a
source (failed digests) or a nonce (the nc it accepted) must hold on the other within a
second, a nonce one edge issued must verify on the other (the shared nonce secret), and DMQ
is taken from the peer edge's socket only.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.edge_only_section import EDGE_NUMBER, FAILURE_LIMIT
from lab.processes import free_port
from provisioning.cluster_doctor import cluster_findings
from provisioning.doctor import Level
from provisioning.kamailio_rpc import RpcError, call
from tests.conftest import edge_overrides
from tests.test_edge_digest import MetaTlsClient, digest

HT_DMQ_SET_CELL = 2  # htable's ht_dmq_action_t (ht_dmq.h: NONE, SYNC, SET_CELL, ...)


@pytest.fixture(scope="module")
def two_edges(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeLab, EdgeLab]]:
    folder = tmp_path_factory.mktemp("cluster")
    secret = folder / "nonce.secret"
    secret.write_text("f3a9c0d1e2b4a6c8d0e1f2a3b4c5d6e7\n", encoding="utf-8")
    secret.chmod(0o600)
    sockets = [f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
               f"127.0.0.2:{free_port(socket.SOCK_DGRAM, '127.0.0.2')}"]

    def overrides(this_edge: str) -> dict[str, Any]:
        return edge_overrides(cluster={"edges": sockets, "this_edge": this_edge,
                                       "nonce_secret_file": str(secret)})

    passwords = {EDGE_NUMBER: LAB_PASSWORD}
    with EdgeLab(folder / "a", overrides(sockets[0]), passwords=passwords) as edge_a, \
            EdgeLab(folder / "b", overrides(sockets[1]), passwords=passwords) as edge_b:
        wait_for_dmq_peer(edge_a, sockets[1])
        wait_for_dmq_peer(edge_b, sockets[0])
        yield edge_a, edge_b


def dmq_nodes(edge: EdgeLab) -> list[dict[str, Any]]:
    nodes = call(edge.rpc_socket, "dmq.list_nodes")
    return nodes if isinstance(nodes, list) else [nodes]


def wait_for_dmq_peer(edge: EdgeLab, peer: str, timeout: float = 15) -> None:
    host, port = peer.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in dmq_nodes(edge):
            if node.get("host") == host and str(node.get("port")) == port \
                    and node.get("status") == "active" and not node.get("local"):
                return
        time.sleep(0.2)
    raise AssertionError(f"{peer} never became an active DMQ node of {edge.folder.name}: "
                         f"{dmq_nodes(edge)}")


def authfail(edge: EdgeLab, source: str) -> int | None:
    try:
        item = call(edge.rpc_socket, "htable.get", "wa_authfail", source)
    except RpcError:
        return None  # "key does not exist"
    value = item.get("item", {}).get("value") if isinstance(item, dict) else None
    return int(value) if value is not None else None


@pytest.fixture
def fresh(two_edges: tuple[EdgeLab, EdgeLab]) -> tuple[EdgeLab, EdgeLab]:
    for edge in two_edges:
        call(edge.rpc_socket, "htable.flush", "wa_authfail")
    return two_edges


def test_nonce_from_one_edge_is_accepted_by_the_other_and_its_replay_refused_by_both(
        fresh: tuple[EdgeLab, EdgeLab]) -> None:
    edge_a, edge_b = fresh
    client_a, client_b = MetaTlsClient(edge_a), MetaTlsClient(edge_b)
    try:
        uri = client_a.invite("cluster-nonce", 1)
        challenge = client_a.response("cluster-nonce")
        assert challenge.startswith("SIP/2.0 407"), challenge
        credentials = digest(challenge, uri, LAB_PASSWORD, EDGE_NUMBER[1:])

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as freeswitch:
            freeswitch.bind(("127.0.0.1", edge_b.ports.freeswitch[0]))
            freeswitch.settimeout(5)
            client_b.invite("cluster-nonce", 2, credentials)
            accepted = client_b.response("cluster-nonce", skip_provisional=False)
            assert accepted.startswith("SIP/2.0 100"), accepted  # B verified A's nonce
            relayed, sender = freeswitch.recvfrom(65536)
        assert relayed.startswith(b"INVITE ")
        # from the internal socket, never the DMQ one (also UDP, listed after it)
        assert sender == ("127.0.0.1", edge_b.ports.internal), sender

        time.sleep(0.5)  # B's accepted nc reaches A over DMQ
        for client, call_id in ((client_a, "cluster-replay-a"), (client_b, "cluster-replay-b")):
            client.invite(call_id, 1, credentials)
            replayed = client.response(call_id)
            assert replayed.startswith("SIP/2.0 407"), replayed
            assert "stale=true" in replayed.lower(), replayed
    finally:
        client_a.close()
        client_b.close()


def test_lockout_recorded_on_one_edge_is_enforced_by_the_other_within_a_second(
        fresh: tuple[EdgeLab, EdgeLab]) -> None:
    edge_a, edge_b = fresh
    lock_out_on(edge_a, "cluster-wrong")
    locked_at = time.monotonic()
    client_b = MetaTlsClient(edge_b)
    try:
        assert authfail(edge_a, "127.0.0.1") == FAILURE_LIMIT

        status, attempt = "", 0
        while time.monotonic() - locked_at < 1.0:
            attempt += 1
            call_id = f"cluster-after-{attempt}"
            client_b.invite(call_id, 1)
            status = client_b.response(call_id)
            if status.startswith("SIP/2.0 403"):
                break
            time.sleep(0.05)
        assert status.startswith("SIP/2.0 403"), status
        assert "too many failed authentications" in status
        assert authfail(edge_b, "127.0.0.1") == FAILURE_LIMIT
    finally:
        client_b.close()


def lock_out_on(edge: EdgeLab, tag: str) -> None:
    """FAILURE_LIMIT wrong digests from 127.0.0.1 on `edge`."""
    client = MetaTlsClient(edge)
    try:
        for attempt in range(FAILURE_LIMIT):
            call_id = f"{tag}-{attempt}"
            uri = client.invite(call_id, 1)
            challenge = client.response(call_id)
            client.invite(call_id, 2, digest(challenge, uri, "wrong-password", EDGE_NUMBER[1:]))
            assert client.response(call_id).startswith("SIP/2.0 407")
    finally:
        client.close()


def test_a_restarted_edge_gets_the_lockouts_from_its_peer(
        fresh: tuple[EdgeLab, EdgeLab]) -> None:
    edge_a, edge_b = fresh
    lock_out_on(edge_a, "cluster-restart")
    edge_b.stop()
    edge_b.start()  # an empty wa_authfail, until dmq_init_sync brings A's
    wait_for_dmq_peer(edge_b, edge_a.config.cluster.this_edge or "")
    deadline = time.monotonic() + 2
    while authfail(edge_b, "127.0.0.1") is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert authfail(edge_b, "127.0.0.1") == FAILURE_LIMIT
    client = MetaTlsClient(edge_b)
    try:
        client.invite("cluster-restarted", 1)
        assert client.response("cluster-restarted").startswith("SIP/2.0 403")
    finally:
        client.close()


def test_doctor_sees_the_peer_edge_through_dmq(two_edges: tuple[EdgeLab, EdgeLab]) -> None:
    edge_a, edge_b = two_edges
    found = cluster_findings(edge_a.config, [edge_a.rpc_socket])
    assert [(f.check, f.level, f.subject) for f in found] == [
        ("cluster.nonce_secret", Level.PASS, "nonce secret"),
        ("cluster.dmq", Level.PASS, f"peer edge {edge_b.config.cluster.this_edge}")]
    # a third edge listed but never started; and B's socket asked as if it were A
    third = f"127.0.0.3:{free_port(socket.SOCK_DGRAM, '127.0.0.3')}"
    listed = edge_a.config.model_copy(update={"cluster": edge_a.config.cluster.model_copy(
        update={"edges": [*edge_a.config.cluster.edges, third]})})
    levels = {f.subject: f.level for f in cluster_findings(listed, [edge_a.rpc_socket])}
    assert levels[f"peer edge {third}"] is Level.FAIL
    assert levels[f"peer edge {edge_b.config.cluster.this_edge}"] is Level.PASS
    wrong = cluster_findings(edge_a.config, [edge_b.rpc_socket])
    assert any(f.level is Level.FAIL and "not this edge's DMQ node" in f.cause for f in wrong)
    assert cluster_findings(edge_a.config, [])[-1].level is Level.WARN


def kdmq_set_cell(target: tuple[str, int], sender: socket.socket, key: str, value: int) -> bytes:
    """htable's own replication message (ht_dmq_replicate_action) setting wa_authfail[key]."""
    host, port = sender.getsockname()
    body = json.dumps({"action": HT_DMQ_SET_CELL, "htname": "wa_authfail", "cname": key,
                       "type": 0, "intval": value, "mode": 0}, separators=(",", ":"))
    branch = f"z9hG4bK-forged-{key}-{port}"
    return ("\r\n".join([
        f"KDMQ sip:htable@{target[0]}:{target[1]} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch}",
        f"From: <sip:htable@{host}:{port}>;tag={port}",
        f"To: <sip:htable@{target[0]}:{target[1]}>",
        f"Call-ID: forged-{key}-{port}@{host}",
        "CSeq: 1 KDMQ",
        "Max-Forwards: 1",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "", body])).encode()


def send_kdmq(source: tuple[str, int], target: tuple[str, int], key: str) -> str | None:
    """Send the message from `source`; the reply's status line, or None when none came."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind(source)
        sender.sendto(kdmq_set_cell(target, sender, key, 999), target)
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            sender.settimeout(left)
            try:
                message = sender.recv(65536).decode(errors="replace")
            except TimeoutError:
                break
            # on the peer's socket, the edge's own KDMQ toward the peer may come first
            if message.startswith("SIP/2.0 ") and f"forged-{key}-" in message:
                return message.split("\r\n", 1)[0]
        return None


def test_dmq_from_anyone_but_the_peer_edge_is_dropped(
        fresh: tuple[EdgeLab, EdgeLab], tmp_path: Path) -> None:
    edge_a, edge_b = fresh
    b_host, b_port = edge_b.config.cluster.own_socket()
    a_socket = edge_a.config.cluster.own_socket()
    dropped_before = drop_count(edge_b)
    # another address, and the peer's address from another port than its DMQ socket's
    for source, key in ((("127.0.0.3", 0), "10.9.9.3"), (("127.0.0.1", 0), "10.9.9.1")):
        assert send_kdmq(source, (b_host, b_port), key) is None
        assert authfail(edge_b, key) is None
    assert drop_count(edge_b) - dropped_before == 2
    # the same message from the peer's DMQ socket is htable's own: taken (A is stopped, so
    # the socket is free to play it)
    edge_a.stop()
    reply = send_kdmq(a_socket, (b_host, b_port), "10.9.9.9")
    assert reply is not None and reply.startswith("SIP/2.0 200"), reply
    assert authfail(edge_b, "10.9.9.9") == 999


def drop_count(edge: EdgeLab) -> int:
    stats = call(edge.rpc_socket, "stats.get_statistics", "wa_dmq_not_peer")
    text = stats[0] if isinstance(stats, list) else str(stats)
    return int(str(text).rsplit("=", 1)[1].strip())

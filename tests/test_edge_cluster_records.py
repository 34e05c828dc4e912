"""A media node's call records on a two-edge site (kemi/media_loss.py): each edge keeps its
own, and a BYE through the other edge removes them, through the real Kamailios.

The record of an answered user-initiated call is written by the edge that relayed the 200 and
is not replicated (it would be two KDMQ of every call). When Meta's BYE reaches edge B of a
call edge A answered, B finds no record and broadcasts the key (one KDMQ to the peer
`wa_calls_forget`); A removes its record, so a later loss of the node sends Meta no BYE for a
call that already ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from kemi.media_loss import TABLE, record_key
from lab.edge import EdgeLab
from provisioning.kamailio_rpc import RpcError
from provisioning.kamailio_rpc import call as call_rpc
from tests.security.sip_wire import Call, MetaTls, UdpPeer, establish, in_dialog
from tests.test_edge_cluster import wait_for_dmq_peer
from tests.two_edge_site import two_edge_site

REPLICATION_S = 1.0  # a KDMQ on loopback arrives in milliseconds; a second is a generous bound


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeLab, EdgeLab]]:
    with two_edge_site(tmp_path_factory.mktemp("records-site")) as edges:
        yield edges


@pytest.fixture
def node(site: tuple[EdgeLab, EdgeLab]) -> Iterator[UdpPeer]:
    """FreeSWITCH's first node (the "priority" set's choice), the same on both edges."""
    with UdpPeer(site[0].ports.freeswitch[0]) as peer:
        yield peer


def has_record(edge: EdgeLab, key: str) -> bool:
    try:
        item = call_rpc(edge.rpc_socket, "htable.get", TABLE, key)
    except RpcError:
        return False  # "key does not exist"
    return isinstance(item, dict) and bool(item.get("item", {}).get("value"))


def node_record_key(edge: EdgeLab, call_id: str) -> str:
    return record_key(f"127.0.0.1:{edge.ports.freeswitch[0]}", call_id)


def b_host(edge_b: EdgeLab) -> str:
    return edge_b.config.listen.tls.rsplit(":", 1)[0]


def bye(tls: MetaTls, node: UdpPeer, call: Call) -> str:
    """Meta's BYE over `tls`, FreeSWITCH's 200 to it; Meta's answer."""
    in_dialog(tls, call, "BYE", 3)
    node.reply(node.request("BYE"), 200, "OK")
    return tls.answer(call.call_id)


def test_the_record_stays_on_the_edge_that_relayed_the_200(
        site: tuple[EdgeLab, EdgeLab], node: UdpPeer) -> None:
    edge_a, edge_b = site
    key = node_record_key(edge_a, "records-own")
    with MetaTls(edge_a) as tls:
        call = establish(tls, node, "records-own")
        time.sleep(REPLICATION_S)  # what a replicated table would have sent B by now
        assert has_record(edge_a, key)
        assert not has_record(edge_b, key)
        assert bye(tls, node, call).startswith("SIP/2.0 200")
    assert not has_record(edge_a, key)


def test_metas_bye_through_the_other_edge_removes_the_record_there(
        site: tuple[EdgeLab, EdgeLab], node: UdpPeer) -> None:
    edge_a, edge_b = site
    key = node_record_key(edge_a, "records-other")
    with MetaTls(edge_a) as tls:
        call = establish(tls, node, "records-other")
    assert has_record(edge_a, key)
    with MetaTls(edge_b, b_host(edge_b)) as tls_b:
        assert bye(tls_b, node, call).startswith("SIP/2.0 200")
    deadline = time.monotonic() + REPLICATION_S
    while has_record(edge_a, key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not has_record(edge_a, key), "B's forget message did not remove A's record"
    assert "BYE from Meta call-id=records-other" in edge_b.kamailio_log()


def test_with_the_edge_holding_the_record_gone_the_bye_through_the_other_is_not_held_up(
        site: tuple[EdgeLab, EdgeLab], node: UdpPeer) -> None:
    """The forget message goes out beside the BYE (dmq's own transaction), never holding it:
    with edge A down (its record lost with it), Meta's BYE through B reaches FreeSWITCH and
    Meta gets its 200."""
    edge_a, edge_b = site
    with MetaTls(edge_a) as tls:
        call = establish(tls, node, "records-a-gone")
    edge_a.stop()
    try:
        with MetaTls(edge_b, b_host(edge_b)) as tls_b:
            assert bye(tls_b, node, call).startswith("SIP/2.0 200")  # within MetaTls's 5 s
    finally:
        edge_a.start()
        wait_for_dmq_peer(edge_b, str(edge_a.config.cluster.this_edge))
    assert "BYE from Meta call-id=records-a-gone" in edge_b.kamailio_log()

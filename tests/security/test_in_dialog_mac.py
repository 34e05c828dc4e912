"""Meta's in-dialog requests are trusted by the Record-Route MAC alone (issue 20), through the
real Kamailio: no dialog state, so a restarted edge still relays Meta's BYE; a route that is
not signed for this call and hop is refused (403/481) and nothing reaches FreeSWITCH; a key
rotation while a call is up keeps it up, and new calls are signed with the new key.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from kemi.dialog_mac import read_key_file
from lab.edge import LAB_PASSWORD, EdgeLab
from lab.edge_only_section import edge_overrides
from provisioning.in_dialog_keys import rotate_key_file
from provisioning.kamailio_rpc import call as call_rpc
from tests.security.sip_wire import (
    Call,
    MetaTls,
    UdpPeer,
    authenticated_invite,
    establish,
    header_values,
    in_dialog,
)

QUIET = 1.0  # seconds a node listens to show that nothing reached it
KEY_PICKUP = 1.5  # a worker notices a changed key file within a second (kemi/dialog_mac.py)


@pytest.fixture(scope="module")
def mac_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    """An edge of its own: these tests restart it and rotate its key."""
    with EdgeLab(tmp_path_factory.mktemp("mac-edge"), edge_overrides(),
                 passwords={"+15550100001": LAB_PASSWORD}) as lab:
        yield lab


@pytest.fixture
def nodes(mac_edge: EdgeLab) -> Iterator[tuple[UdpPeer, UdpPeer]]:
    first, second = mac_edge.ports.freeswitch
    with UdpPeer(first) as node1, UdpPeer(second) as node2:
        yield node1, node2


def mac_of(call: Call) -> str:
    macs = {str(m) for route in call.routes for m in re.findall(r";wamac=([^;>]+)", route)}
    assert len(macs) == 1, call.routes
    return macs.pop()


def bye_reaches(tls: MetaTls, node: UdpPeer, call: Call, cseq: int) -> None:
    in_dialog(tls, call, "BYE", cseq)
    bye = node.request("BYE")
    node.reply(bye, 200, "OK")
    assert tls.answer(call.call_id).startswith("SIP/2.0 200")


def test_record_route_is_signed_and_the_edge_keeps_no_dialog(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    node1, _ = nodes
    with MetaTls(mac_edge) as tls:
        call = establish(tls, node1, "mac-signed")
        key_id = mac_of(call).split(".")[0]
        assert key_id == read_key_file(mac_edge.config.edge.in_dialog_key_file).current
        assert all(";did=" not in route for route in call.routes), call.routes
        stats = call_rpc(mac_edge.rpc_socket, "stats.get_statistics", "active_dialogs")
        assert str(stats[0]).endswith("= 0"), stats  # the call is up, the edge holds no dialog
        bye_reaches(tls, node1, call, 3)


def test_forged_in_dialog_requests_are_refused_and_never_relayed(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    node1, node2 = nodes
    with MetaTls(mac_edge) as tls:
        call = establish(tls, node1, "mac-victim")
        other = establish(tls, node1, "mac-other")
        token = mac_of(call)
        flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
        forgeries: list[tuple[str, Call, str | None, int]] = [
            ("no MAC", replace(call, routes=tuple(re.sub(r";wamac=[^;>]+", "", r)
                                                  for r in call.routes)), None, 481),
            ("wrong MAC", replace(call, routes=tuple(r.replace(token, flipped)
                                                     for r in call.routes)), None, 403),
            # a route signed for one call, used in another (a real one)
            ("other Call-ID", replace(other, routes=call.routes), None, 403),
            # the signed route, toward the other FreeSWITCH node (an allowed node otherwise)
            ("other hop", call, f"sip:fs@127.0.0.1:{node2.port}", 403),
        ]
        for index, (what, forged, target, status) in enumerate(forgeries):
            in_dialog(tls, forged, "BYE", 10 + index, target=target)
            answer = tls.answer(forged.call_id)
            assert answer.startswith(f"SIP/2.0 {status}"), (what, answer)
        assert [m for m in node1.receive(QUIET) if not m.startswith("SIP/2.0")] == []
        assert node2.receive(0.1) == []
        # the real calls are untouched
        bye_reaches(tls, node1, call, 20)
        bye_reaches(tls, node1, other, 20)


def test_failover_signs_the_route_for_the_node_that_answered(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    """The first node answers 503, the edge fails over: the second node's branch carries a
    route signed for it, so Meta's BYE goes there (with the first node's MAC it would be 403)."""
    node1, node2 = nodes
    call_id = "mac-failover"
    with MetaTls(mac_edge) as tls:
        authenticated_invite(tls, call_id, LAB_PASSWORD)
        first = node1.request("INVITE")
        node1.reply(first, 503, "Service Unavailable")
        second = node2.request("INVITE")
        node2.reply(second, 200, "OK", to_tag=f"fs-{call_id}")
        ok = tls.answer(call_id)
        assert ok.startswith("SIP/2.0 200"), ok
        entries = [e.strip() for v in header_values(ok, "Record-Route") for e in v.split(",")]
        call = Call(call_id, f"from-{call_id}", f"fs-{call_id}", tuple(reversed(entries)),
                    header_values(ok, "Contact")[0].strip("<>"), second)
        first_macs = set(re.findall(r";wamac=([^;>]+)", " ".join(header_values(first,
                                                                               "Record-Route"))))
        assert first_macs and mac_of(call) not in first_macs  # signed again, for node 2
        in_dialog(tls, call, "ACK", 2)
        assert node2.request("ACK")
        bye_reaches(tls, node2, call, 3)
        assert [m for m in node1.receive(0.2) if m.startswith("BYE")] == []


def test_metas_bye_reaches_freeswitch_after_an_edge_restart(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    node1, _ = nodes
    with MetaTls(mac_edge) as tls:
        call = establish(tls, node1, "mac-restart")
    mac_edge.stop()
    mac_edge.start()
    with MetaTls(mac_edge) as tls:  # Meta's connection ended with the edge: a new one
        bye_reaches(tls, node1, call, 3)


def test_key_rotation_keeps_calls_up_and_signs_new_calls_with_the_new_key(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    node1, _ = nodes
    path = mac_edge.config.edge.in_dialog_key_file
    with MetaTls(mac_edge) as tls:
        before = establish(tls, node1, "mac-before-rotation")
        old_key = mac_of(before).split(".")[0]
        rotation = rotate_key_file(path, keep_seconds=3600)
        assert rotation.key_id != old_key and old_key in rotation.kept
        time.sleep(KEY_PICKUP)
        after = establish(tls, node1, "mac-after-rotation")
        assert mac_of(after).split(".")[0] == rotation.key_id
        bye_reaches(tls, node1, before, 3)  # signed with the old key, still verifying
        bye_reaches(tls, node1, after, 3)


def test_a_rotated_out_key_no_longer_verifies(
        mac_edge: EdgeLab, nodes: tuple[UdpPeer, UdpPeer]) -> None:
    node1, _ = nodes
    path = mac_edge.config.edge.in_dialog_key_file
    with MetaTls(mac_edge) as tls:
        call = establish(tls, node1, "mac-expired-key")
        rotate_key_file(path, keep_seconds=0.5)
        time.sleep(KEY_PICKUP)
        in_dialog(tls, call, "BYE", 3)
        assert tls.answer(call.call_id).startswith("SIP/2.0 403")
        assert [m for m in node1.receive(QUIET) if m.startswith("BYE")] == []

"""In-dialog requests from the Meta side: only dialogs this edge created, only to FreeSWITCH.

An attacker on the Internet can put any To-tag and any Route into a request. Loose routing
alone would follow them to any host and port; the edge must refuse what is not one of its own
dialogs, and inside its dialogs reach only a FreeSWITCH node (host, port and transport).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lab.edge import EdgeLab
from lab.processes import free_port
from tests.security.sip_wire import (
    MetaTls,
    UdpPeer,
    establish,
    header_values,
    in_dialog,
    invite,
)

QUIET = 1.0  # seconds a peer listens to show that nothing reached it
SPOOFED = ("X-WA-Auth: digest", "X-WA-Business-Number: +15550100001",
           "X-WA-Context: admin")


@pytest.fixture
def freeswitch(clean_edge: EdgeLab) -> Iterator[tuple[UdpPeer, UdpPeer]]:
    """Both dispatcher nodes of the lab edge, as bare UDP sockets."""
    first, second = clean_edge.ports.freeswitch
    with UdpPeer(first) as node1, UdpPeer(second) as node2:
        yield node1, node2


@pytest.fixture
def elsewhere() -> Iterator[UdpPeer]:
    """A port on the FreeSWITCH host that is not a FreeSWITCH node."""
    with UdpPeer(free_port(socket.SOCK_DGRAM)) as peer:
        yield peer


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE"])
def test_forged_to_tag_with_route_to_freeswitch_host_is_never_relayed(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer], elsewhere: UdpPeer,
        method: str) -> None:
    node1, _ = freeswitch
    edge = clean_edge.ports
    forged_routes = [
        (f"<sip:127.0.0.1:{elsewhere.port};lr>",),
        (f"<sip:127.0.0.1:{node1.port};lr>",),
        # our own Record-Route entries, copied from any call, with a made-up dialog id
        (f"<sip:127.0.0.1:{edge.tls};transport=tls;r2=on;lr;did=123.456>",
         f"<sip:127.0.0.1:{edge.internal};r2=on;lr;did=123.456>",
         f"<sip:127.0.0.1:{node1.port};lr>"),
    ]
    with MetaTls(clean_edge) as tls:
        for index, routes in enumerate(forged_routes):
            call_id = f"forged-{method}-{index}"
            invite(tls, call_id, method=method, to_tag="forged", routes=routes, extra=SPOOFED)
            answer = tls.answer(call_id)
            assert answer.startswith(("SIP/2.0 403", "SIP/2.0 481")), answer
    assert node1.receive(QUIET) == []
    assert elsewhere.receive(0.1) == []


def test_own_dialog_keeps_working_and_is_screened(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer]) -> None:
    """re-INVITE and BYE of a real call reach FreeSWITCH, without spoofed X-WA-* headers."""
    node1, _ = freeswitch
    with MetaTls(clean_edge) as tls:
        call = establish(tls, node1, "legit-dialog")
        in_dialog(tls, call, "INVITE", 3, extra=(*SPOOFED, "x-wa-meta-test: kept"))
        reinvite = node1.request("INVITE")
        assert header_values(reinvite, "X-WA-Auth") == []
        assert header_values(reinvite, "X-WA-Business-Number") == []
        assert header_values(reinvite, "X-WA-Context") == []
        assert header_values(reinvite, "x-wa-meta-test") == ["kept"]
        node1.reply(reinvite, 200, "OK")
        assert tls.answer(call.call_id).startswith("SIP/2.0 200")
        in_dialog(tls, call, "ACK", 3)
        assert node1.request("ACK")

        in_dialog(tls, call, "BYE", 4)
        bye = node1.request("BYE")
        node1.reply(bye, 200, "OK")
        assert tls.answer(call.call_id).startswith("SIP/2.0 200")


def test_own_dialog_cannot_be_steered_to_another_port(
        clean_edge: EdgeLab, freeswitch: tuple[UdpPeer, UdpPeer], elsewhere: UdpPeer) -> None:
    """Inside a real dialog, a request URI or extra Route naming another port is refused."""
    node1, node2 = freeswitch
    with MetaTls(clean_edge) as tls:
        call = establish(tls, node1, "steered-dialog")
        in_dialog(tls, call, "INFO", 3, target=f"sip:fs@127.0.0.1:{elsewhere.port}")
        answer = tls.answer(call.call_id)
        assert answer.startswith("SIP/2.0 403"), answer
        in_dialog(tls, call, "INFO", 4, target=f"sip:fs@127.0.0.1:{node1.port};transport=tcp")
        answer = tls.answer(call.call_id)
        assert answer.startswith("SIP/2.0 403"), answer
        in_dialog(tls, call, "INFO", 5, routes=(*call.routes,
                                                f"<sip:127.0.0.1:{elsewhere.port};lr>"))
        answer = tls.answer(call.call_id)
        assert answer.startswith("SIP/2.0 403"), answer
        assert elsewhere.receive(QUIET) == []
        assert [m for m in node1.receive(0.1) if m.startswith("INFO")] == []

        in_dialog(tls, call, "BYE", 6)
        node1.reply(node1.request("BYE"), 200, "OK")
        assert tls.answer(call.call_id).startswith("SIP/2.0 200")
    assert node2.receive(0.1) == []

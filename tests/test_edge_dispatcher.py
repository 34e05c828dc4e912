"""FreeSWITCH nodes behind the dispatcher: failover on a silent or 5xx node, and OPTIONS probing
that takes a dead node out of the rotation (issue 20).

The business side is played by two tiny UDP SIP nodes (the lab's plain SIP side, in this
process): "ok" answers OPTIONS 200 and every INVITE 486 (the call reached it, and ends
there), "503" answers everything 503, "silent" never answers. Meta is the Python TLS client of
tests/test_edge_digest.py. The failover to a node answering 503 with SIPp on both sides is
tests/test_edge_uic.py's.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lab.edge
from lab.edge import LAB_PASSWORD, EdgeLab
from lab.edge_only_section import EDGE_NUMBER
from provisioning.kamailio_rpc import call
from provisioning.render import RenderOptions
from tests.conftest import edge_overrides
from tests.test_edge_digest import MetaTlsClient, digest

INVITE_TIMEOUT = 2  # freeswitch.invite_timeout: tm's fr_timer, for INVITEs and OPTIONS pings
PROBE_INTERVAL = 1


class SipNode:
    """A UDP SIP node on 127.0.0.1:port answering as `mode` says; counts what it received."""

    def __init__(self, port: int, mode: str) -> None:
        self.mode = mode
        self.received: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def methods(self) -> list[str]:
        return [message.split(" ", 1)[0] for message in list(self.received)]

    def _serve(self) -> None:
        while self.running:
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            message = data.decode(errors="replace")
            if message.startswith("SIP/2.0"):
                continue
            self.received.append(message)
            method = message.split(" ", 1)[0]
            if self.mode == "silent" or method == "ACK":
                continue
            status = ("503 Service Unavailable" if self.mode == "503" else
                      "200 OK" if method != "INVITE" else "486 Busy Here")
            self.sock.sendto(reply(message, status), source)

    def close(self) -> None:
        self.running = False
        self.thread.join(2)
        self.sock.close()


def reply(request: str, status: str) -> bytes:
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [line for line in head if re.match(r"(?i)(via|from|call-id|cseq|to)\s*:", line)]
    lines = [f"{line};tag=node" if re.match(r"(?i)to\s*:", line) and ";tag=" not in line
             else line for line in keep]
    return "\r\n".join([f"SIP/2.0 {status}", *lines, "Content-Length: 0", "", ""]).encode()


def start_edge(folder: Path, probe_interval: int) -> EdgeLab:
    """An edge whose FreeSWITCH nodes are probed every `probe_interval` s (0: never); the lab
    renders with probing off, so its RenderOptions is wrapped for this edge's start only."""
    def options(**given: Any) -> RenderOptions:
        return RenderOptions(**{**given, "probe_interval": probe_interval})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lab.edge, "RenderOptions", options)
        edge = EdgeLab(folder, edge_overrides(freeswitch={"invite_timeout": INVITE_TIMEOUT}),
                       passwords={EDGE_NUMBER: LAB_PASSWORD})
        edge.__enter__()
    return edge


@pytest.fixture(scope="module")
def unprobed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    edge = start_edge(tmp_path_factory.mktemp("unprobed"), 0)
    try:
        yield edge
    finally:
        edge.stop()


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    edge = start_edge(tmp_path_factory.mktemp("probed"), PROBE_INTERVAL)
    try:
        yield edge
    finally:
        edge.stop()


def authenticated_call(edge: EdgeLab, call_id: str, timeout: float = 15) -> str:
    """Meta's INVITE, its 407, the INVITE with credentials: the final response's first line."""
    call(edge.rpc_socket, "htable.flush", "wa_authfail")
    client = MetaTlsClient(edge)
    try:
        uri = client.invite(call_id, 1)
        challenge = client.response(call_id)
        assert challenge.startswith("SIP/2.0 407"), challenge
        client.invite(call_id, 2, digest(challenge, uri, LAB_PASSWORD, EDGE_NUMBER[1:]))
        return client.response(call_id, timeout=timeout).split("\r\n", 1)[0]
    finally:
        client.close()


def destinations(edge: EdgeLab) -> dict[int, str]:
    """port -> dispatcher FLAGS (AP: active and probed, IP: inactive after failed probes)."""
    found: dict[int, str] = {}

    def walk(value: object) -> None:
        if isinstance(value, dict):
            dest = value.get("DEST")
            if isinstance(dest, dict) and "URI" in dest:
                found[int(str(dest["URI"]).rsplit(":", 1)[1])] = str(dest.get("FLAGS"))
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(call(edge.rpc_socket, "dispatcher.list"))
    return found


@pytest.mark.parametrize("first_mode", ["silent", "503"])
def test_the_call_goes_to_the_next_node_when_the_first_is_silent_or_answers_503(
        unprobed: EdgeLab, first_mode: str) -> None:
    first_port, second_port = unprobed.ports.freeswitch  # priority 10, then 5
    first, second = SipNode(first_port, first_mode), SipNode(second_port, "ok")
    try:
        started = time.monotonic()
        final = authenticated_call(unprobed, f"failover-{first_mode}")
        took = time.monotonic() - started
    finally:
        first.close()
        second.close()
    assert final == "SIP/2.0 486 Busy Here", final  # the second node's answer
    assert "INVITE" in first.methods() and second.methods().count("INVITE") == 1
    if first_mode == "silent":
        assert took >= INVITE_TIMEOUT - 0.2  # tm waited fr_timer for the silent node
        assert took < INVITE_TIMEOUT + 5


@pytest.mark.parametrize("dead_mode", ["silent", "503"])
def test_probing_marks_a_dead_node_inactive_and_calls_skip_it(
        probed: EdgeLab, dead_mode: str) -> None:
    dead_port, live_port = probed.ports.freeswitch
    dead, live = SipNode(dead_port, dead_mode), SipNode(live_port, "ok")
    try:
        deadline = time.monotonic() + PROBE_INTERVAL + INVITE_TIMEOUT + 6
        flags: dict[int, str] = {}
        while time.monotonic() < deadline:
            flags = destinations(probed)
            if flags.get(dead_port, "").startswith("I") and flags.get(live_port) == "AP":
                break
            time.sleep(0.2)
        assert flags.get(dead_port, "").startswith("I"), flags
        assert flags.get(live_port) == "AP", flags
        assert "OPTIONS" in dead.methods() and "OPTIONS" in live.methods()

        started = time.monotonic()
        final = authenticated_call(probed, f"probed-{dead_mode}")
        took = time.monotonic() - started
        assert final == "SIP/2.0 486 Busy Here", final
        assert "INVITE" not in dead.methods()  # inactive: never tried
        assert live.methods().count("INVITE") == 1
        assert took < INVITE_TIMEOUT  # no wait for the dead node
    finally:
        dead.close()
        live.close()
    # back to active once it answers again (next test's nodes start fresh)
    revived = SipNode(dead_port, "ok")
    try:
        deadline = time.monotonic() + PROBE_INTERVAL + INVITE_TIMEOUT + 6
        while time.monotonic() < deadline and destinations(probed).get(dead_port) != "AP":
            time.sleep(0.2)
        assert destinations(probed).get(dead_port) == "AP"
    finally:
        revived.close()

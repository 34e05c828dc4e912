"""The KEMI edge's [cluster] paths against the recording KSR stand-in: who reaches dmq, and the
nonce replay check that replaces auth's nonce_count (tests/test_edge_cluster.py runs the real
thing with two Kamailios)."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kemi.dialog_mac import KeyWatch, new_key_file, sign
from kemi.media_loss import FORGET_PEER
from kemi.media_loss import TABLE as CALLS_TABLE
from kemi.settings import ClusterSettings, EdgeSettings
from tests.test_kemi_edge_adapter import NODE, FakeKsr, install_ksr, meta_in_dialog, uic_results
from tests.test_kemi_edge_adapter import settings as settings  # the adapter tests' fixture

sys.modules.setdefault("KSR", types.ModuleType("KSR"))  # kemi.edge imports it; never called here
import kemi.edge as edge_module  # noqa: E402

PEER = ("10.0.0.2", 5090)
NONCE_TABLE = "wa_nonce"

Route = Callable[[dict[str, Any]], FakeKsr]


def dmq_results(source: str = PEER[0], port: int = PEER[1], method: str = "KDMQ") -> dict[str, Any]:
    return {"kx.get_srcip": source, "kx.get_srcport": port, "kx.get_rcv_sock_name": "dmq",
            "kx.get_method": method}


@pytest.fixture
def router(settings: EdgeSettings, tmp_path: Path,
           monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], Route]:
    keys_path = tmp_path / "in-dialog-keys.json"
    keys_path.write_text(new_key_file(None, "k1", 60), encoding="utf-8")
    keys_path.chmod(0o600)

    def make(cluster: bool) -> Route:
        clustered = replace(settings, cluster=ClusterSettings(
            frozenset({PEER}), NONCE_TABLE) if cluster else ClusterSettings())
        edge = edge_module.WhatsAppEdge(clustered, KeyWatch(keys_path))

        def route(results: dict[str, Any]) -> FakeKsr:
            ksr = FakeKsr(results)
            install_ksr(monkeypatch, ksr)
            assert edge.ksr_request_route(None) == edge_module.DONE
            return ksr
        return route
    return make


def test_kdmq_from_the_peer_socket_goes_to_dmq_and_nothing_else(
        router: Callable[[bool], Route]) -> None:
    ksr = router(True)(dmq_results())
    assert ksr.count("dmq.handle_message") == 1
    assert ksr.count("kx.get_msgbuf") == 0 and ksr.count("sl.send_reply") == 0
    assert ksr.count("set_drop") == 0


def test_a_peers_kdmq_costs_six_ksr_calls_before_dmq(router: Callable[[bool], Route]) -> None:
    """One KDMQ a call reaches each edge of a site ([cluster]: the accepted nc): the socket,
    the peer check, the peer name (ours or dmq's) and dmq, nothing of the request route's
    screening."""
    ksr = router(True)(dmq_results())
    assert [name for name, _ in ksr.calls] == [
        "kx.get_rcv_sock_name", "kx.get_srcip", "kx.get_srcport", "kx.get_method",
        "kx.get_ruser", "dmq.handle_message"]


@pytest.mark.parametrize("source", ["2001:db8::2", "[2001:db8::2]", "2001:DB8:0:0:0:0:0:2"])
def test_a_peer_is_known_in_any_form_of_its_address(
        settings: EdgeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        source: str) -> None:
    """The peer's address as written (the fast lookup) or in another form (normalised)."""
    keys_path = tmp_path / "in-dialog-keys.json"
    keys_path.write_text(new_key_file(None, "k1", 60), encoding="utf-8")
    keys_path.chmod(0o600)
    peer = ("2001:db8::2", 5090)
    edge = edge_module.WhatsAppEdge(
        replace(settings, cluster=ClusterSettings(frozenset({peer}), NONCE_TABLE)),
        KeyWatch(keys_path))
    ksr = FakeKsr(dmq_results(source=source, port=peer[1]))
    install_ksr(monkeypatch, ksr)
    assert edge.ksr_request_route(None) == edge_module.DONE
    assert ksr.count("dmq.handle_message") == 1 and ksr.count("set_drop") == 0


@pytest.mark.parametrize("results", [
    dmq_results(source="10.0.0.9"),  # not a peer
    dmq_results(port=40000),  # the peer's address, another port than its DMQ socket's
    dmq_results(method="INVITE"),  # the peer's socket, not DMQ
    dmq_results(source="[::1]"),
])
def test_anything_else_on_the_dmq_socket_is_dropped_unanswered(
        router: Callable[[bool], Route], results: dict[str, Any]) -> None:
    ksr = router(True)(results)
    assert ksr.count("dmq.handle_message") == 0
    assert ksr.count("set_drop") == 1 and ksr.count("sl.send_reply") == 0
    assert ksr.args("statistics.update_stat") == [("wa_dmq_not_peer", 1)]


def nonce_results(seen: int | None) -> dict[str, Any]:
    base = uic_results()
    creds = base["htable.sht_get"]

    def sht_get(table: str, key: str) -> object:
        return seen if table == NONCE_TABLE else creds(table, key)

    return base | {"htable.sht_get": sht_get}


def test_a_clustered_edge_records_the_accepted_nc_under_the_nonce_lock(
        router: Callable[[bool], Route]) -> None:
    ksr = router(True)(nonce_results(None))
    assert ksr.count("tm.t_relay") == 1
    # nonce "n", cnonce "c", nc=00000001
    assert ksr.args("htable.sht_seti") == [(NONCE_TABLE, "n/c", 1)]
    assert ksr.args("htable.sht_lock") == [(NONCE_TABLE, "n/c")]
    assert ksr.args("htable.sht_unlock") == [(NONCE_TABLE, "n/c")]


def test_a_clustered_edge_answers_a_replayed_nc_stale(router: Callable[[bool], Route]) -> None:
    ksr = router(True)(nonce_results(1))
    assert ksr.count("tm.t_relay") == 0
    assert ksr.count("auth.consume_credentials") == 0
    (challenge,) = ksr.args("auth.auth_challenge")
    assert int(str(challenge[1])) & edge_module.STALE
    assert ksr.args("htable.sht_seti") == []
    assert ksr.args("htable.sht_unlock") == [(NONCE_TABLE, "n/c")]


def test_a_single_edge_leaves_the_nc_to_auth(router: Callable[[bool], Route]) -> None:
    ksr = router(False)(nonce_results(1))
    assert ksr.count("tm.t_relay") == 1
    assert not [args for args in ksr.args("htable.sht_get") if args[0] == NONCE_TABLE]
    assert ksr.count("htable.sht_lock") == 0


def test_a_second_call_answering_the_same_nonce_with_its_own_cnonce_is_accepted(
        router: Callable[[bool], Route]) -> None:
    """auth without nonce_count hands every challenge of one second the same nonce, and Meta
    answers each with nc=1: another call's nc under that nonce (cnonce "other") is no replay."""
    base = uic_results()
    creds = base["htable.sht_get"]

    def sht_get(table: str, key: str) -> object:
        return (1 if key == "n/other" else None) if table == NONCE_TABLE else creds(table, key)

    ksr = router(True)(base | {"htable.sht_get": sht_get})
    assert ksr.count("tm.t_relay") == 1
    assert ksr.args("htable.sht_seti") == [(NONCE_TABLE, "n/c", 1)]


@pytest.mark.parametrize("cluster", [True, False])
def test_metas_in_dialog_request_leaves_a_clustered_edge_from_the_internal_socket(
        router: Callable[[bool], Route], tmp_path: Path, cluster: bool) -> None:
    """A call another edge took: loose_route forced none of this edge's sockets (the internal
    Route entry names the other edge's), and Kamailio's default UDP socket is the DMQ one;
    a clustered edge names its internal socket, a single edge leaves it to loose_route."""
    keys = KeyWatch(tmp_path / "in-dialog-keys.json")
    ksr = router(cluster)(meta_in_dialog(keys))
    assert ksr.count("tm.t_relay") == 1
    assert (("$fsn", "internal") in ksr.args("pv.sets")) is cluster


# ---- the node-loss records (kemi/media_loss.py): each edge's own, removed across the site ----

RECORD_KEY = "10.0.0.10:5080|1"  # meta_in_dialog's node and Call-ID


def bye_results(keys: KeyWatch, recorded: bool, direction: str = "u") -> dict[str, Any]:
    """Meta's BYE of Call-ID "1" toward NODE; `recorded`: this edge holds the call's record."""
    token = None if direction == "u" else sign(keys.ring, "b", "1", "fs-tag", "10.0.0.10:5080:udp")
    base = meta_in_dialog(keys, token)
    creds = base["htable.sht_get"]

    def sht_get(table: str, key: str) -> object:
        if table == CALLS_TABLE:
            return '{"call_id":"1"}' if recorded and key == RECORD_KEY else None
        return creds(table, key)

    return base | {"htable.sht_get": sht_get}


def test_a_bye_through_the_edge_holding_the_record_removes_it_and_tells_no_peer(
        router: Callable[[bool], Route], tmp_path: Path) -> None:
    ksr = router(True)(bye_results(KeyWatch(tmp_path / "in-dialog-keys.json"), recorded=True))
    assert ksr.count("tm.t_relay") == 1
    assert ksr.args("htable.sht_rm") == [(CALLS_TABLE, RECORD_KEY)]
    assert ksr.count("dmq.bcast_message") == 0


def test_a_bye_through_another_edge_of_the_site_tells_the_peers_to_forget_the_call(
        router: Callable[[bool], Route], tmp_path: Path) -> None:
    ksr = router(True)(bye_results(KeyWatch(tmp_path / "in-dialog-keys.json"), recorded=False))
    assert ksr.count("tm.t_relay") == 1
    assert ksr.args("dmq.bcast_message") == [(FORGET_PEER, RECORD_KEY, "text/plain")]
    assert ksr.count("htable.sht_rm") == 0


def test_a_business_initiated_calls_bye_has_no_record_to_forget(
        router: Callable[[bool], Route], tmp_path: Path) -> None:
    """Its route is signed "b": no record was ever written, so no peer is told anything."""
    keys = KeyWatch(tmp_path / "in-dialog-keys.json")
    ksr = router(True)(bye_results(keys, recorded=False, direction="b") | {
        "pv.get": lambda name: {"$nh(u)": NODE, "$ft": "meta-tag", "$tt": "fs-tag"}.get(name)})
    assert ksr.count("tm.t_relay") == 1  # the route verified: the BYE went on
    assert ksr.count("dmq.bcast_message") == 0


def test_a_single_edge_removes_the_record_without_looking(
        router: Callable[[bool], Route], tmp_path: Path) -> None:
    ksr = router(False)(bye_results(KeyWatch(tmp_path / "in-dialog-keys.json"), recorded=False))
    assert ksr.args("htable.sht_rm") == [(CALLS_TABLE, RECORD_KEY)]
    assert not [args for args in ksr.args("htable.sht_get") if args[0] == CALLS_TABLE]
    assert ksr.count("dmq.bcast_message") == 0


def forget_results(body: str) -> dict[str, Any]:
    return dmq_results() | {"kx.get_ruser": FORGET_PEER, "pv.get": lambda name: (
        body if name == "$rb" else None)}


def test_a_peers_forget_message_removes_the_record_it_names(
        router: Callable[[bool], Route]) -> None:
    ksr = router(True)(forget_results(RECORD_KEY))
    assert ksr.args("htable.sht_rm") == [(CALLS_TABLE, RECORD_KEY)]
    assert ksr.args("sl.send_reply") == [(200, "OK")]
    assert ksr.count("dmq.handle_message") == 0


@pytest.mark.parametrize("body", ["", "no-bar", "|1", "10.0.0.10:5080|", "node|1",
                                  "10.0.0.10:5080|1\r\nX: y", "10.0.0.10:5080|" + "x" * 3000])
def test_a_forget_message_naming_no_record_key_is_refused(
        router: Callable[[bool], Route], body: str) -> None:
    ksr = router(True)(forget_results(body))
    assert ksr.count("htable.sht_rm") == 0
    assert [status for status, _ in ksr.args("sl.send_reply")] == [400]


def test_a_forget_message_from_anyone_but_a_peer_is_dropped(
        router: Callable[[bool], Route]) -> None:
    ksr = router(True)(forget_results(RECORD_KEY) | {"kx.get_srcip": "10.0.0.9"})
    assert ksr.count("htable.sht_rm") == 0 and ksr.count("sl.send_reply") == 0
    assert ksr.count("set_drop") == 1

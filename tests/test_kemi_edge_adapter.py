"""The KSR adapter against a recording stand-in for KSR: what it asks Kamailio, and how often.

The real-Kamailio tests (tests/test_edge_*.py) prove the behaviour; these prove the economy
of the request route (per-request facts read once, one header append, cached allow-list) and
that no fact of one request reaches the next.
"""

from __future__ import annotations

import ipaddress
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kemi.decisions import source_allowed, source_check
from kemi.dialog_mac import KeyWatch, new_key_file, sign
from kemi.request_uri import is_ip_literal
from kemi.settings import EdgeSettings, settings_from_dict
from kemi.wa_headers import edge_header_block, edge_headers
from lab.edge import EXAMPLE_CONFIG
from provisioning.render import edge_settings
from siteconfig.model import load_config

sys.modules.setdefault("KSR", types.ModuleType("KSR"))  # kemi.edge imports it; never called here
import kemi.edge as edge_module  # noqa: E402
import kemi.media_anchor as media_anchor_module  # noqa: E402

NUMBER = "+15550100001"
META_ADDRESS = "157.240.1.1"
RURI = f"sip:{NUMBER};tgrp=wacall;trunk-context=byoc.example.com@sip.example.com;transport=tls"
DIGEST = ('Digest username="15550100001", realm="sip.example.com", nonce="n", '
          f'uri="{RURI}", response="0123", qop=auth, nc=00000001, cnonce="c"')


def request(method: str = "INVITE") -> str:
    """Meta's request as Kamailio hands it over (KSR.kx.get_msgbuf), with good credentials."""
    return (f"{method} {RURI} SIP/2.0\r\nVia: SIP/2.0/TLS {META_ADDRESS}\r\n"
            f"x-wa-meta-wacid: abc\r\nX-WA-Context: forged\r\n"
            f"Proxy-Authorization: {DIGEST}\r\nContent-Length: 0\r\n\r\n")


class FakeKsr:
    """Any KSR.a.b(...) call is recorded as ("a.b", args) and answers results["a.b"]
    (a value, or a function of the arguments); unlisted calls answer 1."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str) -> _Node:
        return _Node(self, name)

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)

    def args(self, name: str) -> list[tuple[object, ...]]:
        return [args for called, args in self.calls if called == name]


class _Node:
    def __init__(self, root: FakeKsr, path: str) -> None:
        self.root = root
        self.path = path

    def __getattr__(self, name: str) -> _Node:
        return _Node(self.root, f"{self.path}.{name}")

    def __call__(self, *args: object) -> object:
        self.root.calls.append((self.path, args))
        result = self.root.results.get(self.path, 1)
        if callable(result):
            return result(*args)
        return result


def uic_results(method: str = "INVITE", source: str = META_ADDRESS) -> dict[str, Any]:
    """A Meta INVITE with a good digest, and the answers the UIC path needs."""
    def sht_get(table: str, key: str) -> object:
        return None if table == edge_module.AUTHFAIL_TABLE else "0123456789abcdef"

    return {
        "kx.get_srcip": source, "is_TLS": 1,
        "tmx.t_precheck_trans": 0, "siputils.has_totag": -1,
        "htable.sht_get": sht_get, "auth.pv_proxy_authenticate": 1,
        "kx.get_msgbuf": request(method), "hdr.get": "abc", "dispatcher.ds_select_dst": 1,
        "tm.t_relay": 1,
    }


def install_ksr(monkeypatch: pytest.MonkeyPatch, ksr: FakeKsr) -> None:
    """Every kemi module that calls KSR talks to `ksr`: the routes, and the rtpengine calls of
    the default anchor (kemi/media_anchor.py)."""
    monkeypatch.setattr(edge_module, "KSR", ksr)
    monkeypatch.setattr(media_anchor_module, "KSR", ksr)


@pytest.fixture
def settings() -> EdgeSettings:
    base = settings_from_dict(edge_settings(load_config(EXAMPLE_CONFIG)))
    return replace(base, allowed_sources=(ipaddress.ip_network("157.240.0.0/16"),),
                   auth_mode="challenge")


@pytest.fixture
def keys(tmp_path: Path) -> KeyWatch:
    path = tmp_path / "in-dialog-keys.json"
    path.write_text(new_key_file(None, "k1", 60), encoding="utf-8")
    path.chmod(0o600)
    return KeyWatch(path)


@pytest.fixture
def run(settings: EdgeSettings, keys: KeyWatch,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], FakeKsr]]:
    edge = edge_module.WhatsAppEdge(settings, keys)

    def route(results: dict[str, Any]) -> FakeKsr:
        ksr = FakeKsr(results)
        install_ksr(monkeypatch, ksr)
        assert edge.ksr_request_route(None) == edge_module.DONE
        return ksr

    route.edge = edge  # type: ignore[attr-defined]
    yield route


def test_uic_reads_each_request_fact_once(run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    ksr = run(uic_results())
    assert ksr.count("tm.t_relay") == 1, ksr.calls
    assert ksr.count("rtpengine.rtpengine_offer") == 1  # the default anchor
    assert ksr.count("kx.get_msgbuf") == 1  # method, request URI and credentials come from it
    for name in ("kx.get_method", "kx.get_ruri", "kx.get_au"):
        assert ksr.count(name) == 0, name
    assert ksr.count("kx.get_srcip") == 1
    assert ksr.count("is_TLS") == 1
    for name in ("is_ACK", "is_CANCEL", "is_BYE", "is_INVITE"):
        assert ksr.count(name) == 0, name


def test_uic_adds_every_edge_header_with_one_append(
        run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    ksr = run(uic_results())
    appended = ksr.args("hdr.append")
    assert len(appended) == 1
    assert appended[0] == (edge_header_block(
        NUMBER, {"tgrp": "wacall", "trunk-context": "byoc.example.com"}, "whatsapp", "digest"),)
    assert ksr.args("textops.remove_hf") == [("x-wa-context",)]


def test_facts_of_one_request_never_reach_the_next(
        run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    edge = run.edge  # type: ignore[attr-defined]
    seen: list[edge_module.RequestFacts] = []

    def relay() -> int:
        seen.append(edge.request)
        return 1

    run(uic_results() | {"tm.t_relay": relay})
    assert seen == [edge_module.RequestFacts("INVITE", "INVITE", META_ADDRESS, True, request())]
    assert edge.request is edge_module.NO_REQUEST  # cleared when the route ends

    def broken() -> object:
        raise RuntimeError("KSR failed")

    ksr = run(uic_results() | {"kx.get_msgbuf": broken, "tm.t_relay": relay})
    assert edge.request is edge_module.NO_REQUEST
    assert ksr.args("sl.send_reply") == [(500, "Server Internal Error")]
    assert len(seen) == 1

    run(uic_results(method="bye", source="10.0.0.10") | {
        "is_TLS": 0, "siputils.has_totag": 1, "rr.loose_route": 1, "tm.t_relay": relay,
        "pv.get": "sip:157.240.1.1:5061;transport=tls"})
    assert seen[1] == edge_module.RequestFacts("bye", "BYE", "10.0.0.10", False, request("bye"))


def test_source_outside_the_allow_list_is_dropped_and_remembered(
        run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    edge = run.edge  # type: ignore[attr-defined]
    for _ in range(3):
        ksr = run(uic_results(source="192.0.2.7"))
        assert ksr.count("set_drop") == 1
        assert ksr.count("tm.t_relay") == 0
    info = edge.meta_source_allowed.cache_info()
    assert (info.misses, info.hits) == (1, 2)


@pytest.mark.parametrize(("method", "relayed"), [("ACK", True), ("ack", True), ("CANCEL", True)])
def test_ack_and_cancel_are_known_by_the_method_text(
        run: Callable[[dict[str, Any]], FakeKsr], method: str, relayed: bool) -> None:
    ksr = run(uic_results(method=method))
    assert ksr.count("tm.t_relay") == int(relayed)
    assert ksr.count("hdr.append") == 0
    assert ksr.count("kx.get_msgbuf") == 1


NODE = "sip:10.0.0.10:5080"


def meta_in_dialog(keys: KeyWatch, token: str | None = None, next_hop: str = NODE,
                   from_tag: str = "meta-tag") -> dict[str, Any]:
    """Meta's in-dialog BYE whose first Route entry carries `token` (default: a good one for
    Call-ID "1", the From tag and the node), loose-routed toward `next_hop`."""
    if token is None:
        token = sign(keys.ring, "u", "1", "meta-tag", "10.0.0.10:5080:udp")
    route = f"<sip:203.0.113.5:5061;transport=tls;r2=on;lr;wamac={token}>, <sip:10.0.0.1;lr>"
    values = {"$nh(u)": next_hop, "$ft": from_tag, "$tt": "fs-tag"}
    return uic_results(method="BYE") | {
        "siputils.has_totag": 1, "rr.loose_route": 1, "kx.get_callid": "1",
        "hdr.get": lambda name: route if name == "Route" else None,
        "pv.get": lambda name: values.get(name)}


def test_in_dialog_bye_from_meta_is_logged_and_relayed(
        run: Callable[[dict[str, Any]], FakeKsr], keys: KeyWatch) -> None:
    ksr = run(meta_in_dialog(keys))
    assert ksr.count("tm.t_relay") == 1
    assert ksr.count("tm.t_on_reply") == 0  # only FreeSWITCH's BYE asks for Meta's answer
    assert ksr.count("dialog.is_known_dlg") == 0  # no per-call state asked
    assert ksr.count("kx.get_msgbuf") == 1


@pytest.mark.parametrize(("change", "status"), [
    ({"token": "k1.u.AAAAAAAAAAAAAAAAAAAAAA"}, 403),
    ({"from_tag": "other-tag"}, 403),
    ({"next_hop": "sip:10.0.0.11:5080"}, 403),
    ({"next_hop": "sip:10.0.0.10:5080;transport=tcp"}, 403),
    ({"token": ""}, 481),
])
def test_in_dialog_request_from_meta_without_its_mac_is_refused(
        run: Callable[[dict[str, Any]], FakeKsr], keys: KeyWatch, change: dict[str, str],
        status: int) -> None:
    ksr = run(meta_in_dialog(keys, **change))
    assert ksr.count("tm.t_relay") == 0
    assert [args[0] for args in ksr.args("sl.send_reply")] == [status]


def test_meta_request_without_route_is_481(
        run: Callable[[dict[str, Any]], FakeKsr], keys: KeyWatch) -> None:
    ksr = run(meta_in_dialog(keys) | {"rr.loose_route": -1})
    assert ksr.count("tm.t_relay") == 0
    assert [args[0] for args in ksr.args("sl.send_reply")] == [481]


def test_uic_invite_signs_each_branch_for_its_node_without_dialog_state(
        run: Callable[[dict[str, Any]], FakeKsr], keys: KeyWatch,
        monkeypatch: pytest.MonkeyPatch) -> None:
    ksr = run(uic_results())
    assert ksr.args("tm.t_on_branch") == [("ksr_branch_freeswitch",)]
    assert ksr.count("dialog.dlg_manage") == 0
    assert ksr.count("rr.record_route") + ksr.count("rr.record_route_preset") == 0  # per branch
    edge = run.edge  # type: ignore[attr-defined]
    for node in ("sip:10.0.0.10:5080", "sip:10.0.0.11:5080"):
        branch = FakeKsr({"kx.get_duri": node, "kx.get_callid": "1", "pv.get": "meta-tag"})
        install_ksr(monkeypatch, branch)
        assert edge.ksr_branch_freeswitch(None) == edge_module.DONE
        host_port = node.removeprefix("sip:")
        assert branch.args("rr.add_rr_param") == [
            (f";wamac={sign(keys.ring, 'u', '1', 'meta-tag', host_port + ':udp')}",)]
        assert branch.count("rr.record_route") + branch.count("rr.record_route_preset") == 1


def test_failover_signs_the_next_nodes_branch(
        run: Callable[[dict[str, Any]], FakeKsr], monkeypatch: pytest.MonkeyPatch) -> None:
    edge = run.edge  # type: ignore[attr-defined]
    ksr = FakeKsr({"tm.t_is_canceled": -1, "tm.t_check_status": 1, "dispatcher.ds_next_dst": 1})
    install_ksr(monkeypatch, ksr)
    assert edge.ksr_failure_freeswitch(None) == edge_module.DONE
    assert ksr.args("tm.t_on_branch") == [("ksr_branch_freeswitch",)]
    assert ksr.count("tm.t_relay") == 1


def test_in_dialog_bye_from_freeswitch_watches_metas_answer(
        run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    ksr = run(uic_results(method="BYE", source="10.0.0.10") | {
        "is_TLS": 0, "siputils.has_totag": 1, "rr.loose_route": 1,
        "dispatcher.ds_is_from_lists": 1, "pv.get": "sip:157.240.1.1:5061;transport=tls"})
    assert ksr.args("tm.t_on_reply") == [("ksr_onreply_business",)]
    assert ksr.count("tm.t_relay") == 1


# ---- the pure pieces ------------------------------------------------------------------------


def test_source_check_matches_source_allowed_and_is_bounded() -> None:
    allowed = (ipaddress.ip_network("157.240.0.0/16"), ipaddress.ip_network("2a03:2880::/32"))
    check = source_check(allowed, maxsize=8)
    for address in ["157.240.9.9", "[2a03:2880::1]", "10.0.0.1", "not-an-ip", "", "157.241.0.1"]:
        assert check(address) is source_allowed(address, allowed)
        assert check(address) is source_allowed(address, allowed)  # second time from the cache
    assert check.cache_info().hits == 6
    for last in range(100):
        check(f"192.0.2.{last}")
    assert check.cache_info().currsize == 8


def test_source_check_without_allow_list_allows_all() -> None:
    assert source_check((), maxsize=2)("192.0.2.1") is True


def test_edge_header_block_is_the_lines_in_order() -> None:
    params = {"tgrp": "wacall", "trunk-context": "byoc.example.com", "X y": "1"}
    block = edge_header_block("+1555", params, "ctx", "digest")
    assert block == "".join(edge_headers("+1555", params, "ctx", "digest"))
    assert block.split("\r\n")[:-1] == [
        "X-WA-Business-Number: +1555", "X-WA-Context: ctx", "X-WA-Auth: digest",
        "X-WA-Tgrp: wacall", "X-WA-Trunk-Context: byoc.example.com", "X-WA-Param-X-y: 1"]
    assert block.endswith("\r\n")


@pytest.mark.parametrize(("host", "literal"), [
    ("sip.example.com", False), ("123", False), ("1.2.3", False), ("1.2.3.4.5", False),
    ("01.2.3.4", False), ("", False), ("1.2.3.4", True), ("255.255.255.255", True),
    ("::1", True), ("2a03:2880::1", True), ("fe80::1%eth0", True), ("a:b", False),
    ("example.com:5060", False),
])
def test_is_ip_literal(host: str, literal: bool) -> None:
    assert is_ip_literal(host) is literal
    try:
        ipaddress.ip_address(host)
        expected = True
    except ValueError:
        expected = False
    assert literal is expected


def test_unreadable_headers_are_a_counted_malformed_request_not_too_many_hops(
        run: Callable[[dict[str, Any]], FakeKsr]) -> None:
    """maxfwd answers -2 when it cannot parse the headers (a line without a colon before
    Max-Forwards): counted in wa_malformed, since core:bad_msg_hdr is not in every build, and
    not answered (a reply would parse the same headers again, logging the error again)."""
    ksr = run(uic_results() | {"maxfwd.process_maxfwd": -2})
    assert ksr.args("sl.send_reply") == []
    assert ksr.args("statistics.update_stat") == [("wa_malformed", 1)]
    assert ksr.count("sanity.sanity_check_defaults") == 0
    assert ksr.count("tm.t_relay") == 0

    ksr = run(uic_results() | {"maxfwd.process_maxfwd": -1})  # Max-Forwards: 0
    assert ksr.args("sl.send_reply") == [(483, "Too Many Hops")]
    assert ksr.args("statistics.update_stat") == []
    assert ksr.count("tm.t_relay") == 0

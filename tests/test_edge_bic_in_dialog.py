"""A business-initiated call's in-dialog requests with no per-call state in the edge (issue 20).

The edge answers Meta's 407 itself, so the INVITE Meta accepts carries FreeSWITCH's CSeq + 1
(RFC 3261 8.1.3.5) and every later request from the business side must reach Meta one above
FreeSWITCH's number, its answer coming back with FreeSWITCH's own. These tests play FreeSWITCH
(a UDP socket on a dispatcher node's port) and the WhatsApp user behind the strict Meta stand-in
(a UDP socket on the stand-in's user port: what it receives is what Meta received, the stand-in
relays CSeq unchanged), which judges CSeq as a UA must (RFC 3261 12.2.2 and 12.2.1.1: strictly
increasing per direction, an ACK with its INVITE's number): a request out of order gets 500, as
Meta's would. Meta's own in-dialog requests are played straight at the edge's TLS port, as Meta's
edge reconnecting to the edge's Record-Route address would send them (the stand-in's connection
died with the edge it came from).

Each call is set up, then its edge is restarted, or its in-dialog requests go through the other
edge of a two-edge site ([cluster], both edges with the same key file, ports and advertised name
on 127.0.0.1 and 127.0.0.2, as the cluster lab runs them on their own addresses).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.meta_standin import META_HOST, WHATSAPP_USER, MetaStandin
from provisioning.kamailio_rpc import call as call_rpc
from tests.conftest import edge_overrides
from tests.security.sip_wire import MetaTls, UdpPeer, header_values
from tests.two_edge_site import NUMBER, two_edge_site

FS_CSEQ = 101  # FreeSWITCH's INVITE CSeq (sofia starts anywhere; SIPp's 1 would hide a shift by one)


def standin_for(edge: EdgeLab, folder: Path) -> MetaStandin:
    """Meta's stand-in on the edge's ports, outside the edge's life cycle (an edge restart must
    not restart Meta)."""
    return MetaStandin(folder, edge.ports.meta, edge.ca.issue("meta", [META_HOST]),
                       {n.business_number: n.phone_number_id for n in edge.config.numbers},
                       edge.config.site.sip_domain, {NUMBER: LAB_PASSWORD})


@contextlib.contextmanager
def running(standin: MetaStandin) -> Iterator[MetaStandin]:
    try:
        standin.start()
        yield standin
    finally:
        standin.stop()


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EdgeLab, MetaStandin]]:
    folder = tmp_path_factory.mktemp("bic-in-dialog")
    edge = EdgeLab(folder / "edge", edge_overrides(), passwords={NUMBER: LAB_PASSWORD})
    with edge, running(standin_for(edge, folder / "meta")) as standin:
        yield edge, standin


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[EdgeLab, EdgeLab, MetaStandin]]:
    """Two edges of one site (tests/two_edge_site.py) and one Meta stand-in, A's."""
    folder = tmp_path_factory.mktemp("bic-site")
    with two_edge_site(folder) as (edge_a, edge_b), \
            running(standin_for(edge_a, folder / "meta")) as standin:
        yield edge_a, edge_b, standin


# ---- the parties ------------------------------------------------------------------------------


class WhatsAppUser(UdpPeer):
    """The user behind the Meta stand-in, keeping the dialog's remote CSeq as a UA does: a
    request from the business side whose CSeq is not above the last one (an ACK: not its
    INVITE's) is out of order and answered 500 (RFC 3261 12.2.2)."""

    remote_cseq = 0
    invite_cseq = 0  # the last INVITE's, which its ACK repeats (a PRACK may come between)

    def judge(self, request: str) -> bool:
        number, method = header_values(request, "CSeq")[0].split()
        if method == "ACK":
            return int(number) == self.invite_cseq
        if int(number) <= self.remote_cseq:
            return False
        self.remote_cseq = int(number)
        if method == "INVITE":
            self.invite_cseq = int(number)
        return True


@dataclass
class BicCall:
    """A business-initiated call that is up, as each side sees it."""

    call_id: str
    fs: UdpPeer
    user: WhatsAppUser
    fs_routes: list[str]  # FreeSWITCH's route set (from the 200 it got), in order
    fs_to: str  # To of FreeSWITCH's later requests (with Meta's tag)
    fs_target: str  # FreeSWITCH's remote target (the Contact of Meta's 200)
    fs_from: str  # FreeSWITCH's own From, with its tag
    meta_invite: str  # the INVITE as the WhatsApp user got it
    user_tag: str
    fs_cseq: int = FS_CSEQ

    @property
    def meta_routes(self) -> list[str]:
        """Meta's route set toward the edge: the edge's own entries of the INVITE's
        Record-Route (Meta's proxies pop theirs), in order."""
        entries = [e.strip() for v in header_values(self.meta_invite, "Record-Route")
                   for e in v.split(",")]
        return [e for e in entries if ";wamac=" in e]


def fs_invite(call_id: str, fs_port: int, edge: str) -> str:
    return "\r\n".join([
        f"INVITE sip:{WHATSAPP_USER}@{edge} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{fs_port};branch=z9hG4bK-{call_id}-inv;rport",
        "Max-Forwards: 70",
        f"From: <sip:{NUMBER}@{edge}>;tag=fs-{call_id}",
        f"To: <sip:{WHATSAPP_USER}@{edge}>",
        f"Call-ID: {call_id}",
        f"CSeq: {FS_CSEQ} INVITE",
        f"Contact: <sip:fs@127.0.0.1:{fs_port}>",
        "Content-Length: 0", "", ""])


def next_response(peer: UdpPeer, call_id: str, method: str, timeout: float = 10) -> str:
    """The next final response (or 18x/2xx when `method` is INVITE) for `call_id`/`method`."""
    while True:
        message = peer.answer(call_id, timeout)
        if not message.startswith("SIP/2.0 "):
            continue
        if not header_values(message, "CSeq")[0].endswith(" " + method):
            continue
        if message.startswith("SIP/2.0 100"):
            continue
        return message


def fs_calls(edge: EdgeLab, fs: UdpPeer, user: WhatsAppUser, call_id: str) -> str:
    """FreeSWITCH's INVITE through `edge`: the INVITE as the WhatsApp user got it (in order)."""
    user.remote_cseq = 0
    fs.sock.sendto(fs_invite(call_id, fs.port, edge.config.listen.internal).encode(),
                   edge_socket(edge))
    invite = user.request("INVITE")
    assert user.judge(invite)
    return invite


def establish(edge: EdgeLab, fs: UdpPeer, user: WhatsAppUser, call_id: str,
              standin: MetaStandin) -> BicCall:
    """FreeSWITCH calls through `edge`; the edge answers Meta's 407; the user answers 200."""
    invite = fs_calls(edge, fs, user, call_id)
    user_tag = f"wa-{call_id}"
    user.reply(invite, 200, "OK", to_tag=user_tag)
    ok = next_response(fs, call_id, "INVITE")
    assert ok.startswith("SIP/2.0 200"), ok
    # FreeSWITCH gets its own CSeq back; Meta accepted the edge's answer one above it
    assert header_values(ok, "CSeq") == [f"{FS_CSEQ} INVITE"]
    invites = [e.detail.split()[:2] for e in standin.events_for(call_id)
               if e.way == "recv" and e.first_line.startswith("INVITE")]
    assert invites == [[f"cseq={FS_CSEQ}", "auth=no"], [f"cseq={FS_CSEQ + 1}", "auth=yes"]]
    routes = [e.strip() for v in header_values(ok, "Record-Route") for e in v.split(",")]
    bic = BicCall(call_id, fs, user, list(reversed(routes)), header_values(ok, "To")[0],
                  header_values(ok, "Contact")[0].split(";")[0].strip("<>"),
                  header_values(ok, "From")[0], invite, user_tag)
    fs_in_dialog(bic, "ACK", FS_CSEQ, edge_socket(edge))
    ack = user.request("ACK")
    assert user.judge(ack), header_values(ack, "CSeq")
    return bic


def edge_socket(edge: EdgeLab) -> tuple[str, int]:
    host, port = edge.config.listen.internal.rsplit(":", 1)
    return host, int(port)


def fs_in_dialog(bic: BicCall, method: str, cseq: int, to: tuple[str, int],
                 extra: tuple[str, ...] = ()) -> None:
    """FreeSWITCH's in-dialog request along its route set, sent to `to` (the first Route's
    address, or another edge's when that address moved there); `extra` header lines."""
    lines = [
        f"{method} {bic.fs_target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{bic.fs.port};branch=z9hG4bK-{bic.call_id}-{method}{cseq}"
        ";rport",
        "Max-Forwards: 70",
        f"From: {bic.fs_from}",
        f"To: {bic.fs_to}",
        f"Call-ID: {bic.call_id}",
        f"CSeq: {cseq} {method}",
        *(f"Route: {route}" for route in bic.fs_routes),
        *extra,
        "Content-Length: 0", "", ""]
    bic.fs.sock.sendto("\r\n".join(lines).encode(), to)


def business_bye(bic: BicCall, to: tuple[str, int]) -> tuple[str, str]:
    """FreeSWITCH's BYE (its next CSeq): (the BYE as Meta got it, FreeSWITCH's answer)."""
    fs_in_dialog(bic, "BYE", bic.fs_cseq + 1, to)
    bye = bic.user.request("BYE")
    if bic.user.judge(bye):
        bic.user.reply(bye, 200, "OK")
    else:
        bic.user.reply(bye, 500, "Server Internal Error - CSeq out of order")
    return bye, next_response(bic.fs, bic.call_id, "BYE")


def meta_request(edge: EdgeLab, bic: BicCall, method: str, cseq: int) -> tuple[str, str]:
    """Meta's in-dialog request straight at `edge`'s TLS port (its edge reconnecting):
    (the request as FreeSWITCH got it, Meta's answer); FreeSWITCH answers 200."""
    invite = bic.meta_invite
    contact = header_values(invite, "Contact")[0].strip("<>")
    with MetaTls(edge, edge.config.listen.tls.rsplit(":", 1)[0]) as tls:
        lines = [
            f"{method} {contact} SIP/2.0",
            f"Via: SIP/2.0/TLS 127.0.0.1:{tls.port};branch=z9hG4bK-{bic.call_id}-m{method}{cseq}"
            ";rport",
            "Max-Forwards: 70",
            f"From: {header_values(invite, 'To')[0]};tag={bic.user_tag}",
            f"To: {header_values(invite, 'From')[0]}",
            f"Call-ID: {bic.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{WHATSAPP_USER}@127.0.0.1:{tls.port};transport=tls>",
            *(f"Route: {route}" for route in bic.meta_routes),
            "Content-Length: 0", "", ""]
        tls.send("\r\n".join(lines))
        request = bic.fs.request(method)
        bic.fs.reply(request, 200, "OK", to_tag=f"fs-{bic.call_id}")
        return request, tls.answer(bic.call_id)


def active_dialogs(edge: EdgeLab) -> int:
    stats = call_rpc(edge.rpc_socket, "stats.get_statistics", "active_dialogs")
    return int(re.sub(r".*=\s*", "", str(stats[0])))


def cseq_of(message: str) -> str:
    return header_values(message, "CSeq")[0]


# ---- one edge, restarted mid-call ---------------------------------------------------------------


@pytest.fixture
def parties(single: tuple[EdgeLab, MetaStandin]) -> Iterator[tuple[UdpPeer, WhatsAppUser]]:
    edge, _ = single
    user = WhatsAppUser(edge.ports.meta.whatsapp_user)
    with UdpPeer(edge.ports.freeswitch[0]) as fs, user:
        yield fs, user


def test_bic_call_keeps_no_dialog_in_the_edge(single: tuple[EdgeLab, MetaStandin],
                                              parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge, standin = single
    fs, user = parties
    bic = establish(edge, fs, user, "bic-stateless", standin)
    assert active_dialogs(edge) == 0  # the call is up, the edge holds nothing of it
    bye, answer = business_bye(bic, edge_socket(edge))
    assert cseq_of(bye) == f"{FS_CSEQ + 2} BYE"
    assert answer.startswith("SIP/2.0 200") and cseq_of(answer) == f"{FS_CSEQ + 1} BYE", answer


def test_business_bye_after_an_edge_restart_reaches_meta_with_the_next_cseq(
        single: tuple[EdgeLab, MetaStandin], parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge, standin = single
    fs, user = parties
    bic = establish(edge, fs, user, "bic-restart-business-bye", standin)
    edge.stop()
    edge.start()
    bye, answer = business_bye(bic, edge_socket(edge))
    # Meta's INVITE was FS_CSEQ + 1: the BYE must be above it, and FreeSWITCH gets its own back
    assert cseq_of(bye) == f"{FS_CSEQ + 2} BYE"
    assert answer.startswith("SIP/2.0 200"), answer
    assert cseq_of(answer) == f"{FS_CSEQ + 1} BYE"
    # uac's From/To restore is stateless too: Meta sees the dialog's own identities
    assert header_values(bye, "From")[0].startswith(f"<sip:{NUMBER}@sip.example.com>")


def test_meta_requests_after_an_edge_restart_reach_the_business(
        single: tuple[EdgeLab, MetaStandin], parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge, standin = single
    fs, user = parties
    bic = establish(edge, fs, user, "bic-restart-meta-bye", standin)
    edge.stop()
    edge.start()
    # Meta's re-INVITE (its own CSeq space: nothing to renumber) and then its BYE
    reinvite, answer = meta_request(edge, bic, "INVITE", 1)
    assert cseq_of(reinvite) == "1 INVITE" and answer.startswith("SIP/2.0 200"), answer
    bye, answer = meta_request(edge, bic, "BYE", 2)
    assert cseq_of(bye) == "2 BYE"
    assert answer.startswith("SIP/2.0 200") and cseq_of(answer) == "2 BYE", answer
    # FreeSWITCH sees its own From and To again (uac restore from the route)
    assert header_values(bye, "To")[0].startswith(f"<sip:{NUMBER}@127.0.0.1:")


def test_freeswitchs_prack_reaches_meta_with_the_rack_of_metas_invite(
        single: tuple[EdgeLab, MetaStandin], parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    """Meta's reliable 183 (RFC 3262) reaches FreeSWITCH with FreeSWITCH's CSeq; its PRACK
    acknowledges it by that CSeq in RAck, which Meta matches against its own INVITE's, one
    above: the edge renumbers RAck with the PRACK's CSeq, and Meta's 200 comes back down."""
    edge, _ = single
    fs, user = parties
    call_id = "bic-prack"
    invite = fs_calls(edge, fs, user, call_id)
    user_tag = f"wa-{call_id}"
    user.reply(invite, 183, "Session Progress", to_tag=user_tag,
               extra=("Require: 100rel", "RSeq: 1"))
    progress = next_response(fs, call_id, "INVITE")
    assert progress.startswith("SIP/2.0 183"), progress
    assert header_values(progress, "CSeq") == [f"{FS_CSEQ} INVITE"]
    routes = [e.strip() for v in header_values(progress, "Record-Route") for e in v.split(",")]
    bic = BicCall(call_id, fs, user, list(reversed(routes)), header_values(progress, "To")[0],
                  header_values(progress, "Contact")[0].split(";")[0].strip("<>"),
                  header_values(progress, "From")[0], invite, user_tag, FS_CSEQ + 1)
    fs_in_dialog(bic, "PRACK", FS_CSEQ + 1, edge_socket(edge),
                 extra=(f"RAck: 1 {FS_CSEQ} INVITE",))
    prack = user.request("PRACK")
    assert header_values(prack, "RAck") == [f"1 {FS_CSEQ + 1} INVITE"]  # Meta's INVITE's CSeq
    assert user.judge(prack), header_values(prack, "CSeq")
    user.reply(prack, 200, "OK", to_tag=user_tag)
    answer = next_response(fs, call_id, "PRACK")
    assert answer.startswith("SIP/2.0 200"), answer
    assert header_values(answer, "CSeq") == [f"{FS_CSEQ + 1} PRACK"]
    user.reply(invite, 200, "OK", to_tag=user_tag)
    assert next_response(fs, call_id, "INVITE").startswith("SIP/2.0 200")
    fs_in_dialog(bic, "ACK", FS_CSEQ, edge_socket(edge))
    assert user.judge(user.request("ACK"))
    bye, answer = business_bye(bic, edge_socket(edge))
    assert cseq_of(bye) == f"{FS_CSEQ + 3} BYE" and answer.startswith("SIP/2.0 200"), answer


def test_business_reinvite_after_a_restart_is_still_refused_by_the_edge(
        single: tuple[EdgeLab, MetaStandin], parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge, standin = single
    fs, user = parties
    bic = establish(edge, fs, user, "bic-restart-reinvite", standin)
    edge.stop()
    edge.start()
    fs_in_dialog(bic, "INVITE", FS_CSEQ + 1, edge_socket(edge))
    answer = next_response(fs, bic.call_id, "INVITE")
    assert answer.startswith("SIP/2.0 488"), answer
    assert user.receive(0.5) == []  # Meta never saw it
    bic.fs_cseq += 1
    bye, answer = business_bye(bic, edge_socket(edge))
    assert cseq_of(bye) == f"{FS_CSEQ + 3} BYE" and answer.startswith("SIP/2.0 200"), answer


def test_a_route_with_a_changed_cseq_offset_is_refused(
        single: tuple[EdgeLab, MetaStandin], parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    """The offset FreeSWITCH's route carries is signed: one changed is refused, never sent."""
    edge, standin = single
    fs, user = parties
    bic = establish(edge, fs, user, "bic-forged-offset", standin)
    real = list(bic.fs_routes)
    assert all(re.search(r";wacs=1\.", route) for route in real[:2]), real
    bic.fs_routes = [re.sub(r";wacs=1\.", ";wacs=7.", route) for route in real]
    fs_in_dialog(bic, "BYE", FS_CSEQ + 1, edge_socket(edge))
    answer = next_response(fs, bic.call_id, "BYE")
    assert answer.startswith("SIP/2.0 403"), answer
    assert [m for m in user.receive(0.5) if m.startswith("BYE")] == []
    bic.fs_routes = real
    bye, answer = business_bye(bic, edge_socket(edge))
    assert cseq_of(bye) == f"{FS_CSEQ + 2} BYE" and answer.startswith("SIP/2.0 200"), answer


# ---- two edges of a site: the call set up on A, its requests through B --------------------------


@pytest.fixture
def site_parties(site: tuple[EdgeLab, EdgeLab, MetaStandin]
                 ) -> Iterator[tuple[UdpPeer, WhatsAppUser]]:
    edge_a, _, _ = site
    user = WhatsAppUser(edge_a.ports.meta.whatsapp_user)
    with UdpPeer(edge_a.ports.freeswitch[0]) as fs, user:
        yield fs, user


def test_business_bye_through_the_other_edge(site: tuple[EdgeLab, EdgeLab, MetaStandin],
                                             site_parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge_a, edge_b, standin = site
    fs, user = site_parties
    bic = establish(edge_a, fs, user, "bic-site-business-bye", standin)
    # FreeSWITCH's next hop is A's internal address; A is gone and B answers there (moved
    # address): B takes A's entries as its own and renumbers from the route alone
    bye, answer = business_bye(bic, edge_socket(edge_b))
    assert cseq_of(bye) == f"{FS_CSEQ + 2} BYE"
    assert answer.startswith("SIP/2.0 200") and cseq_of(answer) == f"{FS_CSEQ + 1} BYE", answer
    assert "BYE from FreeSWITCH call-id=bic-site-business-bye" in edge_b.kamailio_log()


def test_meta_bye_through_the_other_edge(site: tuple[EdgeLab, EdgeLab, MetaStandin],
                                         site_parties: tuple[UdpPeer, WhatsAppUser]) -> None:
    edge_a, edge_b, standin = site
    fs, user = site_parties
    bic = establish(edge_a, fs, user, "bic-site-meta-bye", standin)
    bye, answer = meta_request(edge_b, bic, "BYE", 1)
    assert cseq_of(bye) == "1 BYE"
    assert answer.startswith("SIP/2.0 200"), answer
    assert "BYE from Meta call-id=bic-site-meta-bye" in edge_b.kamailio_log()

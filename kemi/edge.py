"""The KEMI adapter: Kamailio calls these methods for each SIP message.

The class follows the shape of Kamailio's own KEMI example: `ksr_request_route` reads like a
table of contents and each step is a small method. Decisions live in the plain modules beside
this one; this file only moves values between them and KSR. Every entry point returns an int,
and no exception ever leaves it: an exception left pending breaks the next KSR call of the
worker, and a request without a reply is retransmitted by Meta for 32 seconds.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import KSR

from kemi.bic import BicRefusal, bic_caller, challenge_algorithm, parse_bic_request_uri
from kemi.call_log import call_line
from kemi.decisions import (
    AuthAction,
    InDialogAction,
    auth_action,
    choose_destination,
    in_dialog_action,
    in_dialog_target_allowed,
    internal_source_trusted,
    next_hop_address,
    out_of_dialog_method,
    source_check,
)
from kemi.diagnoses import Diagnosis, diagnose_meta_answer, edge_diagnosis
from kemi.dialog_mac import (
    CSEQ_PARAM,
    KeyRing,
    KeyWatch,
    contact_uri,
    hop_text,
    route_param,
    route_token,
    sign,
    sign_cseq_step,
    token_direction,
    verify,
    verify_cseq_step,
)
from kemi.dialog_mac import PARAM as MAC_PARAM
from kemi.digest_answer import authorization, choose, parse_challenge
from kemi.digest_credentials import (
    CredentialsProblem,
    DigestCredentials,
    credentials_for,
    same_resource,
)
from kemi.drop_summary import Drop, DropSummary
from kemi.media_anchor import MediaAnchor
from kemi.media_loss import (
    FORGET_PEER,
    answered_call,
    bye_toward_meta,
    decode,
    forget_key,
    lost_with_node,
    meta_side,
    meta_side_value,
    node_key,
    record_key,
)
from kemi.media_loss import TABLE as CALLS_TABLE
from kemi.metrics import SOCKET_NAME as METRICS_SOCKET
from kemi.metrics import EdgeMetrics, serve_http
from kemi.peer_certificate import peer_certificate_names
from kemi.request_uri import RequestUriError, UicTarget, parse_uic_request_uri
from kemi.settings import EdgeSettings, load_settings
from kemi.wa_headers import (
    edge_header_block,
    header_fields,
    may_carry_edge_headers,
    screen_inbound_headers,
)

CREDS_TABLE = "wa_creds"
AUTHFAIL_TABLE = "wa_authfail"
DONE = 1  # KEMI return value: the route ran to its end, Kamailio keeps the message state.
QOP_AUTH = 1
STALE = 16
MAXFWD_UNREADABLE = -2  # KSR.maxfwd.process_maxfwd: the headers could not be parsed (maxfwd.c)
HA1_PASSWORD = 1
CSEQ_STEP_AVP = "$avp(wa_cseq_step)"  # a transaction's CSeq step toward Meta (BIC)
META_SIDE_AVP = "$avp(wa_meta_side)"  # what a BYE toward Meta needs, for the 200 (UIC)
SOURCE_CACHE_SIZE = 1024  # allow-list decisions kept per worker (Meta's prefixes hold few hosts)
MAX_CHALLENGES = 8  # challenge headers of one 401/407 looked at (Meta sends two)
OUTCOME_FLAG = 10  # transaction flag: this INVITE's outcome is counted (2xx retransmissions)
PROC_SIPINIT = 1  # child_init rank of the first SIP worker: once-per-instance work
META_SOCKET = "meta"  # kamailio.cfg: the socket Meta's requests arrive on
DMQ_SOCKET = "dmq"  # kamailio.cfg, [cluster]: the edges' DMQ socket (provisioning/render.py)


def _normalised_address(text: str) -> str | None:
    """An address as dmq_request compares it (ip_address's compressed form), None if none."""
    try:
        return ipaddress.ip_address(text.strip("[]")).compressed
    except ValueError:
        return None


class RequestFacts(NamedTuple):
    """What the request route asks of every request, read from KSR once when it enters
    (a NamedTuple: built twice per request, a third of a frozen dataclass's cost).

    `kind` is the method upper-cased, as Kamailio's own method test (is_ACK ...) matches it;
    `method` is the method as sent, for the policy that compares it exactly and for logs.
    """

    method: str
    kind: str
    source: str
    from_meta: bool
    message: str = ""  # the request as received; read once, and so known to be valid UTF-8

    @property
    def request_uri(self) -> str:
        """The request URI as received (before the edge rewrites it): the text between the
        message's first and second space (found without copying or scanning the message)."""
        first = self.message.find(" ")
        second = self.message.find(" ", first + 1) if first >= 0 else -1
        return self.message[first + 1:second] if second >= 0 else ""


NO_REQUEST = RequestFacts("", "", "", False)


class WhatsAppEdge:
    """Kamailio's view of the edge: one instance per worker process (workers are forked)."""

    def __init__(self, settings: EdgeSettings, keys: KeyWatch | None = None) -> None:
        self.settings = settings
        # The site's Record-Route MAC keys (kemi/dialog_mac.py): create_edge reads them at start
        # (no edge runs without them); a worker re-reads a changed file at most once a second.
        self.keys = keys
        self.key_problem: str | None = None  # the key file problem last logged
        # A worker handles one message at a time: ksr_request_route sets this on entry and
        # clears it on exit, so no fact of one request is seen by the next or by a reply or
        # failure route.
        self.request = NO_REQUEST
        # [cluster]: the peers' DMQ sockets, and those whose address text is already the one
        # ip_address() normalises it to (a source written so needs no parsing; dmq_request).
        self.dmq_peers = settings.cluster.dmq_peers
        self.dmq_peer_texts = frozenset(peer for peer in self.dmq_peers
                                        if _normalised_address(peer[0]) == peer[0])
        self.meta_source_allowed = source_check(settings.allowed_sources, SOURCE_CACHE_SIZE)
        self.drops = DropSummary()
        # KSR has xhttp_prom only when metrics.edge_listen loads it (kamailio.cfg).
        self.metrics = EdgeMetrics(getattr(KSR, "xhttp_prom", None))
        self.media = MediaAnchor(settings)

    def child_init(self, rank: int) -> int:
        if rank == PROC_SIPINIT:
            self.metrics.create_series()
        return 0

    # ---- entry points -------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        self.request = NO_REQUEST
        try:
            self.route_request()
        except UnicodeDecodeError:
            # Values are checked once on entry (read_message); this is the net under a value
            # Kamailio made later (a next hop, a header the edge did not screen).
            self._refuse_bad_bytes()
        except Exception:
            self._log_exception("request route")
            self._reply(500, "Server Internal Error")
        finally:
            self.request = NO_REQUEST  # the facts live for this route only, never the next
        return DONE

    def ksr_onreply_meta(self, msg: object) -> int:
        """A reply from Meta to a business-initiated INVITE: check the peer, name the failure."""
        try:
            self.meta_reply()
        except Exception:
            self._log_exception("Meta reply route")
        return DONE

    def ksr_failure_meta(self, msg: object) -> int:
        """Meta's final answer was negative: answer its 407 once, or hand FreeSWITCH a diagnosis."""
        try:
            self.failure_meta()
        except Exception:
            self._log_exception("Meta failure route")
        return DONE

    def ksr_onreply_business(self, msg: object) -> int:
        """Meta's answer to an in-dialog request of the business side: FreeSWITCH's own CSeq
        back (the request left `CSEQ_STEP_AVP` above it), and for a BYE the call duration when
        Meta gives one."""
        try:
            step = KSR.pv.get(CSEQ_STEP_AVP)
            if isinstance(step, int) and step > 0:
                self._set_cseq(int(str(KSR.pv.get("$cs"))) - step)
            if str(KSR.pv.get("$rm") or "").upper() != "BYE":
                return DONE
            duration = KSR.hdr.get("X-WA-Meta-Call-Duration")
            if duration is not None:
                KSR.info(f"wa-edge: BYE to Meta answered {KSR.kx.get_status()} "
                         f"call-id={KSR.kx.get_callid()} duration={duration}\n")
        except Exception:
            self._log_exception("business in-dialog reply route")
        return DONE

    def ksr_xhttp_event(self, msg: object, evname: str = "") -> int:
        """An HTTP request (xhttp): /metrics on the metrics socket; nothing on any other."""
        try:
            serve_http(KSR.kx, KSR.xhttp, KSR.xhttp_prom)
        except Exception:
            self._log_exception("metrics route")
        return DONE

    def ksr_onreply_freeswitch(self, msg: object) -> int:
        """FreeSWITCH's answer to Meta's INVITE: its SDP goes back in Meta's profile (rtpengine);
        its 200 leaves the record a BYE toward Meta needs if the node is lost (kemi/media_loss)."""
        try:
            status = int(KSR.kx.get_status())
            if status == 200:
                self.remember_answered_call()
            if not self.media.active:
                return DONE
            if 180 <= status < 300 and not self.media.uic_answer(
                    str(KSR.pv.get("$avp(wa_uic_digits)") or "")):
                KSR.err(f"wa-edge: UIC call-id={KSR.kx.get_callid()} rtpengine did not take "
                        f"FreeSWITCH's {status} SDP: Meta gets FreeSWITCH's own SDP "
                        "(no media likely)\n")
        except Exception:
            self._log_exception("FreeSWITCH reply route")
        return DONE

    def ksr_dispatcher_event(self, msg: object, evname: str = "") -> int:
        """dispatcher's events (event_callback): a node's failed probe ("dispatcher:dst-down",
        the node's URI as R-URI) ends toward Meta every call this edge relayed to it."""
        try:
            if evname == "dispatcher:dst-down":
                self.node_lost(str(KSR.kx.get_ruri() or ""))
        except Exception:
            self._log_exception("dispatcher event")
        return DONE

    def ksr_failure_freeswitch(self, msg: object) -> int:
        """A FreeSWITCH node failed the INVITE: try the next one on 5xx or timeout."""
        try:
            self.failover_freeswitch()
        except Exception:
            self._log_exception("failure route")
        return DONE

    def ksr_branch_freeswitch(self, msg: object) -> int:
        """Each branch of Meta's INVITE toward a FreeSWITCH node, the first and every failover:
        the Record-Route is signed for that branch's node (tm keeps a branch route's changes to
        its branch), so the route Meta learns names the node that answered."""
        try:
            node = str(KSR.kx.get_duri() or "") or str(KSR.kx.get_ruri())
            self.record_route(toward_meta=False,
                              token=self.route_mac("u", str(KSR.pv.get("$ft") or ""), node))
        except Exception:
            self._log_exception("branch route")
            KSR.set_drop()  # an unsigned route would end the call at its first in-dialog request
        return DONE

    # ---- request route, step by step ----------------------------------------------------

    def read_message(self, source: str, from_meta: bool) -> RequestFacts | None:
        """The request as text, None (and a 400) when it is not valid UTF-8.

        KSR hands Python every value as str and raises UnicodeDecodeError on invalid UTF-8;
        reading the whole message once settles it for every header and URI read later (each
        is a slice of it cut at ASCII delimiters). The method comes from the request line.
        """
        try:
            message = str(KSR.kx.get_msgbuf())
        except UnicodeDecodeError:
            self._refuse_bad_bytes()
            return None
        method = message.lstrip("\r\n").split(" ", 1)[0]
        kind = method.upper() if method.isascii() else method  # Kamailio: ASCII strncasecmp
        return RequestFacts(method, kind, source, from_meta, message)

    def route_request(self) -> None:
        # KDMQ first ([cluster]: each call's three replicated writes, the nonce's nc, the
        # answered call and its removal, reach every other edge): one KSR call tells it, and
        # nothing of the screening below is done for it (bench/README "bench-edge-site").
        if self.dmq_peers and KSR.kx.get_rcv_sock_name() == DMQ_SOCKET:
            self.dmq_request()
            return
        source = str(KSR.kx.get_srcip())
        self.request = RequestFacts("", "", source, self.from_meta())
        if not self.source_admitted():
            return
        facts = self.read_message(source, self.request.from_meta)
        if facts is None:
            return
        self.request = facts
        if not self.reqinit():
            return
        kind = self.request.kind
        if kind == "CANCEL":
            if KSR.tm.t_check_trans() > 0:
                self.media.end()
                KSR.tm.t_relay()
            return
        if kind != "ACK":
            if KSR.tmx.t_precheck_trans() > 0:
                KSR.tm.t_check_trans()
                return
            if KSR.tm.t_check_trans() == 0:
                return
        if KSR.siputils.has_totag() > 0:
            self.within_dialog()
            return
        if kind == "ACK":
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        reply = out_of_dialog_method(self.request.method)
        if reply is not None:
            self._reply(reply.status, reply.reason, reply.headers)
            return
        if not self.request.from_meta:
            self.business_initiated_call()
            return
        self.user_initiated_call()

    def dmq_request(self) -> None:
        """The DMQ socket ([cluster]): KDMQ from a peer edge's socket goes to dmq (the htable
        replication of lockouts and nonces), or to forget_for_peer when it names FORGET_PEER;
        anything else is dropped unanswered. dmq itself
        would take a KDMQ from anyone, and a node that announces itself joins the bus.

        A peer's address as Kamailio writes it is looked up as is (`dmq_peer_texts`, the peers
        already in the form ip_address() gives); any other form is normalised as before."""
        source = str(KSR.kx.get_srcip())
        port = int(KSR.kx.get_srcport())
        peer = (source, port)
        if peer not in self.dmq_peer_texts:
            normalised = _normalised_address(source)
            peer = (normalised, port) if normalised is not None else (source, 0)
        if peer not in self.dmq_peers or KSR.kx.get_method() != "KDMQ":
            self.request = RequestFacts("", "", source, False)
            self._count_drop(Drop.NOT_A_PEER)
            KSR.set_drop()
            return
        if KSR.kx.get_ruser() == FORGET_PEER:
            self.forget_for_peer()  # ours, not a dmq peer's: dmq would answer it 404
            return
        KSR.dmq.handle_message()

    def from_meta(self) -> bool:
        """Meta only ever reaches the edge over TLS; the internal side is plain UDP/TCP.

        Asked once per request by route_request(); the route uses `self.request.from_meta`.
        """
        if KSR.is_TLS():
            return True  # Kamailio's tls socket, or a connection the edge opened toward Meta
        # HAProxy in front (5.6): Meta's connections arrive decrypted on the TCP socket "meta".
        return self.settings.front.haproxy and KSR.kx.get_rcv_sock_name() == META_SOCKET

    def source_admitted(self) -> bool:
        """Who may talk to the edge at all: asked first, before any value of the request is
        read, so nothing an untrusted sender wrote can skip it. Drops are counted and logged
        in summary (a flood must not flood the log)."""
        source = self.request.source
        if self.request.from_meta:
            if not self.meta_source_allowed(source):
                self._count_drop(Drop.NOT_ALLOWED)
                KSR.set_drop()
                return False
            if self.settings.pike and not self.settings.allowed_sources \
                    and KSR.pike.pike_check_req() < 0:
                self._count_drop(Drop.PIKE)
                KSR.set_drop()
                return False
        elif self.metrics.prom is not None and KSR.kx.get_rcv_sock_name() == METRICS_SOCKET:
            KSR.set_drop()  # the metrics socket serves HTTP only; SIP there is no entry
            return False
        elif not internal_source_trusted(KSR.dispatcher.ds_is_from_lists() > 0, source,
                                         self.settings.bic.trusted_sources):
            self._count_drop(Drop.UNTRUSTED)
            self._reply(403, f"Forbidden - {source} may not originate calls",
                        edge_diagnosis("untrusted_source").header_line())
            return False
        return True

    def reqinit(self) -> bool:
        """Hop count and sanity. sanity answers what it refuses (400), except credentials that
        are not Digest: its digest check is off (kamailio.cfg) and authenticate() answers.
        maxfwd answers -1 only for a hop count of 0 (483) and -2 when it cannot read the
        headers: a header line without a colon before Max-Forwards, or a count that is not a
        number. That request is malformed, counted here (Kamailio's own core:bad_msg_hdr is
        not in every build: the CMake build of 6.0.0-6.0.3 leaves core statistics out) and
        not answered: a reply is built from the same headers, and each parse of them logs an
        error (on 5.6 with the whole message)."""
        hops = KSR.maxfwd.process_maxfwd(10)
        if hops == MAXFWD_UNREADABLE:
            self._count_drop(Drop.MALFORMED)
            return False
        if hops < 0:
            self._reply(483, "Too Many Hops")
            return False
        if KSR.sanity.sanity_check_defaults() < 0:
            self._count_drop(Drop.MALFORMED)
            return False
        return True

    def within_dialog(self) -> None:
        request = self.request
        if request.kind == "ACK" and KSR.tm.t_check_trans() == 0:
            return  # the ACK of a negative reply the edge sent itself: absorbed by tm
        routed = request.from_meta and KSR.rr.loose_route() > 0
        if request.from_meta and not self.meta_route_signed(routed):
            return
        action = in_dialog_action(request.method, request.from_meta)
        if action is InDialogAction.REFUSE_SESSION_CHANGE:
            self._refuse_stateful(488, "Not Acceptable Here - WhatsApp refuses re-INVITE and "
                                  "UPDATE, the call goes on unchanged", "reinvite_refused")
            return
        if action is InDialogAction.REFUSE_TRANSFER:
            self._refuse_stateful(405, "Method Not Allowed - WhatsApp calls cannot be "
                                  "transferred with REFER", "refer_unsupported",
                                  "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n")
            return
        if routed or (not request.from_meta and KSR.rr.loose_route() > 0):
            if request.from_meta:
                next_hop = str(KSR.pv.get("$nh(u)"))
                if not in_dialog_target_allowed(next_hop, self.settings.freeswitch_nodes,
                                                self.settings.bic.trusted_sources):
                    KSR.notice(f"wa-edge: in-dialog {request.method} from Meta toward "
                               f"{next_hop[:100]} refused: not a FreeSWITCH node\n")
                    if request.kind != "ACK":
                        self._reply(403, "Forbidden - not a FreeSWITCH node")
                    return
                if may_carry_edge_headers(request.message):  # Meta's ACK and BYE carry none
                    self.screen_headers(header_fields(request.message))
                if self.settings.cluster.enabled:
                    # a call another edge took: loose_route forced no socket of this edge (its
                    # internal entry names the other's), and the default UDP socket is the DMQ one
                    KSR.pv.sets("$fsn", "internal")
            else:
                if not self.business_cseq_step():
                    return
                if self.settings.front.haproxy:
                    # Toward Meta: loose_route forced the socket its second Route names, the
                    # loopback TLS socket advertised as the public address; bound to 127.0.0.1,
                    # a new connection could not reach Meta. Kamailio picks the TLS socket
                    # again without binding the source (the kernel's route decides it).
                    KSR.pv.unset("$fs")
            if request.kind == "BYE":
                self.end_media(request.from_meta)
                self.forget_call(str(KSR.pv.get("$nh(u)") or "") if request.from_meta
                                 else f"{KSR.pv.get('$si')}:{KSR.pv.get('$sp')}")
            if request.kind == "BYE" and request.from_meta:
                duration = KSR.hdr.get("X-WA-Meta-Call-Duration")
                KSR.info(f"wa-edge: BYE from Meta call-id={KSR.kx.get_callid()} "
                         f"duration={duration}\n")
            elif request.kind == "BYE":
                KSR.info(f"wa-edge: BYE from FreeSWITCH call-id={KSR.kx.get_callid()}\n")
                KSR.tm.t_on_reply("ksr_onreply_business")
            elif request.kind == "ACK" and request.from_meta:
                # Meta's ACK confirms FreeSWITCH's 2xx: the call is answered. Counted here, in
                # a route that runs anyway, rather than in a reply route run for every 1xx/2xx.
                self.metrics.call("uic", "answered")
            self.relay()
            return
        if request.kind == "ACK":
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        self._reply(404, "Not Here")

    def meta_route_signed(self, routed: bool) -> bool:
        """An in-dialog request from Meta goes on only along a route this site signed: the MAC
        in the first Route entry (this edge's Record-Route) verifies for this Call-ID, the
        caller's tag and the next hop loose_route found (kemi/dialog_mac.py). No per-call
        state: any edge holding the site's key decides alike, after a restart too. Otherwise
        481 (no route of this site at all) or 403 (a route not signed for this call and hop),
        and nothing is relayed; an ACK is dropped without an answer."""
        request = self.request
        token = route_token(str(KSR.hdr.get("Route") or "")) if routed else None
        if token is None:
            # No Route naming an edge of this site: whatever its To-tag says, an out-of-dialog
            # request nobody authenticated (an ACK here is most often that of our stateless 407).
            if request.kind != "ACK":
                self._count_drop(Drop.UNKNOWN_DIALOG)
                self._reply(481, "Call/Transaction Does Not Exist")
            return False
        next_hop = str(KSR.pv.get("$nh(u)") or "")
        if self.route_mac_verifies(token, next_hop):
            return True
        self._count_drop(Drop.UNKNOWN_DIALOG)
        KSR.notice(f"wa-edge: in-dialog {request.method[:20]} from Meta call-id="
                   f"{str(KSR.kx.get_callid())[:100]} toward {next_hop[:100]} refused: "
                   "its route is not signed by this site for this call and hop\n")
        if request.kind != "ACK":
            self._reply(403, "Forbidden - route not signed for this dialog")
        return False

    def business_cseq_step(self) -> bool:
        """A request of the business side in a business-initiated call leaves with Meta's
        numbering: its CSeq raised by the step its route carries (the edge answered Meta's
        407, so Meta's dialog runs one above FreeSWITCH's, RFC 3261 8.1.3.5 and 12.2.1.1), and
        its answers are brought back down (ksr_onreply_business). The step comes signed in the
        first Route entry (kemi/dialog_mac.py, written into the 2xx FreeSWITCH learned its route
        from), so any edge of the site renumbers alike, after a restart too, with no dialog
        state. A route without it (a user-initiated call, or a business-initiated one Meta
        answered without a challenge) needs none. False (and 403, nothing relayed) when the
        step does not verify for this Call-ID and FreeSWITCH's tag."""
        value = route_param(str(KSR.hdr.get("Route") or ""), CSEQ_PARAM)
        if value is None:
            return True
        step = verify_cseq_step(self.key_ring(), value, str(KSR.kx.get_callid()),
                                str(KSR.pv.get("$ft") or ""))
        if step is None:
            self._count_drop(Drop.UNKNOWN_DIALOG)
            KSR.notice(f"wa-edge: in-dialog {self.request.method[:20]} from the business side "
                       f"call-id={str(KSR.kx.get_callid())[:100]} refused: its route's CSeq "
                       "step is not signed by this site for this call\n")
            if self.request.kind != "ACK":
                self._reply(403, "Forbidden - route not signed for this dialog")
            return False
        if step:
            self._set_cseq(int(str(KSR.pv.get("$cs"))) + step)
            if self.request.kind == "PRACK":
                self._shift_rack(step)
            if self.request.kind != "ACK":  # an ACK has no answer
                KSR.pv.seti(CSEQ_STEP_AVP, step)
                KSR.tm.t_on_reply("ksr_onreply_business")
        return True

    def route_mac_verifies(self, token: str, next_hop: str) -> bool:
        direction = token_direction(token)
        try:
            hop = hop_text(*next_hop_address(next_hop))
        except ValueError:
            return False
        if direction is None:
            return False
        # Meta's requests carry the caller's tag as From tag when Meta called ("u"), as To tag
        # when the business did ("b").
        tag = str(KSR.pv.get("$ft" if direction == "u" else "$tt") or "")
        return verify(self.key_ring(), token, str(KSR.kx.get_callid()), tag, hop)

    def route_mac(self, direction: str, tag: str, next_hop: str) -> str:
        """The token for this call's Record-Route toward `next_hop` (ValueError: no SIP URI)."""
        hop = hop_text(*next_hop_address(next_hop))
        return sign(self.key_ring(), direction, str(KSR.kx.get_callid()), tag, hop)

    def key_ring(self) -> KeyRing:
        if self.keys is None:
            self.keys = KeyWatch(Path(self.settings.in_dialog_key_file))
        ring = self.keys.current()
        if self.keys.problem != self.key_problem:
            self.key_problem = self.keys.problem
            if self.key_problem is not None:
                KSR.err(f"wa-edge: in-dialog key file unusable, keeping the keys read before: "
                        f"{self.key_problem}\n")
        return ring

    def end_media(self, bye_from_meta: bool) -> None:
        """An answered call's BYE: one line of what rtpengine saw of each side, then the session
        deleted (a silent call says which side was silent, or that rtpengine lost it)."""
        if not self.media.active:
            return
        meta_tag = str(KSR.pv.get("$ft" if bye_from_meta else "$tt") or "")
        seen = self.media.end_of_call(meta_tag)
        call_id = KSR.kx.get_callid()
        if seen is None:
            KSR.warn(f"wa-edge: media call-id={call_id} diagnosis=rtpengine_session_lost: "
                     "rtpengine had no session for this call at its end (restarted or "
                     "unreachable mid-call), so its media had stopped; see rtpengine's log\n")
            self.metrics.media_ending("rtpengine_session_lost")
            return
        diagnosis = seen.diagnosis()
        KSR.info(f"wa-edge: {seen.line()} call-id={call_id}"
                 f"{f' diagnosis={diagnosis}' if diagnosis else ''}\n")
        self.metrics.media_ending(diagnosis or "both_ways")

    def user_initiated_call(self) -> None:
        """An INVITE from Meta: who is called, is it really Meta, where does it go."""
        try:
            target = parse_uic_request_uri(self.request.request_uri,
                                           self.settings.accepted_domains)
        except RequestUriError as error:
            self._reply(error.status, error.reason)
            self._setup_outcome("uic", "bad_request_uri", error.status)
            return
        if target.digits not in self.settings.numbers:
            self._reply(404, "Not Found - business number not served here")
            self._setup_outcome("uic", "unknown_business_number", 404)
            return
        fields = header_fields(self.request.message)
        auth = self.authenticate(target, fields)
        if auth is None:
            return
        self.screen_headers(fields)
        destination = choose_destination(self.settings, target.business_number,
                                         target.user_params)
        if KSR.dispatcher.ds_select_dst(destination.freeswitch_set, destination.algorithm) < 0:
            KSR.err(f"wa-edge: no FreeSWITCH node in set {destination.freeswitch_set}\n")
            self._reply(503, "Service Unavailable - no FreeSWITCH node available")
            self._setup_outcome("uic", "no_freeswitch", 503)
            return
        if not self.media.uic_offer():
            self._refuse_media("uic")
            return
        KSR.pv.sets("$avp(wa_uic_digits)", target.digits)
        KSR.hdr.append(edge_header_block(target.business_number, target.user_params,
                                         destination.context, auth))
        KSR.seturi(f"sip:{target.business_number}@{self.settings.sip_domain}")
        # No dialog state: each branch's Record-Route carries a MAC for the node it goes to
        # (ksr_branch_freeswitch), which is all within_dialog needs of Meta's later requests.
        KSR.tm.t_on_branch("ksr_branch_freeswitch")
        KSR.info(call_line("invite", "uic", str(KSR.kx.get_callid()),
                           wacid=KSR.hdr.get("X-WA-Meta-Wacid"),
                           business_number=target.business_number, source=self.request.source,
                           auth=auth, set=destination.freeswitch_set,
                           context=destination.context))
        self.note_meta_side(fields)
        KSR.tm.t_on_failure("ksr_failure_freeswitch")
        KSR.tm.t_on_reply("ksr_onreply_freeswitch")
        self.relay()

    # ---- a business node lost mid-call (kemi/media_loss.py) ------------------------------

    def note_meta_side(self, fields: list[tuple[str, str]]) -> None:
        """What of Meta's INVITE a BYE toward Meta needs, kept with the transaction for the
        200's reply route, in one AVP (kemi/media_loss.py, meta_side_value): each AVP set is
        an allocation in Kamailio's shared memory and each read a KSR call."""
        source = self.request.source  # $si, read once when the route began
        proto = str(KSR.pv.get("$pr") or "tls")
        host = f"[{source}]" if ":" in source else source
        local = str(KSR.pv.get("$Ri") or "")
        local = f"[{local}]" if ":" in local else local
        KSR.pv.sets(META_SIDE_AVP, meta_side_value(
            contact_uri(str(KSR.hdr.get("Contact") or "")),
            ", ".join(value for name, value in fields if name.lower() == "record-route"),
            f"sip:{host}:{KSR.pv.get('$sp')};transport={proto}",
            f"{proto}:{local}:{KSR.pv.get('$Rp')}"))

    def remember_answered_call(self) -> None:
        cseq = str(KSR.hdr.get("CSeq") or "")
        if not cseq.upper().endswith("INVITE"):
            return
        call_id = str(KSR.kx.get_callid())
        contact, routes, source, sock = meta_side(KSR.pv.get(META_SIDE_AVP))
        record = answered_call(
            call_id, contact, routes, str(KSR.hdr.get("From") or ""),
            str(KSR.hdr.get("To") or ""), cseq, source, sock, time.time())
        if record is None:
            KSR.warn(f"wa-edge: UIC call-id={call_id[:100]} answered but not recorded for a "
                     "node loss (a field a BYE toward Meta needs is missing)\n")
            return
        KSR.htable.sht_sets(CALLS_TABLE, record_key(
            f"{KSR.pv.get('$si')}:{KSR.pv.get('$sp')}", call_id), record.encode())

    def forget_call(self, node: str) -> None:
        """A BYE: the call's node-loss record removed. With [cluster] the record is on the edge
        that relayed the 200 only (kemi/media_loss.py: wa_calls is not replicated); a BYE of a
        user-initiated call that finds none here tells the peers (one KDMQ), so the edge holding
        it sends no BYE for a call already ended. A business-initiated call has no record."""
        try:
            key = record_key(node, str(KSR.kx.get_callid()))
        except ValueError:
            return
        if not self.settings.cluster.enabled \
                or isinstance(KSR.htable.sht_get(CALLS_TABLE, key), str):
            KSR.htable.sht_rm(CALLS_TABLE, key)
        elif token_direction(route_token(str(KSR.hdr.get("Route") or "")) or "") == "u":
            KSR.dmq.bcast_message(FORGET_PEER, key, "text/plain")

    def forget_for_peer(self) -> None:
        """A peer edge's FORGET_PEER message: the record it names removed, if this edge has it."""
        key = forget_key(str(KSR.pv.get("$rb") or ""))
        if key is None:
            self._reply(400, "Bad Request - not a call record key")
            return
        KSR.htable.sht_rm(CALLS_TABLE, key)
        self._reply(200, "OK")

    def node_lost(self, node_uri: str) -> None:
        """BYE (with a Reason) toward Meta for each call of `node_uri` this edge relayed the 200
        of (its own table's records: each edge ends its own calls), and those records removed.
        Records are collected first (the iterator holds the table's lock), at most
        MAX_LOST_CALLS per event."""
        prefix = node_key(node_uri) + "|"
        found: list[tuple[str, str]] = []
        KSR.htable.sht_iterator_start("wa_lost", CALLS_TABLE)
        try:
            while len(found) < MAX_LOST_CALLS and KSR.htable.sht_iterator_next("wa_lost") > 0:
                key = str(KSR.pv.get("$shtitkey(wa_lost)") or "")
                if key.startswith(prefix):
                    found.append((key, str(KSR.pv.get("$shtitval(wa_lost)") or "")))
        finally:
            KSR.htable.sht_iterator_end("wa_lost")
        sent, kept, now = 0, 0, time.time()
        for key, value in found:
            record = decode(value)
            if record is not None and not lost_with_node(record, now,
                                                         self.settings.probe_timeout_s):
                kept += 1  # answered after the failed probe was sent: the node outlived it
                continue
            if record is not None:
                bye = bye_toward_meta(record)
                if KSR.tm.t_uac_send("BYE", bye.ruri, bye.next_hop, bye.socket, bye.headers,
                                     "") >= 0:
                    sent += 1
                KSR.notice(f"wa-edge: media node {node_uri[:100]} lost: BYE to Meta "
                           f"call-id={record.call_id[:100]} reason=business_media_node_lost\n")
            KSR.htable.sht_rm(CALLS_TABLE, key)
        KSR.notice(f"wa-edge: media node {node_uri[:100]} down: {len(found)} call(s) on it, "
                   f"{sent} BYE(s) to Meta from this edge, {kept} kept up (answered after the "
                   "failed probe was sent)\n")

    def business_initiated_call(self) -> None:
        """An INVITE from FreeSWITCH for a WhatsApp user: make it what Meta accepts, send it."""
        bic = self.settings.bic
        if not bic.enabled:
            self._refuse(403, "Forbidden - business-initiated calls are not enabled on this edge",
                         "bic_disabled")
            return
        original_from = str(KSR.kx.get_furi())
        try:
            target = parse_bic_request_uri(str(KSR.kx.get_ruri()), bool(KSR.is_myself_ruri()),
                                           self.settings.meta_host_name,
                                           self.settings.accepted_domains)
            caller = bic_caller(str(KSR.kx.get_fuser()), str(KSR.kx.get_fhost()),
                                bool(KSR.is_myself_furi()), self.settings)
        except BicRefusal as refusal:
            self._refuse(refusal.status, refusal.reason, refusal.code)
            return
        ha1 = KSR.htable.sht_get(CREDS_TABLE, f"{caller.digits}:ha1_meta")
        if not isinstance(ha1, str) or not ha1:
            self._refuse(503, f"Service Unavailable - no SIP password for "
                         f"{caller.business_number}", "no_meta_credentials")
            return
        codecs = self.media.bic_codecs(caller.digits)
        if codecs is not None and not codecs.voice:
            self._refuse(488, "Not Acceptable Here - no codec WhatsApp takes (Opus)",
                         "no_common_codec")
            return
        if codecs is not None and codecs.dropped:
            KSR.info(f"wa-edge: BIC call-id={KSR.kx.get_callid()} offer to Meta without "
                     f"{', '.join(codecs.dropped)[:300]}\n")
        try:
            # Meta's in-dialog requests go to FreeSWITCH's Contact: the route is signed for it.
            token = self.route_mac("b", str(KSR.pv.get("$ft") or ""),
                                   contact_uri(str(KSR.hdr.get("Contact") or "")))
        except ValueError:
            KSR.notice(f"wa-edge: BIC call-id={KSR.kx.get_callid()} refused: its Contact is "
                       "not a SIP URI\n")
            self._reply(400, "Bad Request - Contact is not a SIP URI")
            return
        if not self.media.bic_offer(caller.digits):
            self._refuse_media("bic")
            return
        # No dialog state here either: Meta's in-dialog requests are trusted by the route's
        # MAC, and the CSeq step the edge's answer to Meta's 407 brings (answer_meta_challenge)
        # is written, signed, into the route FreeSWITCH learns (meta_reply).
        KSR.pv.sets("$avp(wa_bic_token)", token)
        if caller.uri != original_from:
            KSR.uac.uac_replace_from_uri(caller.uri)
        KSR.uac.uac_replace_to_uri(target.to_uri)
        KSR.seturi(target.request_uri)
        self.record_route(toward_meta=True, token=token)
        KSR.pv.sets("$avp(wa_bic_digits)", caller.digits)
        KSR.pv.sets("$avp(wa_bic_ruri)", target.request_uri)
        self._toward_meta()
        changes = "; ".join(caller.changes) or "none"
        KSR.info(call_line("invite", "bic", str(KSR.kx.get_callid()),
                           business_number=caller.business_number, user=target.user,
                           via=bic.destination_uri, changes=changes))
        KSR.tm.t_on_reply("ksr_onreply_meta")
        KSR.tm.t_on_failure("ksr_failure_meta")
        if KSR.tm.t_relay() < 0:
            # Connect refused or no route: t_relay made the transaction but sent nothing, so the
            # edge answers in it with the diagnosis instead of sl's bare "500 server error".
            self._refuse_in_failure(503, "Service Unavailable - cannot reach Meta's SIP server",
                                    "meta_unreachable")

    def record_route(self, toward_meta: bool, token: str) -> None:
        """Double Record-Route, so that ACK and BYE come back through the edge on both sides,
        each entry with the route's MAC `token` (rr puts a parameter added first in both).

        With Kamailio's own TLS socket facing Meta, rr builds both from the sockets. With
        HAProxy in front, the request from Meta came in on a loopback TCP socket, so the edge
        names the public TLS address itself (with the MAC, dialog id and From tag rr appends
        to both); the first address is the one nearest the next hop, as rr orders its own.
        """
        KSR.rr.add_rr_param(f";{MAC_PARAM}={token}")
        front = self.settings.front
        if not front.haproxy:
            KSR.rr.record_route()
            return
        if toward_meta:
            KSR.rr.record_route_preset(front.public_route, front.internal_route)
        else:
            KSR.rr.record_route_preset(front.internal_route, front.public_route)

    def _toward_meta(self) -> None:
        """Next hop Meta's server over TLS, with SNI = Meta's host name."""
        KSR.setdsturi(self.settings.bic.destination_uri)
        KSR.pv.sets("$xavp(tls=>server_name)", self.settings.meta_host_name)

    def meta_reply(self) -> None:
        if not KSR.is_TLS():
            return  # tm's own 408 on a timeout: the failure route names it
        status = int(KSR.kx.get_status())
        if status > 100 and status not in (401, 407):  # what tm relays to FreeSWITCH
            self.business_numbering(status)
        if status in (401, 407):
            self.note_meta_challenges(status)
            self.check_meta_certificate(status)
        elif status >= 300:
            reason = str(KSR.pv.get("$rr") or "")
            diagnosis = diagnose_meta_answer(status, reason)
            KSR.hdr.append(diagnosis.header_line())
            self._log_diagnosis(f"Meta answered {status} {reason}", diagnosis)
            self._setup_outcome("bic", diagnosis.code, status)
        elif status >= 200:
            self._setup_outcome("bic", "answered", status)
        if 180 <= status < 300 and not self.media.bic_answer():
            KSR.err(f"wa-edge: BIC call-id={KSR.kx.get_callid()} rtpengine did not take Meta's "
                    f"{status} SDP: FreeSWITCH gets Meta's own SDP (no media likely)\n")

    def business_numbering(self, status: int) -> None:
        """Meta's answer to the INVITE the edge authenticated carries Meta's CSeq (one above
        FreeSWITCH's): FreeSWITCH gets its own number back, and a dialog-creating answer
        (101-299) gets the step, signed, in the edge's Record-Route entries, so that the route
        FreeSWITCH learns tells any edge how to renumber its later requests
        (business_cseq_step). Meta never sees the step: its route is the INVITE's."""
        route = KSR.pv.get("$avp(wa_cseq_route)")
        if not isinstance(route, str) or not route:
            return  # not authenticated (or Meta answered the first INVITE): nothing shifted
        self._set_cseq(int(str(KSR.pv.get("$avp(wa_fs_cseq)"))))
        token = str(KSR.pv.get("$avp(wa_bic_token)") or "")
        if 100 < status < 300 and token:
            # base64url and '.' only: the token is literal once its dots are bracketed
            pattern = token.replace(".", "[.]")
            KSR.textops.subst_hf("Record-Route", f"/;{MAC_PARAM}={pattern}/;{MAC_PARAM}={token}"
                                 f";{CSEQ_PARAM}={route}/g", "a")

    def note_meta_challenges(self, status: int) -> None:
        """Keep Meta's challenges (e.g. SHA-256 then MD5) for the failure route, which answers
        one of them (kemi/digest_answer.py), and their algorithms for its log line."""
        name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        values = []
        for index in range(MAX_CHALLENGES):
            value = KSR.pv.get(f"$(hdr({name})[{index}])")
            if value is None:
                break
            values.append(str(value))
        KSR.pv.sets("$avp(wa_challenges)",
                    ",".join(challenge_algorithm(v) for v in values) or "none")
        # One AVP, one challenge a line: a header value holds no line break once parsed.
        KSR.pv.sets("$avp(wa_challenge_values)", "\n".join(values))

    def check_meta_certificate(self, status: int) -> None:
        """Mark the transaction when the peer that challenged us holds a certificate for Meta.

        The failure route answers the challenge only with this mark: the digest response goes
        only to a peer whose chain verified and whose names cover meta_host_name.
        """
        expected = self.settings.meta_host_name
        verified = KSR.pv.get("$tls_peer_verified")
        pem = KSR.pv.get("$tls_peer_raw_cert")
        covered, names = peer_certificate_names(str(pem) if pem else "", expected)
        if str(verified) == "1" and covered:  # pv gives the flag as text or int
            KSR.pv.seti("$avp(wa_peer_ok)", 1)
            return
        KSR.pv.seti("$avp(wa_peer_ok)", 0)
        KSR.warn(f"wa-edge: {status} from a peer whose certificate does not cover {expected} "
                 f"(verified={verified!r}, names={names or 'none'}): no digest will be sent\n")

    def failure_meta(self) -> None:
        if KSR.tm.t_is_canceled() > 0:
            self.media.end()
            return  # FreeSWITCH cancelled: Meta's 487 goes back as it is
        status = int(KSR.tm.t_get_status_code())
        if status in (401, 407):
            self.answer_meta_challenge()  # the re-sent INVITE keeps rtpengine's SDP (tm's copy)
            return
        if KSR.tm.t_branch_timeout() > 0 and KSR.tm.t_branch_replied() < 0:
            self._refuse_in_failure(503, "Service Unavailable - no answer from Meta's SIP server",
                                    "meta_unreachable")
            return
        self.media.end()
        if status == 503:
            # A proxy must not pass a 503 on (RFC 3261 16.7; tm would send a bare 500): the
            # edge answers 500 itself and keeps Meta's words and the diagnosis.
            reason = str(KSR.pv.get("$T_reply_reason") or "Service Unavailable")
            diagnosis = diagnose_meta_answer(503, reason)
            self._log_diagnosis(f"Meta answered 503 {reason}", diagnosis)
            KSR.hdr.append_to_reply(diagnosis.header_line())
            KSR.tm.t_reply(500, f"Server Internal Error - Meta answered 503 {reason}")

    def answer_meta_challenge(self) -> None:
        """Answer Meta's 407 once, with the strongest challenge the edge holds an HA1 for
        (SHA-256, else MD5), only to a checked peer; the digest uri is the request URI, which
        is also the To URI (kemi/bic.py).

        The answer is built here (kemi/digest_answer.py) on every Kamailio: no released uac
        answers SHA-256, and 5.6/6.0's uac fails on Meta's 407 (SHA-256 first) altogether.
        """
        if KSR.pv.get("$avp(wa_auth_sent)") == 1:
            self._refuse_in_failure(403, "Forbidden - Meta refused the SIP password "
                                    "(challenged again)", "meta_auth_rejected")
            return
        if KSR.pv.get("$avp(wa_peer_ok)") != 1:
            self._refuse_in_failure(502, "Bad Gateway - peer certificate does not name "
                                    f"{self.settings.meta_host_name}, digest withheld",
                                    "meta_certificate_mismatch")
            return
        digits = str(KSR.pv.get("$avp(wa_bic_digits)") or "")
        ha1s = {algorithm: ha1 for algorithm, key in (("MD5", "ha1_meta"),
                                                       ("SHA-256", "ha1_meta_sha256"))
                if isinstance(ha1 := KSR.htable.sht_get(CREDS_TABLE, f"{digits}:{key}"), str)
                and ha1}
        if not digits or not ha1s:
            self._refuse_in_failure(503, "Service Unavailable - no SIP password for "
                                    f"+{digits}", "no_meta_credentials")
            return
        offered = str(KSR.pv.get("$avp(wa_challenges)") or "none")
        values = str(KSR.pv.get("$avp(wa_challenge_values)") or "").split("\n")
        challenge = choose([c for v in values if (c := parse_challenge(v)) is not None], ha1s)
        if challenge is None:
            self._refuse_in_failure(502, f"Bad Gateway - cannot answer Meta's challenge (offered "
                                    f"{offered}; this edge answers "
                                    f"{' or '.join(sorted(ha1s, reverse=True))} with qop=auth)",
                                    "meta_auth_failed")
            return
        ruri = str(KSR.pv.get("$avp(wa_bic_ruri)"))
        KSR.seturi(ruri)
        value = authorization(challenge, digits, ha1s[challenge.algorithm], "INVITE", ruri)
        KSR.hdr.append(f"Proxy-Authorization: {value}\r\n")
        self._next_cseq()
        KSR.info(f"wa-edge: BIC call-id={KSR.kx.get_callid()} Meta offered {offered}: "
                 f"answered with {challenge.algorithm}\n")
        KSR.pv.seti("$avp(wa_auth_sent)", 1)
        self._toward_meta()
        KSR.tm.t_on_reply("ksr_onreply_meta")
        KSR.tm.t_on_failure("ksr_failure_meta")
        if KSR.tm.t_relay() < 0:
            self._refuse_in_failure(503, "Service Unavailable - cannot reach Meta",
                                    "meta_unreachable")

    def _next_cseq(self) -> None:
        """The authenticated INVITE takes the next CSeq (RFC 3261 8.1.3.5), so Meta's dialog
        runs one above FreeSWITCH's numbers for the whole call.

        Written into the branch itself (a lump on the CSeq), so tm's own CANCEL and ACK of a
        negative answer, built from the branch as sent (tm's reparse_invite), carry it too.
        Kamailio's way, uac_auth with the dialog module's track_cseq_updates, keeps the step
        in one edge's memory and re-parses every message the edge sends and receives (a
        quarter of the edge's CPU per call on 6.1.4); here the step is kept in the route
        FreeSWITCH learns (business_numbering), signed, where any edge reads it back, and
        Meta's answers are brought back to FreeSWITCH's number as they pass.
        """
        cseq = int(str(KSR.pv.get("$cs")))
        self._set_cseq(cseq + 1)
        KSR.pv.sets("$avp(wa_fs_cseq)", str(cseq))
        KSR.pv.sets("$avp(wa_cseq_route)", sign_cseq_step(
            self.key_ring(), str(KSR.kx.get_callid()), str(KSR.pv.get("$ft") or ""), 1))

    def _shift_rack(self, step: int) -> None:
        """FreeSWITCH's PRACK acknowledges Meta's reliable provisional (RFC 3262) by the
        INVITE's CSeq as FreeSWITCH knows it; Meta matches RAck against its own, `step` above.
        A RAck that is not `RSeq CSeq Method` is left as it came (Meta answers it 481)."""
        rack = str(KSR.hdr.get("RAck") or "").split()
        if len(rack) == 3 and rack[0].isdigit() and rack[1].isdigit() and rack[2].isalpha():
            KSR.textops.subst_hf("RAck", f"/^.*$/{rack[0]} {int(rack[1]) + step} {rack[2]}/",
                                 "f")

    def _set_cseq(self, number: int) -> None:
        """The CSeq number of the message in hand becomes `number` (the method stays)."""
        KSR.textops.subst_hf("CSeq", f"/^[0-9]+/{number}/", "f")

    def authenticate(self, target: UicTarget, fields: list[tuple[str, str]]) -> str | None:
        """'digest' or 'none' when the call may go on; None when a reply was sent.

        The edge checks what Kamailio's auth module does not (kemi/digest_credentials.py):
        one Digest answer with qop=auth whose uri is the request URI; auth checks the
        response against the HA1 and the nonce (nonce_count refuses a replayed nc).
        """
        if self.settings.auth_mode == "none":
            return "none"
        source = self.request.source
        failures = KSR.htable.sht_get(AUTHFAIL_TABLE, source)
        if isinstance(failures, int) and failures >= self.settings.failure_limit:
            self._count_drop(Drop.LOCKED_OUT)
            self._reply(403, "Forbidden - too many failed authentications")
            self._auth_refused("locked_out", 403)
            return None
        ha1 = KSR.htable.sht_get(CREDS_TABLE, f"{target.digits}:ha1")
        if not isinstance(ha1, str) or not ha1:
            KSR.err(f"wa-edge: no SIP credentials for {target.business_number}: "
                    "run 'provision sync'\n")
            self._reply(503, "Service Unavailable - credentials not provisioned")
            self._auth_refused("no_credentials", 503)
            return None
        try:
            credentials = credentials_for(fields, self._credentials_header(),
                                          self.settings.sip_domain)
        except CredentialsProblem as problem:
            self._count_drop(Drop.BAD_CREDENTIALS)
            self._reply(400, f"Bad Request - {problem}")
            self._auth_refused("bad_credentials", 400)
            return None
        if credentials is None:
            self._challenge(stale=False)
            return None
        if not same_resource(credentials.uri, self.request.request_uri):
            self._count_drop(Drop.BAD_CREDENTIALS)
            self._reply(400, "Bad Request - digest uri is not the request URI")
            self._auth_refused("bad_credentials", 400)
            return None
        user = credentials.username
        result = self._check_digest(ha1)
        if result == 1 and user != target.digits:
            result = -2
        action = auth_action(result)
        if action is AuthAction.ACCEPT and not self.nonce_count_fresh(credentials):
            action = AuthAction.CHALLENGE_STALE  # as auth's own nonce_count answers a replay
        if action is AuthAction.ACCEPT:
            KSR.auth.consume_credentials()
            self.metrics.digest("accepted")
            return "digest"
        if action is AuthAction.REFUSE:
            self._reply(400, "Bad Request - malformed credentials")
            self._auth_refused("bad_credentials", 400)
            return None
        if action is AuthAction.CHALLENGE_AFTER_FAILURE:
            self.metrics.digest("failed")
            if KSR.htable.sht_inc(AUTHFAIL_TABLE, source) < 0 or failures is None:
                # sht_inc does not create a missing item: the first failure sets it.
                KSR.htable.sht_seti(AUTHFAIL_TABLE, source, (failures or 0) + 1)
            KSR.notice(f"wa-edge: wrong digest for {target.business_number} "
                       f"(user {user}) from {source}\n")
        self._challenge(stale=action is AuthAction.CHALLENGE_STALE)
        return None

    def nonce_count_fresh(self, credentials: DigestCredentials) -> bool:
        """[cluster]: the nc is above any accepted with this nonce on any edge (the replicated
        nonce table), and is recorded; a single edge leaves it to auth's nonce_count. Peers
        learn it over DMQ within milliseconds: a replay sent to two edges at the same instant
        is the one this does not catch."""
        table = self.settings.cluster.nonce_table
        if not self.settings.cluster.enabled or not table:
            return True
        key = credentials.replay_key
        KSR.htable.sht_lock(table, key)
        try:
            seen = KSR.htable.sht_get(table, key)
            if isinstance(seen, int) and credentials.nc <= seen:
                return False
            KSR.htable.sht_seti(table, key, credentials.nc)
            return True
        finally:
            KSR.htable.sht_unlock(table, key)

    def relay(self) -> None:
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def screen_headers(self, fields: list[tuple[str, str]]) -> None:
        result = screen_inbound_headers(fields, self.settings.payload_max_length,
                                        self.settings.meta_header_max_length)
        for name in result.remove:
            KSR.textops.remove_hf(name)
        for reason in result.reasons:
            KSR.notice(f"wa-edge: removed header {reason}\n")

    def failover_freeswitch(self) -> None:
        if KSR.tm.t_is_canceled() > 0:
            self.media.end()
            self._setup_outcome("uic", "cancelled", 487)
            return
        if (KSR.tm.t_check_status("5[0-9][0-9]|408") > 0 or KSR.tm.t_branch_timeout() > 0) \
                and KSR.dispatcher.ds_next_dst() > 0:
            KSR.notice(f"wa-edge: FreeSWITCH node failed, trying {KSR.kx.get_duri()}\n")
            KSR.tm.t_on_failure("ksr_failure_freeswitch")
            KSR.tm.t_on_branch("ksr_branch_freeswitch")  # its route signed for the new node
            self.relay()
            return
        self.media.end()
        self._setup_outcome("uic", "freeswitch_refused", int(KSR.tm.t_get_status_code()))

    # ---- small helpers over KSR ---------------------------------------------------------

    def _credentials_header(self) -> str:
        return "Authorization" if self.settings.challenge_code == 401 else "Proxy-Authorization"

    def _check_digest(self, ha1: str) -> int:
        """Check the credentials header of the configured challenge against the HA1; no check
        of the From user (Meta's From is the WhatsApp caller)."""
        realm = self.settings.sip_domain
        if not self.settings.www_challenge:
            # 5.6: one call for both headers (Proxy-Authorization for an INVITE); checks 0 =
            # no From-user check.
            return int(KSR.auth.pv_auth_check(realm, ha1, HA1_PASSWORD, 0))
        if self.settings.challenge_code == 401:
            return int(KSR.auth.pv_www_authenticate(realm, ha1, HA1_PASSWORD))
        return int(KSR.auth.pv_proxy_authenticate(realm, ha1, HA1_PASSWORD))

    def _challenge(self, stale: bool) -> None:
        """401 (WWW-Authenticate) or 407 (Proxy-Authenticate) with qop=auth, per the site config."""
        flags = QOP_AUTH | (STALE if stale else 0)
        self.metrics.digest("stale" if stale else "challenged")
        if not self.settings.www_challenge:
            KSR.auth.auth_challenge(self.settings.sip_domain, flags)  # 5.6: 407 for an INVITE
        elif self.settings.challenge_code == 401:
            KSR.auth.www_challenge(self.settings.sip_domain, flags)
        else:
            KSR.auth.proxy_challenge(self.settings.sip_domain, flags)

    def _count_drop(self, drop: Drop) -> None:
        """One more `drop` in its statistic; a log line only when the summary says so."""
        KSR.statistics.update_stat(drop.statistic, 1)
        line = self.drops.record(drop, self.request.source)
        if line is not None:
            KSR.notice(f"wa-edge: {line}\n")

    def _refuse_bad_bytes(self) -> None:
        """400 to a request that is not valid UTF-8 (never to an ACK: nothing answers an ACK)."""
        self._count_drop(Drop.BAD_BYTES)
        if not KSR.is_ACK():
            self._reply(400, "Bad Request - invalid UTF-8 in the request")

    def _refuse(self, status: int, reason: str, code: str) -> None:
        """A stateless refusal with its diagnosis header, logged."""
        diagnosis = edge_diagnosis(code)
        self._log_diagnosis(f"refused {self.request.method} with {status} {reason}", diagnosis)
        self._reply(status, reason, diagnosis.header_line())
        self._setup_outcome("bic", code, status)  # only INVITEs from FreeSWITCH come here

    def _refuse_media(self, direction: str) -> None:
        """rtpengine did not take the offer: refuse the call (503) rather than relay it with
        an SDP nobody will answer media on."""
        diagnosis = edge_diagnosis("rtpengine_unreachable")
        self._log_diagnosis(f"{direction} call-id={KSR.kx.get_callid()} refused with 503", diagnosis)
        self._reply(503, "Service Unavailable - media relay unavailable", diagnosis.header_line())
        self._setup_outcome(direction, "rtpengine_unreachable", 503)

    def _refuse_stateful(self, status: int, reason: str, code: str, headers: str = "") -> None:
        """A refusal inside a dialog: stateful, so tm absorbs the ACK and retransmissions."""
        diagnosis = edge_diagnosis(code)
        self._log_diagnosis(f"refused in-dialog {self.request.method} with {status}", diagnosis)
        self.metrics.in_dialog_refusal(code)
        if KSR.tm.t_newtran() < 0:
            self._reply(status, reason, headers + diagnosis.header_line())
            return
        KSR.hdr.append_to_reply(headers + diagnosis.header_line())
        KSR.tm.t_reply(status, reason)

    def _refuse_in_failure(self, status: int, reason: str, code: str) -> None:
        """Answer FreeSWITCH in the BIC transaction with the edge's own reply and diagnosis
        (failure route, or the request route after t_relay failed to send)."""
        diagnosis = edge_diagnosis(code)
        self.media.end()
        self._log_diagnosis(f"BIC call-id={KSR.kx.get_callid()} ends with {status} {reason}",
                            diagnosis)
        KSR.hdr.append_to_reply(diagnosis.header_line())
        KSR.tm.t_reply(status, reason)
        self._setup_outcome("bic", code, status)

    def _setup_outcome(self, direction: str, outcome: str, status: int) -> None:
        """How an INVITE's setup ended: counted (metrics) and logged (call line), once per
        transaction (a flag on it: a retransmitted 2xx or a later failure route skips)."""
        if KSR.isflagset(OUTCOME_FLAG):
            return
        KSR.setflag(OUTCOME_FLAG)
        self.metrics.call(direction, outcome)
        KSR.info(call_line("final", direction, str(KSR.kx.get_callid()), status=status,
                           outcome=outcome))

    def _auth_refused(self, result: str, status: int) -> None:
        """A Meta INVITE refused at the digest step: a digest result and the call's outcome."""
        self.metrics.digest(result)
        self._setup_outcome("uic", result, status)

    def _log_diagnosis(self, what: str, diagnosis: Diagnosis) -> None:
        KSR.notice(f"wa-edge: {what}: diagnosis {diagnosis.header_value()}\n")

    def _reply(self, status: int, reason: str, headers: str = "") -> None:
        try:
            if headers:
                KSR.hdr.append_to_reply(headers)
            KSR.sl.send_reply(status, reason)
        except Exception:
            self._log_exception("reply")

    def _log_exception(self, where: str) -> None:
        if isinstance(sys.exc_info()[1], UnicodeDecodeError):
            # Invalid UTF-8 in a reply or a value Kamailio made: no traceback, a counted drop.
            self._count_drop(Drop.BAD_BYTES)
            return
        for line in traceback.format_exc().splitlines():
            KSR.err(f"wa-edge: {where}: {line}\n")


MAX_LOST_CALLS = 10000  # BYEs one dst-down event sends at most (the rest expire)


def create_edge(settings_path: str) -> WhatsAppEdge:
    """Called by the rendered entry script's mod_init(); the key file must be good (KeyFileError
    stops Kamailio's start: an edge that cannot sign routes would break every call)."""
    settings = load_settings(Path(settings_path))
    return WhatsAppEdge(settings, KeyWatch(Path(settings.in_dialog_key_file)))

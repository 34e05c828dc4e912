"""The KEMI adapter: Kamailio calls these methods for each SIP message.

The class follows the shape of Kamailio's own KEMI example: `ksr_request_route` reads like a
table of contents and each step is a small method. Decisions live in the plain modules beside
this one; this file only moves values between them and KSR. Every entry point returns an int,
and no exception ever leaves it: an exception left pending breaks the next KSR call of the
worker, and a request without a reply is retransmitted by Meta for 32 seconds.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import KSR

from kemi.decisions import (
    AuthAction,
    auth_action,
    choose_destination,
    in_dialog_target_allowed,
    out_of_dialog_method,
    source_allowed,
)
from kemi.request_uri import RequestUriError, UicTarget, parse_uic_request_uri, split_sip_uri
from kemi.settings import EdgeSettings, load_settings
from kemi.wa_headers import edge_headers, header_fields, screen_inbound_headers

CREDS_TABLE = "wa_creds"
AUTHFAIL_TABLE = "wa_authfail"
DONE = 1  # KEMI return value: the route ran to its end, Kamailio keeps the message state.
QOP_AUTH = 1
STALE = 16
HA1_PASSWORD = 1


class WhatsAppEdge:
    """Kamailio's view of the edge: one instance per worker process (workers are forked)."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings

    def child_init(self, rank: int) -> int:
        return 0

    # ---- entry points -------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        try:
            self.route_request()
        except Exception:
            self._log_exception("request route")
            self._reply(500, "Server Internal Error")
        return DONE

    def ksr_failure_freeswitch(self, msg: object) -> int:
        """A FreeSWITCH node failed the INVITE: try the next one on 5xx or timeout."""
        try:
            self.failover_freeswitch()
        except Exception:
            self._log_exception("failure route")
        return DONE

    # ---- request route, step by step ----------------------------------------------------

    def route_request(self) -> None:
        if not self.reqinit():
            return
        if KSR.is_CANCEL():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        if not KSR.is_ACK():
            if KSR.tmx.t_precheck_trans() > 0:
                KSR.tm.t_check_trans()
                return
            if KSR.tm.t_check_trans() == 0:
                return
        if KSR.siputils.has_totag() > 0:
            self.within_dialog()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        method = str(KSR.kx.get_method())
        reply = out_of_dialog_method(method)
        if reply is not None:
            self._reply(reply.status, reply.reason, reply.headers)
            return
        if not self.from_meta():
            self._reply(403, "Forbidden - business-initiated calls are not enabled on this edge")
            return
        self.user_initiated_call()

    def from_meta(self) -> bool:
        """Meta only ever reaches the edge over TLS; the internal side is plain UDP/TCP."""
        return bool(KSR.is_TLS())

    def reqinit(self) -> bool:
        """Hop count, sanity, and who may talk to the edge at all."""
        if KSR.maxfwd.process_maxfwd(10) < 0:
            self._reply(483, "Too Many Hops")
            return False
        if KSR.sanity.sanity_check_defaults() < 0:
            KSR.notice(f"wa-edge: malformed request from {KSR.kx.get_srcip()}\n")
            return False
        source = str(KSR.kx.get_srcip())
        if self.from_meta():
            if not source_allowed(source, self.settings.allowed_sources):
                KSR.notice(f"wa-edge: dropped request from {source}: not in allowed_sources\n")
                KSR.set_drop()
                return False
            if self.settings.pike and not self.settings.allowed_sources \
                    and KSR.pike.pike_check_req() < 0:
                KSR.notice(f"wa-edge: pike blocked {source}: request flood\n")
                KSR.set_drop()
                return False
        elif KSR.dispatcher.ds_is_from_lists() < 0:
            KSR.notice(f"wa-edge: refused {source} on the internal side: not a FreeSWITCH node\n")
            self._reply(403, "Forbidden")
            return False
        return True

    def within_dialog(self) -> None:
        if KSR.rr.loose_route() > 0:
            next_hop = split_sip_uri(str(KSR.pv.get("$nh(u)")))[2]
            if not in_dialog_target_allowed(self.from_meta(), next_hop,
                                            self.settings.freeswitch_hosts):
                KSR.notice(f"wa-edge: in-dialog {KSR.kx.get_method()} from Meta toward "
                           f"{next_hop} refused: not a FreeSWITCH node\n")
                self._reply(403, "Forbidden")
                return
            if KSR.is_BYE() and self.from_meta():
                duration = KSR.hdr.get("X-WA-Meta-Call-Duration")
                KSR.info(f"wa-edge: BYE from Meta call-id={KSR.kx.get_callid()} "
                         f"duration={duration}\n")
            self.relay()
            return
        if KSR.is_ACK():
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        self._reply(404, "Not Here")

    def user_initiated_call(self) -> None:
        """An INVITE from Meta: who is called, is it really Meta, where does it go."""
        try:
            target = parse_uic_request_uri(str(KSR.kx.get_ruri()), self.settings.accepted_domains)
        except RequestUriError as error:
            self._reply(error.status, error.reason)
            return
        if target.digits not in self.settings.numbers:
            self._reply(404, "Not Found - business number not served here")
            return
        auth = self.authenticate(target)
        if auth is None:
            return
        self.screen_headers()
        destination = choose_destination(self.settings, target.business_number,
                                         target.user_params)
        for line in edge_headers(target.business_number, target.user_params,
                                 destination.context, auth):
            KSR.hdr.append(line)
        KSR.seturi(f"sip:{target.business_number}@{self.settings.sip_domain}")
        KSR.rr.record_route()
        if KSR.dispatcher.ds_select_dst(destination.freeswitch_set, destination.algorithm) < 0:
            KSR.err(f"wa-edge: no FreeSWITCH node in set {destination.freeswitch_set}\n")
            self._reply(503, "Service Unavailable - no FreeSWITCH node available")
            return
        KSR.info(f"wa-edge: UIC {target.business_number} wacid="
                 f"{KSR.hdr.get('X-WA-Meta-Wacid')} from {KSR.kx.get_srcip()} auth={auth} "
                 f"-> set {destination.freeswitch_set} context {destination.context}\n")
        KSR.tm.t_on_failure("ksr_failure_freeswitch")
        self.relay()

    def authenticate(self, target: UicTarget) -> str | None:
        """'digest' or 'none' when the call may go on; None when a reply was sent."""
        if self.settings.auth_mode == "none":
            return "none"
        source = str(KSR.kx.get_srcip())
        failures = KSR.htable.sht_get(AUTHFAIL_TABLE, source)
        if isinstance(failures, int) and failures >= self.settings.failure_limit:
            KSR.notice(f"wa-edge: {source} locked out after {failures} failed digests\n")
            self._reply(403, "Forbidden - too many failed authentications")
            return None
        ha1 = KSR.htable.sht_get(CREDS_TABLE, f"{target.digits}:ha1")
        if not isinstance(ha1, str) or not ha1:
            KSR.err(f"wa-edge: no SIP credentials for {target.business_number}: "
                    "run 'provision sync'\n")
            self._reply(503, "Service Unavailable - credentials not provisioned")
            return None
        user = KSR.kx.get_au()
        result = self._check_digest(ha1)
        if result == 1 and user != target.digits:
            result = -2
        action = auth_action(result)
        if action is AuthAction.ACCEPT:
            KSR.auth.consume_credentials()
            return "digest"
        if action is AuthAction.REFUSE:
            self._reply(400, "Bad Request - malformed credentials")
            return None
        if action is AuthAction.CHALLENGE_AFTER_FAILURE:
            if KSR.htable.sht_inc(AUTHFAIL_TABLE, source) < 0 or failures is None:
                # sht_inc does not create a missing item: the first failure sets it.
                KSR.htable.sht_seti(AUTHFAIL_TABLE, source, (failures or 0) + 1)
            KSR.notice(f"wa-edge: wrong digest for {target.business_number} "
                       f"(user {user}) from {source}\n")
        self._challenge(stale=action is AuthAction.CHALLENGE_STALE)
        return None

    def relay(self) -> None:
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()

    def screen_headers(self) -> None:
        result = screen_inbound_headers(header_fields(str(KSR.kx.get_msgbuf())),
                                        self.settings.payload_max_length,
                                        self.settings.meta_header_max_length)
        for name in result.remove:
            KSR.textops.remove_hf(name)
        for reason in result.reasons:
            KSR.notice(f"wa-edge: removed header {reason}\n")

    def failover_freeswitch(self) -> None:
        if KSR.tm.t_is_canceled() > 0:
            return
        if KSR.tm.t_check_status("5[0-9][0-9]|408") < 0 and KSR.tm.t_branch_timeout() < 0:
            return
        if KSR.dispatcher.ds_next_dst() > 0:
            KSR.notice(f"wa-edge: FreeSWITCH node failed, trying {KSR.kx.get_duri()}\n")
            KSR.tm.t_on_failure("ksr_failure_freeswitch")
            self.relay()

    # ---- small helpers over KSR ---------------------------------------------------------

    def _check_digest(self, ha1: str) -> int:
        """Check Proxy-Authorization against the HA1; no check of From user (Meta's is the caller)."""
        return int(KSR.auth.pv_auth_check(self.settings.sip_domain, ha1, HA1_PASSWORD, 0))

    def _challenge(self, stale: bool) -> None:
        """407 with qop=auth (auth_challenge answers 407 to anything but REGISTER)."""
        KSR.auth.auth_challenge(self.settings.sip_domain, QOP_AUTH | (STALE if stale else 0))

    def _reply(self, status: int, reason: str, headers: str = "") -> None:
        try:
            if headers:
                KSR.hdr.append_to_reply(headers)
            KSR.sl.send_reply(status, reason)
        except Exception:
            self._log_exception("reply")

    def _log_exception(self, where: str) -> None:
        for line in traceback.format_exc().splitlines():
            KSR.err(f"wa-edge: {where}: {line}\n")


def create_edge(settings_path: str) -> WhatsAppEdge:
    """Called by the rendered entry script's mod_init()."""
    return WhatsAppEdge(load_settings(Path(settings_path)))

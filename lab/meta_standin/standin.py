"""Meta's SIP edge as the lab plays it: a second Kamailio running this KEMI script.

It behaves as shared/spec/meta-sip.md documents Meta on business-initiated calls: a 407 with
`realm="wa.meta.vc"`, `qop="auth"` to an INVITE without credentials, the digest checked by
Kamailio's auth module with the number's SIP password (user = digits, no '+'), then the From
rules (400 "Asset not found" for an unknown number, 403 "SIP server X ... does not match" for a
From domain the sub-domain rule refuses), a 404 for a request URI that is not
`+E164@wa.meta.vc`, 500 to a re-INVITE. Error answers come on demand: the called number picks
one from `answers` in the settings. Anything else is relayed to the WhatsApp user (a SIPp UAS).

stunnel in front of it holds the TLS (with a `wa.meta.vc` certificate from the test CA), so the
stand-in itself listens on plain TCP; requests toward the edge go back over the connection the
edge opened, as the stored source of each call's INVITE.

Every request received and every reply sent is appended to an events file (one line each,
`time|recv|...` / `time|sent|...`): the lab's ladder and the tests read what Meta saw there.
Standard library and KSR only: this runs in Kamailio's embedded Python.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from pathlib import Path

import KSR

DONE = 1
QOP_AUTH = 1
CONNECTIONS = "calls"  # htable: Call-ID -> the edge's connection (source of its INVITE)


class MetaStandin:
    def __init__(self, settings: dict[str, object]) -> None:
        self.realm = str(settings["realm"])
        self.host_name = str(settings["host_name"])
        numbers = settings["numbers"]
        answers = settings["answers"]
        assert isinstance(numbers, dict) and isinstance(answers, dict)
        self.numbers: dict[str, dict[str, str]] = numbers
        self.answers: dict[str, list[object]] = answers
        self.whatsapp_user = str(settings["whatsapp_user"])
        self.record_route = str(settings["record_route"])
        self.events = Path(str(settings["events"]))

    def child_init(self, rank: int) -> int:
        return 0

    # ---- entry points -------------------------------------------------------------------

    def ksr_request_route(self, msg: object) -> int:
        try:
            self.route()
        except Exception:
            for line in traceback.format_exc().splitlines():
                KSR.err(f"meta-standin: {line}\n")
            KSR.sl.send_reply(500, "Server Internal Error")
        return DONE

    def ksr_reply_route(self, msg: object) -> int:
        try:
            self.event("relay", f"{KSR.kx.get_status()} {KSR.pv.get('$rr')}",
                       f"cseq={KSR.pv.get('$cs')} {KSR.pv.get('$rm')}")
        except Exception:
            KSR.err("meta-standin: reply route failed\n")
        return DONE

    # ---- routing --------------------------------------------------------------------------

    def route(self) -> None:
        method = str(KSR.kx.get_method())
        from_edge = bool(KSR.is_TCP())
        auth = "yes" if KSR.hdr.is_present("Proxy-Authorization") > 0 else "no"
        self.event("recv", f"{method} {KSR.kx.get_ruri()}",
                   f"cseq={KSR.pv.get('$cs')} auth={auth} side={'edge' if from_edge else 'user'}"
                   f" from={KSR.kx.get_furi()} to={KSR.kx.get_turi()}"
                   f"{self._duration()}")
        if method == "CANCEL":
            if KSR.tm.t_check_trans() > 0:
                # Meta answers the INVITE with 487 itself, then tells the user's phone to stop.
                self.event("sent", "487 Request Terminated", f"cseq={KSR.pv.get('$cs')} INVITE")
                KSR.tmx.t_reply_callid(str(KSR.kx.get_callid()), str(KSR.pv.get("$cs")), 487,
                                       "Request Terminated")
                KSR.tm.t_relay()
            return
        if method != "ACK":
            if KSR.tmx.t_precheck_trans() > 0:
                KSR.tm.t_check_trans()
                return
            if KSR.tm.t_check_trans() == 0:
                return
        if KSR.siputils.has_totag() > 0:
            self.in_dialog(method, from_edge)
            return
        if method == "ACK":
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return
        if method == "OPTIONS":
            self.reply(200, "OK")
        elif method == "REGISTER":
            self.reply(403, "Forbidden")
        elif method != "INVITE":
            self.reply(405, "Method Not Allowed")
        else:
            self.invite()

    def in_dialog(self, method: str, from_edge: bool) -> None:
        if KSR.rr.loose_route() < 0:
            if method == "ACK":
                return  # ACK of a local negative reply (sl absorbs most of them)
            self.reply(404, "Not Here")
            return
        if method == "INVITE" and from_edge:
            self.reply(500, "Server Internal Error")  # Meta refuses re-INVITEs
            return
        if from_edge:
            KSR.setdsturi(self.whatsapp_user)
        else:
            connection = KSR.htable.sht_get(CONNECTIONS, str(KSR.kx.get_callid()))
            if not isinstance(connection, str):
                self.reply(481, "Call/Transaction Does Not Exist")
                return
            KSR.setdsturi(connection)
        KSR.tm.t_relay()

    def invite(self) -> None:
        """Meta's checks, in Meta's order: request URI, digest, From rules, then the answer."""
        user = str(KSR.kx.get_ruser())
        host = str(KSR.kx.get_rhost()).lower()
        if host != self.host_name or not re.fullmatch(r"\+[1-9][0-9]{6,14}", user):
            self.reply(404, "Not Found")
            return
        auth_user = str(KSR.kx.get_au() or "")
        number = self.numbers.get(auth_user)
        if number is None or KSR.auth.pv_auth_check(self.realm, number["password"], 0, 0) != 1:
            self.event("sent", "407 Proxy Authentication Required",
                       f"realm={self.realm} (digest user {auth_user or 'none'})")
            KSR.auth.auth_challenge(self.realm, QOP_AUTH)
            return
        KSR.auth.consume_credentials()
        from_user = str(KSR.kx.get_fuser())
        from_host = str(KSR.kx.get_fhost()).lower()
        caller = self.numbers.get(from_user.removeprefix("+")) if from_user.startswith("+") \
            else None
        if caller is None:
            self.reply(400, "Asset not found")
            return
        hostname = caller["sip_hostname"]
        if not (from_host == hostname or hostname.endswith("." + from_host)):
            self.reply(403, f"SIP server {from_host} from INVITE does not match any SIP server "
                            f"configured for phone number id [{caller['phone_number_id']}]")
            return
        answer = self.answers.get(user)
        if answer is not None:
            self.reply(int(str(answer[0])), str(answer[1]))
            return
        KSR.htable.sht_sets(CONNECTIONS, str(KSR.kx.get_callid()),
                            f"sip:{KSR.kx.get_srcip()}:{KSR.kx.get_srcport()};transport=tcp")
        KSR.rr.record_route_preset_one(self.record_route)
        KSR.setdsturi(self.whatsapp_user)
        KSR.tm.t_relay()

    # ---- helpers --------------------------------------------------------------------------

    def reply(self, status: int, reason: str) -> None:
        self.event("sent", f"{status} {reason}", f"cseq={KSR.pv.get('$cs')}")
        KSR.sl.send_reply(status, reason)

    def _duration(self) -> str:
        duration = KSR.hdr.get("X-WA-Meta-Call-Duration")
        return f" duration={duration}" if duration is not None else ""

    def event(self, way: str, first_line: str, detail: str) -> None:
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1e6) % 1000000:06d}"
        detail = f"{detail} call={KSR.kx.get_callid()}"
        with self.events.open("a", encoding="utf-8") as handle:
            handle.write(f"{stamp}|{way}|{first_line}|{detail}\n")


def create(settings_path: str) -> MetaStandin:
    with open(settings_path, encoding="utf-8") as handle:
        return MetaStandin(json.load(handle))

"""Meta's SIP edge as the lab plays it: a second Kamailio running this KEMI script.

It behaves as shared/spec/meta-sip.md documents Meta on business-initiated calls, field reports
included: a 407 with two challenges (`algorithm=SHA-256` first, then `MD5`, each with its own
nonce and opaque, `realm="wa.meta.vc"`, `qop="auth"`) to an INVITE without a correct answer;
Meta's `403 Proxy auth uri does not match SIP "to" uri` when the digest uri is neither the To URI
nor the To URI without its parameters; an answer that must use one challenge with that
challenge's own nonce, opaque and algorithm, its response checked (RFC 7616, digest_rules.py)
with the number's SIP password (user = digits, no '+'), each nonce count once, and a higher
CSeq than the challenged INVITE's; then the From
rules (400 "Asset not found" for an unknown number, 403 "SIP server X ... does not match" for a
From domain the sub-domain rule refuses), a 404 for a request URI that is not
`+E164@wa.meta.vc`, 500 to a re-INVITE. Error answers come on demand: the called number picks
one from `answers` in the settings. Anything else is relayed to the WhatsApp user (a SIPp UAS).

stunnel in front of it holds the TLS (with a `wa.meta.vc` certificate from the test CA), so the
stand-in itself listens on plain TCP; requests toward the edge go back over the connection the
edge opened, as the stored source of each call's INVITE.

Every request received, every reply sent and every verdict on a digest is appended to an events
file (one line each, `time|recv|...` / `time|sent|...` / `time|auth|...`; a 407's line lists its
challenges, an accepted digest's line the nonce, opaque and uri it echoed): the lab's ladder and
the tests read what Meta saw there.
Standard library and KSR only: this runs in Kamailio's embedded Python.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import KSR

if TYPE_CHECKING:
    from lab.meta_standin import digest_rules
else:  # inside Kamailio the entry script puts this folder, not the project, on sys.path
    import digest_rules

DONE = 1
CONNECTIONS = "calls"  # htable: Call-ID -> the edge's connection (source of its INVITE)
NONCES = "nonces"  # htable: nonce -> the highest nonce count accepted with it
CHALLENGED = "challenged"  # htable: Call-ID -> the CSeq of the INVITE last challenged


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
        uri_forms = settings.get("digest_uri_forms", {})
        assert isinstance(uri_forms, dict)
        # called number -> the digest uri forms Meta accepts for it (default: both)
        self.uri_forms: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in uri_forms.items()}
        algorithms = settings.get("challenge_algorithms", {})
        assert isinstance(algorithms, dict)
        # called number -> the challenges its 407 carries (default: SHA-256 then MD5)
        self.algorithms: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in algorithms.items()}
        # Made in mod_init, before Kamailio forks: every worker binds opaques with the same key.
        self.secret = secrets.token_bytes(32)

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
        if not self.authenticated(user):
            return
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

    # ---- Meta's digest ----------------------------------------------------------------------

    def authenticated(self, called: str) -> bool:
        """Meta's digest rules; False when a 407 or 403 was sent.

        The digest uri must be the To URI or the To URI without its parameters (else Meta's
        403); the answer must use one of the two challenges with that challenge's own nonce,
        opaque and algorithm, and qop=auth; the nonce must be one the stand-in made within its
        lifetime and each nonce count is accepted once (a replay is challenged again); the
        response must be RFC 7616's for that algorithm and the number's password; and the
        authenticated INVITE must carry a higher CSeq than the one challenged (RFC 3261
        8.1.3.5). The check is the stand-in's own (digest_rules.py, RFC 7616's vectors in the
        tests): Kamailio's auth module checks one algorithm per process and 5.6's cannot
        switch, while Meta offers two in one 407.
        """
        value = KSR.hdr.get("Proxy-Authorization")
        if value is None:
            self.challenge(called, "no credentials")
            return False
        fields = digest_rules.parse_digest(str(value))
        if fields is None:
            self.challenge(called, "credentials are not a digest")
            return False
        to_uri = str(KSR.kx.get_turi())
        forms = self.uri_forms.get(called, digest_rules.URI_FORMS)
        if not digest_rules.digest_uri_matches_to(fields.get("uri", ""), to_uri, forms):
            self.event("auth", "refused: digest uri is not the To URI",
                       f"uri={fields.get('uri')} to={to_uri} accepts={','.join(forms)}")
            self.reply(403, digest_rules.FORBIDDEN_URI)
            return False
        algorithm, why = digest_rules.answered_algorithm(fields, self.secret)
        user = fields.get("username", "")
        number = self.numbers.get(user)
        if algorithm is None or number is None or fields.get("realm") != self.realm:
            self.challenge(called, why if algorithm is None else f"unknown user {user!r} or realm")
            return False
        problem = self.digest_problem(algorithm, user, number["password"], fields)
        if problem is not None:
            self.challenge(called, f"{algorithm} answer refused: {problem}")
            return False
        self.event("auth", f"accepted {algorithm}",
                   f"nonce={fields.get('nonce')} opaque={fields.get('opaque')} "
                   f"uri={fields.get('uri')} to={to_uri} nc={fields.get('nc')}")
        return True

    def digest_problem(self, algorithm: str, user: str, password: str,
                       fields: dict[str, str]) -> str | None:
        """Why this answer is refused (nonce, nonce count, response, CSeq), or None."""
        nonce = fields.get("nonce", "")
        stale = digest_rules.nonce_problem(self.secret, nonce, time.time())
        if stale is not None:
            return stale
        count = digest_rules.nonce_count(fields)
        if count is None or not fields.get("cnonce"):
            return "no valid nc and cnonce"
        expected = digest_rules.expected_response(algorithm, user, self.realm, password,
                                                  str(KSR.kx.get_method()), fields)
        if not hmac.compare_digest(expected, fields.get("response", "").lower()):
            return "wrong response"
        used = KSR.htable.sht_get(NONCES, nonce)
        if isinstance(used, int) and count <= used:
            return f"nonce count {count} already used"
        KSR.htable.sht_seti(NONCES, nonce, count)
        challenged = KSR.htable.sht_get(CHALLENGED, str(KSR.kx.get_callid()))
        cseq = int(str(KSR.pv.get("$cs")))
        if isinstance(challenged, int) and cseq <= challenged:
            return f"CSeq {cseq} is not above the challenged {challenged}"
        return None

    def challenge(self, called: str, why: str) -> None:
        """Meta's 407: a SHA-256 then an MD5 challenge, each with its own nonce and opaque
        (the opaque binds the nonce to its algorithm); the CSeq it answers is kept, so that the
        answer must come with a higher one."""
        now = time.time()
        challenges = []
        for algorithm in self.algorithms.get(called, digest_rules.CHALLENGE_ALGORITHMS):
            nonce = digest_rules.make_nonce(self.secret, now)
            challenges.append(digest_rules.Challenge(
                algorithm, nonce, digest_rules.opaque_for(self.secret, nonce, algorithm)))
        KSR.htable.sht_seti(CHALLENGED, str(KSR.kx.get_callid()), int(str(KSR.pv.get("$cs"))))
        self.event("sent", "407 Proxy Authentication Required",
                   f"cseq={KSR.pv.get('$cs')} why={why.replace(' ', '_')} challenges="
                   + ",".join(c.summary() for c in challenges))
        KSR.hdr.append_to_reply("".join(c.header(self.realm) for c in challenges))
        KSR.sl.send_reply(407, "Proxy Authentication Required")

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

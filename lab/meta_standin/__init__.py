"""Meta's side of business-initiated calls on loopback: stunnel (TLS, a test-CA certificate for
`wa.meta.vc`) in front of a second Kamailio running `standin.py`.

Debian's SIPp cannot judge a digest (its `verifyauth` refuses a correct Proxy-Authorization),
so Meta is a Kamailio whose KEMI script checks the edge's answer to the 407. It is as
strict as Meta's field traces show Meta to be: two challenges (SHA-256 first, then MD5, each with
its own nonce and opaque), an answer that must use one of them with that one's nonce, opaque and
algorithm, and Meta's 403 when the digest uri is not the To URI (digest_rules.py). The WhatsApp
user behind it is a SIPp UAS started per call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jinja2

from lab.certs import Leaf
from lab.processes import LabError, ManagedProcess, wait_for_tcp
from lab.stunnel import stunnel_server
from provisioning.kamailio_binary import kamailio_binary

HERE = Path(__file__).resolve().parent
META_HOST = "wa.meta.vc"
WHATSAPP_USER = "+15550123456"


@dataclass(frozen=True)
class MetaAnswer:
    """An error answer the stand-in gives on demand: calling `called_number` gets it."""

    flow: str
    called_number: str
    status: int
    reason: str
    diagnosis: str


# Every answer of meta-sip.md's table that ends a call attempt, each on its own called number.
# (407 is the challenge itself and 487 the CANCEL flow: both are played for real.)
META_ANSWERS: tuple[MetaAnswer, ...] = (
    MetaAnswer("asset-not-found", "+15559990400", 400, "Asset not found", "asset_not_found"),
    MetaAnswer("sip-server-mismatch", "+15559990403", 403,
               "SIP server sip.example.com from INVITE does not match any SIP server configured "
               "for phone number id [100000000000001]", "sip_server_mismatch"),
    MetaAnswer("no-call-permission", "+15559991403", 403, "No Approved Call Permission Found",
               "no_call_permission"),
    MetaAnswer("app-not-authorized", "+15559992403", 403,
               "The app [1234] configured for SIP server sip.example.com is not authorized",
               "app_not_authorized"),
    MetaAnswer("daily-limit", "+15559993403", 403,
               "Business Initiated Connected Call Per Day Limit Hit", "daily_limit"),
    MetaAnswer("sdp-validation", "+15559994403", 403, "SDP Validation Error", "sdp_validation"),
    MetaAnswer("not-found", "+15559990404", 404, "Not Found", "ip_literal"),
    MetaAnswer("rtp-timeout", "+15559990408", 408, "RTP Timeout", "rtp_timeout"),
    MetaAnswer("unreachable", "+15559990480", 480, "Temporarily Unavailable", "unreachable"),
    MetaAnswer("declined", "+15559990486", 486, "Busy Here", "declined"),
    MetaAnswer("internal-error", "+15559990500", 500, "Server Internal Error", "reinvite_refused"),
    MetaAnswer("unavailable", "+15559990503", 503, "Service Unavailable", "meta_internal"),
    MetaAnswer("undocumented", "+15559990606", 606, "Not Acceptable Here Either", "meta_other"),
)
META_ANSWERS_BY_FLOW = {answer.flow: answer for answer in META_ANSWERS}

# Meta as one reading of LiveKit's accepted trace would have it: calling this number, the digest
# uri must be the To URI *without* its parameters, so the edge's form (digest uri = To URI =
# request URI) gets Meta's 403 "Proxy auth uri does not match SIP "to" uri". Every other number
# accepts both forms the field traces allow (digest_rules.URI_FORMS).
BARE_URI_ONLY_NUMBER = "+15559995403"
DIGEST_URI_FORMS: dict[str, tuple[str, ...]] = {BARE_URI_ONLY_NUMBER: ("to-without-params",)}
# Meta as it would be if it dropped MD5: calling this number, the 407 offers SHA-256 only, which
# Kamailio's uac cannot answer. Every other number gets both challenges, SHA-256 first.
SHA256_ONLY_NUMBER = "+15559996407"
CHALLENGE_ALGORITHMS: dict[str, tuple[str, ...]] = {SHA256_ONLY_NUMBER: ("SHA-256",)}


@dataclass(frozen=True)
class StandinPorts:
    public: int  # stunnel's TLS port: what the edge's bic.meta_server points at
    tcp: int  # the stand-in Kamailio behind stunnel
    udp: int  # the stand-in toward the WhatsApp user
    whatsapp_user: int  # the SIPp UAS playing the WhatsApp user


@dataclass(frozen=True)
class StandinEvent:
    """One line of the events file: a request the stand-in received or a reply it sent/relayed."""

    time: str
    way: str  # recv | sent | relay
    first_line: str
    detail: str


class MetaStandin:
    """stunnel + the stand-in Kamailio, in `folder`; start() / stop()."""

    def __init__(self, folder: Path, ports: StandinPorts, certificate: Leaf,
                 numbers: dict[str, str], sip_hostname: str, passwords: dict[str, str]) -> None:
        """`numbers`: business number (+E164) -> phone number id; `passwords`: number -> password."""
        self.folder = folder
        self.ports = ports
        self.certificate = certificate
        self.events_file = folder / "meta-events.log"
        self.settings = {
            "realm": META_HOST,
            "host_name": META_HOST,
            "numbers": {number[1:]: {"password": passwords.get(number, ""),
                                     "phone_number_id": number_id,
                                     "sip_hostname": sip_hostname}
                        for number, number_id in numbers.items()},
            "answers": {a.called_number: [a.status, a.reason] for a in META_ANSWERS},
            "digest_uri_forms": {number: list(forms) for number, forms in DIGEST_URI_FORMS.items()},
            "challenge_algorithms": {number: list(algorithms)
                                     for number, algorithms in CHALLENGE_ALGORITHMS.items()},
            "whatsapp_user": f"sip:127.0.0.1:{ports.whatsapp_user}",
            "record_route": f"127.0.0.1:{ports.public};transport=tls",
            "events": str(self.events_file),
        }
        self.kamailio: ManagedProcess | None = None
        self.stunnel: ManagedProcess | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        settings_path = self.folder / "standin-settings.json"
        settings_path.write_text(json.dumps(self.settings, indent=2), encoding="utf-8")
        entry = self.folder / "standin_entry.py"
        entry.write_text(
            "import sys\n"
            f"sys.path.insert(0, {str(HERE)!r})\n"
            "import standin  # noqa: E402\n\n\n"
            "def mod_init():\n"
            f"    return standin.create({str(settings_path)!r})\n", encoding="utf-8")
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)),
                                         undefined=jinja2.StrictUndefined, autoescape=False)
        cfg = self.folder / "kamailio.cfg"
        cfg.write_text(environment.get_template("kamailio.cfg.j2").render(
            host_name=META_HOST, public_port=self.ports.public, tcp_port=self.ports.tcp,
            udp_port=self.ports.udp, entry_script=str(entry)), encoding="utf-8")
        run_dir = self.folder / "run"
        run_dir.mkdir(exist_ok=True)
        self.kamailio = ManagedProcess("meta stand-in kamailio", [
            kamailio_binary(), "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4", "-Y", str(run_dir),
            "-P", str(run_dir / "kamailio.pid")], self.folder / "kamailio.log").start()
        try:
            wait_for_tcp("127.0.0.1", self.ports.tcp, 20, "meta stand-in kamailio",
                         self.kamailio.log)
        except LabError:
            raise LabError("meta stand-in kamailio did not start:\n" + self.kamailio.log_tail()) \
                from None
        self.present(self.certificate)

    def present(self, certificate: Leaf) -> None:
        """(Re)start stunnel with `certificate`: how a test makes Meta's name wrong."""
        if self.stunnel is not None:
            self.stunnel.stop()
        self.certificate = certificate
        self.stunnel = stunnel_server(self.folder, "meta-tls", self.ports.public, self.ports.tcp,
                                      certificate.certificate, certificate.private_key)

    def stop(self) -> None:
        for process in (self.stunnel, self.kamailio):
            if process is not None:
                process.stop()

    def events(self) -> list[StandinEvent]:
        if not self.events_file.exists():
            return []
        events = []
        for line in self.events_file.read_text(encoding="utf-8").splitlines():
            parts = line.split("|", 3)
            if len(parts) == 4:
                events.append(StandinEvent(*parts))
        return events

    def events_for(self, call_id: str) -> list[StandinEvent]:
        """The events of one call (each line carries `call=<Call-ID>`)."""
        return [e for e in self.events() if f"call={call_id} " in e.detail + " "]

    def clear_events(self) -> None:
        self.events_file.write_text("", encoding="utf-8")

    def log(self) -> str:
        return self.folder.joinpath("kamailio.log").read_text(errors="replace")

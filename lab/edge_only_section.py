"""`make lab` without FreeSWITCH: the calls that need none, through the real edge.

The Kamailio edge and Meta's stand-ins are real (EdgeLab, with the Meta stand-in for
business-initiated calls); the business side is played over plain SIP by SIPp from
sipp-scenarios/<flow>/freeswitch.xml, as the edge tests do (tests/test_edge_uic.py,
tests/test_edge_bic.py). Each call has an expected outcome ("answered", "refused",
"diagnosis ..."); it passes when the outcome seen is the expected one and its SIPp parties
finished their scripts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.ladders import bic_ladder, uic_ladder
from lab.meta_standin import META_ANSWERS_BY_FLOW, StandinEvent
from lab.sipp import SippResult, TracedMessage, start_sipp_server
from provisioning.freeswitch_binary import FREESWITCH

EDGE_NUMBER = "+15550100001"
"""The number the edge-only calls use; it has the lab's credentials."""
UNSYNCED_NUMBER = "+15550100002"
"""Configured, but no credentials are ever written for it."""
FAILURE_LIMIT = 3
BUSINESS = "business"  # the ladder's name for the SIPp playing FreeSWITCH
PARTY_WAIT = 15  # seconds a SIPp UAS gets to finish its script after the call
REFUSAL = META_ANSWERS_BY_FLOW["declined"]


def edge_overrides(**changes: object) -> dict[str, object]:
    """The example config plus a number without credentials and a low lockout threshold (the
    edge tests use these too, tests/conftest.py), on the direct path ([media] anchor =
    "freeswitch"): SIPp's SDP goes through the edge untouched to the SIPp playing FreeSWITCH,
    no rtpengine started (lab/rtpengine_section.py merges rtpengine over it)."""
    overrides: dict[str, object] = {
        "media": {"anchor": "freeswitch"},
        "numbers": [
            {"business_number": EDGE_NUMBER, "phone_number_id": "100000000000001",
             "request_uri_user_params": {"tgrp": "wacall", "trunk-context": "byoc.example.com"}},
            {"business_number": UNSYNCED_NUMBER, "phone_number_id": "100000000000002"},
        ],
        "auth": {"failure_limit": FAILURE_LIMIT},
    }
    overrides.update(changes)
    return overrides


@dataclass
class EdgeCall:
    name: str
    expected: str
    outcome: str
    ladder: list[str]
    notes: list[str] = field(default_factory=list)
    detail: str = ""
    scripts_ok: bool = True  # every SIPp party finished its script

    @property
    def passed(self) -> bool:
        return self.outcome == self.expected and self.scripts_ok


def freeswitch_absent_line(missing: str, skipped: int) -> str:
    """The line printed up front when there is no FreeSWITCH."""
    looked = ", ".join(FREESWITCH.candidates())
    return (f"lab: {missing} (looked for {looked}); the {skipped} FreeSWITCH calls are skipped, "
            "the edge-only calls below run with the business side played by SIPp")


# ---- helpers ---------------------------------------------------------------------------------


def _header(message: str, name: str) -> str:
    """The first value of header `name` in a raw SIP message, or ""."""
    for line in message.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _call_id(trace: list[TracedMessage]) -> str:
    return _header(trace[0].text, "Call-ID") if trace else ""


def _final_reply(trace: list[TracedMessage]) -> str:
    """The final response the caller got to its INVITE, or ""."""
    return next((m.text for m in trace if not m.sent and m.first_line.startswith("SIP/2.0 ")
                 and not m.first_line.startswith("SIP/2.0 1")
                 and _header(m.text, "CSeq").endswith(" INVITE")), "")


def _uic_outcome(meta: SippResult) -> str:
    """What Meta's caller saw: answered (200 after the 407), refused (a final error) or none."""
    finals = [line for line in meta.first_lines()[1:] if line.startswith("SIP/2.0 ")
              and not line.startswith("SIP/2.0 1")]
    if any(line.startswith("SIP/2.0 200") for line in finals):
        return "answered"
    return "refused" if finals else "no answer"


def _why(*parties: tuple[str, SippResult | None, int]) -> str:
    problems = []
    for who, result, code in parties:
        if result is not None and not result.passed:
            problems.append(f"{who}: {result.errors.strip() or f'SIPp exit {result.exit_code}'}"
                            + (f", out of script: {result.out_of_script()}"
                               if result.out_of_script() else ""))
        elif result is None and code != 0:
            problems.append(f"{who}: SIPp exit {code}")
    return "; ".join(problems)


# ---- the calls ---------------------------------------------------------------------------------


def uic_answered(edge: EdgeLab, folder: Path) -> EdgeCall:
    """Meta -> edge (407, digest) -> the business SIPp UAS, answered; Meta's BYE."""
    business = start_sipp_server("uic-answered", "freeswitch", folder, edge.ports.freeswitch[0])
    try:
        meta = edge.meta_call("uic-answered", business_number=EDGE_NUMBER, folder=folder)
        code = business.wait(PARTY_WAIT)
    finally:
        business.stop()
    trace = business.trace()
    invite = next((m.text for m in trace if not m.sent and m.first_line.startswith("INVITE")), "")
    challenged = meta.first_lines()[1:2] == ["SIP/2.0 407 Proxy Authentication Required"]
    bye = any(not m.sent and m.first_line.startswith("BYE") for m in trace)
    notes = [f"the edge challenged with 407: {'yes' if challenged else 'no'}; Meta's BYE "
             f"reached the business side: {'yes' if bye else 'no'}"]
    if invite:
        notes.append("the business side got X-WA-Business-Number: "
                     f"{_header(invite, 'X-WA-Business-Number') or '-'}, X-WA-Auth: "
                     f"{_header(invite, 'X-WA-Auth') or '-'}, wacid "
                     f"{_header(invite, 'x-wa-meta-wacid') or '-'}")
    outcome = _uic_outcome(meta) if challenged and bye else f"{_uic_outcome(meta)} (incomplete)"
    return EdgeCall(f"user-initiated call to {EDGE_NUMBER}, digest-challenged, answered by the "
                    "business side (SIPp), Meta hangs up", "answered", outcome,
                    uic_ladder(meta.trace, trace, BUSINESS), notes,
                    _why(("Meta", meta, 0), ("business", None, code)),
                    meta.passed and code == 0)


def wrong_password(edge: EdgeLab, folder: Path, password: str = "not-the-meta-password",
                   timeout_s: int = 20) -> EdgeCall:
    """Meta answers the 407 with a wrong password: challenged again, nothing reaches the
    business side (its SIPp UAS listens the whole time)."""
    business = start_sipp_server("uic-answered", "freeswitch", folder, edge.ports.freeswitch[0])
    try:
        meta = edge.meta_call("uic-wrong-password", password=password,
                              business_number=EDGE_NUMBER, folder=folder, timeout_s=timeout_s)
        listening = business.running()
    finally:
        business.stop()
    trace = business.trace()
    got = [m.first_line for m in trace if not m.sent]
    answered = meta.first_lines()[-1:] == ["SIP/2.0 200 OK"] or any(
        line.startswith("INVITE") for line in got)
    outcome = "answered" if answered else "refused" if meta.passed else _uic_outcome(meta)
    notes = [f"the business side received {len(got)} messages"
             + ("" if listening else " (its SIPp had stopped)")]
    return EdgeCall("user-initiated call with a wrong SIP password is refused at the edge, never "
                    "reaches the business side", "refused", outcome,
                    uic_ladder(meta.trace, trace, BUSINESS), notes,
                    "" if outcome == "refused" else
                    f"expected refused, got {outcome}: {_why(('Meta', meta, 0)) or got}",
                    listening)


def _verdicts(events: list[StandinEvent]) -> tuple[str, str]:
    """(challenges offered, the stand-in's verdict on the digest) from its events."""
    offered = next((e.detail for e in events if e.way == "sent" and e.first_line.startswith("407")),
                   "")
    fields = dict(w.split("=", 1) for w in offered.split() if "=" in w)
    algorithms = ",".join(item.split(":")[0] for item in fields.get("challenges", "").split(",")
                          if item)
    verdict = next((e.first_line for e in events if e.way == "auth"), "")
    return algorithms, verdict


def bic_answered(edge: EdgeLab, folder: Path) -> EdgeCall:
    """The business SIPp UAC -> edge -> Meta stand-in (407 answered by the edge) -> the
    WhatsApp user, answered; the business hangs up."""
    assert edge.meta is not None
    user = edge.whatsapp_user("bic-answered", folder=folder)
    try:
        business = edge.freeswitch_call("bic-answered", folder=folder)
        user_code = user.wait(PARTY_WAIT)
    finally:
        user.stop()
    events = edge.meta.events_for(_call_id(business.trace))
    offered, verdict = _verdicts(events)
    invites = [e.detail.split()[1] for e in events
               if e.way == "recv" and e.first_line.startswith("INVITE")]
    reply = _final_reply(business.trace)
    outcome = ("answered" if reply.startswith("SIP/2.0 200") and verdict.startswith("accepted")
               and invites == ["auth=no", "auth=yes"] else
               f"{reply.split(chr(13))[0] or 'no final reply'}, stand-in: {verdict or 'no verdict'}")
    notes = [f"Meta stand-in offered {offered or '-'}; it {verdict or 'gave no verdict'}"
             + (" (the edge's answer)" if verdict.startswith("accepted") else ""),
             f"INVITEs at Meta: {', '.join(invites) or 'none'}"]
    return EdgeCall("business-initiated call from the business side (SIPp) through the edge, "
                    "Meta's 407 answered by the edge, answered by the WhatsApp user, the "
                    "business hangs up", "answered", outcome,
                    bic_ladder(business.trace, events, user.trace(), BUSINESS), notes,
                    _why(("business", business, 0), ("WhatsApp user", None, user_code)),
                    business.passed and user_code == 0)


def meta_refuses(edge: EdgeLab, folder: Path) -> EdgeCall:
    """Meta's 486 to the authenticated INVITE becomes the edge's X-WA-Diagnosis."""
    assert edge.meta is not None
    business = edge.freeswitch_call(f"bic-meta-{REFUSAL.flow}", dialed=REFUSAL.called_number,
                                    folder=folder)
    events = edge.meta.events_for(_call_id(business.trace))
    reply = _final_reply(business.trace)
    diagnosis = _header(reply, "X-WA-Diagnosis")
    status = reply.split("\r\n", 1)[0]
    code = diagnosis.split(";", 1)[0]
    outcome = (f"diagnosis {code}" if status.startswith(f"SIP/2.0 {REFUSAL.status} {REFUSAL.reason}")
               and code else f"{status or 'no final reply'}, diagnosis {code or '-'}")
    return EdgeCall(f"business-initiated call Meta refuses ({REFUSAL.status} {REFUSAL.reason}): "
                    "the edge's diagnosis reaches the business side", f"diagnosis {REFUSAL.diagnosis}",
                    outcome, bic_ladder(business.trace, events, [], BUSINESS),
                    [f"the edge told the business side: X-WA-Diagnosis: {diagnosis or '-'}"],
                    _why(("business", business, 0)), business.passed)


EDGE_CALLS: list[Callable[[EdgeLab, Path], EdgeCall]] = [uic_answered, wrong_password,
                                                         bic_answered, meta_refuses]


def print_call(call: EdgeCall) -> None:
    print(f"\n[{'PASS' if call.passed else 'FAIL'}] {call.name}")
    print("\n".join(call.ladder))
    for note in call.notes:
        print(f"  = {note}")
    print(f"  result: {call.outcome} (expected {call.expected})")
    if call.detail and not call.passed:
        print(f"  why: {call.detail}")


def run_edge_only(folder: Path, config_path: Path,
                  overrides: dict[str, Any] | None = None) -> list[EdgeCall]:
    """Start the edge and Meta's stand-ins in `folder`, place EDGE_CALLS, print each."""
    results = []
    with EdgeLab(folder / "edge", overrides or edge_overrides(), config_path=config_path,
                 passwords={EDGE_NUMBER: LAB_PASSWORD}, meta_standin=True) as edge:
        print(f"lab: edge-only section: Kamailio edge on TLS 127.0.0.1:{edge.ports.tls}, internal "
              f"UDP 127.0.0.1:{edge.ports.internal}; Meta stand-in (wa.meta.vc) on TLS "
              f"127.0.0.1:{edge.ports.meta.public}; the business side is SIPp on "
              f"127.0.0.1:{edge.ports.freeswitch[0]}")
        for index, play in enumerate(EDGE_CALLS, 1):
            call_folder = folder / f"edge-call-{index}"
            call_folder.mkdir()
            result = play(edge, call_folder)
            results.append(result)
            print_call(result)
    return results

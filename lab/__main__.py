"""`make lab`: place real calls through the whole bundle on loopback and show what happened.

The business side of every call is real: the Kamailio edge, FreeSWITCH started from the
configuration `provision render` writes, and `wa-esl` (run as `wa-esl run --config FILE`)
driving it. Meta is played on both of its sides: SIPp behind stunnel (TLS, a test CA made at
run time) places user-initiated calls; for business-initiated calls `wa-esl originate` sends
FreeSWITCH's INVITE through its gateway to the edge, then to the Meta stand-in (a second
Kamailio behind stunnel with a `wa.meta.vc` certificate that challenges with 407 and checks the
digest and From rules), then to the WhatsApp user, a SIPp UAS. Those calls carry SDP only.

An rtpengine section runs on every machine (lab/rtpengine_section.py): the four media flows with
[media] anchor = "rtpengine", Debian's rtpengine between Meta's media peer and a plain-RTP
business side, a `media:` line per call with the tone each side heard.

A media section follows (lab/media_section.py): the four media flows (user- and
business-initiated, SDES and DTLS) with lab/media's peer playing WhatsApp's media side, one
`media:` line per call, all through the edge (and the Meta stand-in on business-initiated
calls); a call fails unless each side hears the other's tone.

Then the call-permission section (lab/permission_section.py): a business-initiated call refused
in pre-flight (no permission), `provision permission request` sent to the Graph stand-in, its
signed `call_permission_reply` received by a running `wa-esl webhook`, the same call passing
pre-flight, then placed through FreeSWITCH and answered, `call show` naming the permission.
Without FreeSWITCH the section runs too, on a site config of its own, and only the placed call
is skipped.

Ladders show each leg as its own party saw it: Meta's SIPp trace, FreeSWITCH's sofia siptrace
(turned on over the Event Socket), the Meta stand-in's events and the WhatsApp user's trace.
Without FreeSWITCH (provisioning/freeswitch_binary.py finds none) the FreeSWITCH calls are
skipped, one line up front says why, and an edge-only section runs instead
(lab/edge_only_section.py): the real edge and Meta's stand-ins, the business side played by
SIPp over plain SIP, as the edge tests do.

On a stock FreeSWITCH (no patch marker, lab/media/freeswitch_patch.py) the calls that put
Meta's DTLS straight on FreeSWITCH are skipped with that reason, as the tests skip them: the
business-initiated DTLS offer and the two DTLS media calls need patches/freeswitch/0001 (stock
FreeSWITCH offers RTP/SAVPF and never sends its DTLS ClientHello to Meta's ICE-lite media).
Where rtpengine is installed, an rtpengine-with-FreeSWITCH section follows (patched or stock):
the same four media calls through a second bundle with [media] anchor = "rtpengine", Meta's
media (SDES or DTLS) on rtpengine and FreeSWITCH on plain RTP, audio and a DTMF digit checked
both ways.

Every process started here is stopped before the command returns. The last lines are
`lab: FreeSWITCH calls: N ran, M skipped (...)` and `lab: N passed, M failed`; the exit code is
1 when a call failed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esl.cdr import CallRecord, srtp_text
from lab.bundle import BundleLab, wa_esl_command
from lab.edge import EXAMPLE_CONFIG, merge
from lab.edge_only_section import freeswitch_absent_line, run_edge_only
from lab.freeswitch_trace import TRACE_COMMANDS, executed, read_freeswitch_trace, wait_for_call
from lab.ladders import bic_ladder, uic_ladder
from lab.media.freeswitch_patch import is_patched
from lab.media_section import MEDIA_CALLS, media_call, media_overrides
from lab.meta_standin import META_ANSWERS_BY_FLOW, WHATSAPP_USER
from lab.metrics_summary import Expected, summarize
from lab.permission_section import (
    PERMISSION_USER,
    PLACED_NAME,
    PermissionLab,
    PermissionStep,
    permission_steps,
    print_step,
    run_without_freeswitch,
    section_line,
)
from lab.processes import LabError
from lab.rtpengine_section import run_rtpengine_media
from lab.sdp_summary import describe_sdp, sdp_body
from lab.sipp import SippResult, TracedMessage
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing, freeswitch_version
from provisioning.render import RenderError
from siteconfig.model import ConfigError, SiteConfig

LAB_NUMBERS = {"SDES": ("+15550100008", "100000000000008"),
               "DTLS": ("+15550100009", "100000000000009")}
"""Numbers the lab adds when the site config has none of an SRTP mode, so both are shown."""
IVR_ROUTE = {"name": "lab-ivr", "match": {"cta_payload": "lab-ivr-*"},
             "target": {"action": "ivr",
                        "destination": "playback tone_stream://%(400,200,440);loops=2"}}
"""A route the lab puts first: an IVR-style prompt (a tone FreeSWITCH generates itself)."""
HOLD_MS = 1500  # Meta hangs up this long after its ACK


@dataclass
class LabCall:
    name: str
    passed: bool
    ladder: list[str]
    notes: list[str] = field(default_factory=list)
    detail: str = ""
    skipped: str = ""  # why it was not placed (a stock FreeSWITCH); neither passed nor failed


def cdr_note(record: CallRecord) -> str:
    duration = f"{record.fs_duration_s:.1f}s" if record.fs_duration_s is not None else "-"
    parts = [f"CDR {record.direction} {record.state}: cause {record.hangup_cause}",
             f"wacid {record.wacid or '-'}", f"route {record.route or '-'}",
             f"srtp {srtp_text(record)}", f"FreeSWITCH billed {duration}"]
    if record.meta_duration_s is not None:
        parts.append(f"Meta's duration {record.meta_duration_s}s")
    if record.diagnosis:
        parts.append(f"diagnosis: {record.diagnosis}")
    return ", ".join(parts)


# ---- the calls ------------------------------------------------------------------------------


class Lab:
    """The running bundle and the numbers the calls use."""

    def __init__(self, bundle: BundleLab) -> None:
        self.bundle = bundle
        config = bundle.config
        self.sdes = next(n for n in config.numbers if n.srtp_mode == "SDES")
        self.dtls = next(n for n in config.numbers if n.srtp_mode == "DTLS")

    def fs_log_size(self) -> int:
        log = self.bundle.freeswitch.log
        return log.stat().st_size if log.exists() else 0

    def freeswitch_leg(self, start: int, call_id: str, timeout: float = 10.0) -> list[TracedMessage]:
        """FreeSWITCH's messages of one call, once its dialog is over in FreeSWITCH's log."""
        return wait_for_call(self.bundle.freeswitch.log, start, call_id, timeout)


def _call_id(messages: list[TracedMessage]) -> str:
    for m in messages:
        for line in m.text.split("\r\n"):
            if line.lower().startswith("call-id:"):
                return line.split(":", 1)[1].strip()
    return ""


def _answer(trace: list[TracedMessage], sent: bool) -> str:
    """The SDP of the 200 OK to the INVITE in a trace (received by Meta: sent=False)."""
    for m in trace:
        if m.sent == sent and m.first_line.startswith("SIP/2.0 200") and "INVITE" in m.text:
            return sdp_body(m.text)
    return ""


def user_initiated(lab: Lab, folder: Path, mode: str, payload: str, route: str) -> LabCall:
    bundle = lab.bundle
    number = lab.sdes if mode == "SDES" else lab.dtls
    start = lab.fs_log_size()
    call = bundle.uic(number.business_number, payload=payload, hold_ms=HOLD_MS, duration_s=2,
                      folder=folder)
    meta, wacid = call.result, call.wacid
    record = _ended(bundle, wacid=wacid) if meta.exit_code == 0 else None
    freeswitch = lab.freeswitch_leg(start, _call_id(meta.trace))
    answer = _answer(meta.trace, sent=False)
    apps = executed(bundle.freeswitch.log, start, record.call_uuid) if record else []
    names = [app.split("(", 1)[0] for app in apps]
    # media settings, answer, silence first, then the route's own command (none for park). On a
    # DTLS call FreeSWITCH's answer completes once DTLS is up, which needs Meta's media (not
    # played yet), so there the silence and the route wait.
    in_order = (names[:3] == ["multiset", "answer", "playback"] and "silence_stream" in apps[2]
                if mode == "SDES" else names[:2] == ["multiset", "answer"])
    route_ran = route != IVR_ROUTE["name"] or any("tone_stream" in app for app in apps[3:])
    passed = (meta.passed and record is not None and record.route == route
              and record.srtp_mode == mode and record.hangup_cause == "NORMAL_CLEARING"
              and record.meta_duration_s == 2 and bool(freeswitch) and in_order and route_ran)
    notes = [f"FreeSWITCH answered {number.business_number} ({mode}): {describe_sdp(answer)}",
             "wa-esl had FreeSWITCH run: " + ", ".join(_short(app) for app in apps)
             + ("" if mode == "SDES" else " (the rest waits for DTLS media, which Meta's side "
                                          "does not send yet)")]
    if record is not None:
        notes.append(cdr_note(record))
        logged = _wa_esl_line(bundle, rf"uic {record.call_uuid} ended: .*")
        passed = passed and bool(logged)
        notes.append(f"wa-esl logged: {logged or '(no outcome line)'}")
    article = "an" if mode == "SDES" else "a"
    name = (f"user-initiated call to {article} {mode} number, digest-challenged, answered by "
            f"FreeSWITCH under wa-esl, route '{route}' (CTA payload '{payload}'), Meta hangs up")
    return LabCall(name, passed, uic_ladder(meta.trace, freeswitch), notes,
                   "" if passed else _why(meta, record, f"expected route {route}, SRTP {mode}"))


def _wa_esl_line(bundle: BundleLab, pattern: str) -> str:
    """The `wa-esl run` log line matching `pattern` (it follows the CDR by a moment), or ""."""
    if bundle.wa_esl is None:
        return ""
    try:
        return bundle.wa_esl.wait_for_line(pattern, 5)[0]
    except LabError:
        return ""


def _short(app: str) -> str:
    """multiset's long argument cut to its first variables."""
    return app if len(app) <= 70 else app[:67] + "...)"


def sdes_call(lab: Lab, folder: Path) -> LabCall:
    return user_initiated(lab, folder, "SDES", "lab-ivr-menu", "lab-ivr")


def dtls_call(lab: Lab, folder: Path) -> LabCall:
    return user_initiated(lab, folder, "DTLS", "order-1234", "catch-all")


def wrong_password(lab: Lab, folder: Path) -> LabCall:
    start = lab.fs_log_size()
    meta = lab.bundle.edge.meta_call("uic-wrong-password", password="not-the-meta-password",
                                     business_number=lab.sdes.business_number, folder=folder)
    # refused at the edge: nothing to wait for (the good calls around it show the trace works)
    freeswitch = lab.freeswitch_leg(start, _call_id(meta.trace), timeout=0)
    passed = meta.passed and not freeswitch
    return LabCall("user-initiated call with a wrong SIP password is refused at the edge, never "
                   "reaches FreeSWITCH", passed, uic_ladder(meta.trace, freeswitch), [],
                   "" if passed else _why(meta, None, f"FreeSWITCH saw {len(freeswitch)} messages"))


def business_initiated(lab: Lab, folder: Path, *, user_hangs_up: bool, dtls: bool = False,
                       force: bool = True) -> LabCall:
    bundle = lab.bundle
    assert bundle.edge.meta is not None
    number = lab.dtls if dtls else lab.sdes
    flow = "bic-meta-hangup" if user_hangs_up else "bic-answered-dtls" if dtls else "bic-answered"
    user = bundle.edge.whatsapp_user(flow, folder=folder)
    start = lab.fs_log_size()
    try:
        result = bundle.originate(number.business_number, WHATSAPP_USER, force=force)
        if result.call_uuid and not user_hangs_up:
            bundle.api(f"uuid_kill {result.call_uuid} NORMAL_CLEARING")  # the business hangs up
        user_code = user.wait(20) if result.call_uuid else -1
    finally:
        user.stop()
    record = _ended(bundle, call_uuid=result.call_uuid) if result.call_uuid else None
    fs_all = read_freeswitch_trace(bundle.freeswitch.log, start)
    call_id = _call_id([m for m in fs_all if m.sent and m.first_line.startswith("INVITE")])
    freeswitch = lab.freeswitch_leg(start, call_id)
    meta = bundle.edge.meta.events_for(call_id)
    invite = next((m for m in freeswitch if m.sent and m.first_line.startswith("INVITE")), None)
    digest_once = [e.detail.split()[1] for e in meta
                   if e.way == "recv" and e.first_line.startswith("INVITE")] == ["auth=no", "auth=yes"]
    expected_cause = "NORMAL_CLEARING"
    passed = (result.exit_code == 0 and user_code == 0 and digest_once and record is not None
              and record.hangup_cause == expected_cause and record.direction == "bic")
    notes = [f"wa-esl originate: {' '.join(result.output.split())}"]
    if invite is not None:
        notes.append(f"FreeSWITCH offered ({number.srtp_mode}): {describe_sdp(sdp_body(invite.text))}")
    notes.append(f"WhatsApp user answered: {describe_sdp(_answer(user.trace(), sent=True))}")
    if record is not None:
        notes.append(cdr_note(record))
    if not force:  # placed after pre-flight: the permission it went out under is shown
        shown = _permission_shown(bundle, record.call_uuid) if record is not None else ""
        notes.append(f"wa-esl call show: {shown or '(no permission line)'}")
        passed = passed and shown.startswith("permission: granted") and "webhook" in shown
    who = "the WhatsApp user" if user_hangs_up else "the business (FreeSWITCH)"
    name = (f"business-initiated call from {'a DTLS' if dtls else 'an SDES'} number by `wa-esl "
            f"originate` through FreeSWITCH's gateway, Meta's 407 answered by the edge, answered, "
            f"{who} hangs up")
    detail = "" if passed else (f"originate exit {result.exit_code}, WhatsApp user {user_code}, "
                                f"Meta saw {[e.first_line for e in meta]}, CDR {record}")
    offer = describe_sdp(sdp_body(invite.text)) if invite is not None else ""
    if dtls and not passed and offer and not offer.startswith("UDP/TLS/RTP/SAVPF"):
        detail = (f"FreeSWITCH offered {offer.split(',')[0]}, not Meta's UDP/TLS/RTP/SAVPF: this "
                  "FreeSWITCH lacks wa-sip's patch (patches/freeswitch/0001, for a build of your own: "
                  "README, 'FreeSWITCH patch'). " + detail)
    return LabCall(name, passed, bic_ladder(freeswitch, meta, user.trace()), notes, detail)


def _permission_shown(bundle: BundleLab, call_uuid: str) -> str:
    """The `permission:` line `wa-esl call show` prints for a call, or ""."""
    done = subprocess.run([*wa_esl_command(), "call", "show", call_uuid, "--config",
                           str(bundle.config_file)], capture_output=True, text=True, timeout=30,
                          check=False)
    return next((line.strip() for line in done.stdout.splitlines()
                 if line.strip().startswith("permission:")), "")


def business_hangs_up(lab: Lab, folder: Path) -> LabCall:
    return business_initiated(lab, folder, user_hangs_up=False)


def user_hangs_up(lab: Lab, folder: Path) -> LabCall:
    return business_initiated(lab, folder, user_hangs_up=True)


def dtls_business_hangs_up(lab: Lab, folder: Path) -> LabCall:
    """FreeSWITCH's WebRTC-style offer (UDP/TLS/RTP/SAVPF, actpass) as Meta asks for it."""
    return business_initiated(lab, folder, user_hangs_up=False, dtls=True)


def meta_refuses(lab: Lab, folder: Path) -> LabCall:
    """Meta's 486: the edge's X-WA-Diagnosis reaches wa-esl through sofia (sip_rh_)."""
    bundle = lab.bundle
    assert bundle.edge.meta is not None
    answer = META_ANSWERS_BY_FLOW["declined"]
    start = lab.fs_log_size()
    result = bundle.originate(lab.sdes.business_number, answer.called_number)
    fs_all = read_freeswitch_trace(bundle.freeswitch.log, start)
    call_id = _call_id([m for m in fs_all if m.sent and m.first_line.startswith("INVITE")])
    freeswitch = lab.freeswitch_leg(start, call_id)
    refusal = next((m for m in freeswitch if not m.sent and m.first_line.startswith("SIP/2.0 486")),
                   None)
    header = next((line for line in (refusal.text if refusal else "").split("\r\n")
                   if line.lower().startswith("x-wa-diagnosis:")), "")
    passed = (result.exit_code == 3 and f"{answer.diagnosis}:" in result.output
              and header.lower().startswith(f"x-wa-diagnosis: {answer.diagnosis}"))
    notes = [f"wa-esl originate (exit {result.exit_code}): {' '.join(result.output.split())}",
             f"the edge told FreeSWITCH: {header or '(no X-WA-Diagnosis)'}"]
    return LabCall(f"business-initiated call Meta refuses ({answer.status} {answer.reason}): the "
                   "edge's diagnosis reaches `wa-esl originate`", passed,
                   bic_ladder(freeswitch, bundle.edge.meta.events_for(call_id), []), notes,
                   "" if passed else f"expected exit 3 and diagnosis {answer.diagnosis}")


def _ended(bundle: BundleLab, **which: Any) -> CallRecord | None:
    try:
        return bundle.cdr(**which)
    except LabError:
        return None


def _why(meta: SippResult, record: CallRecord | None, expected: str) -> str:
    if not meta.passed:
        return meta.errors.strip() or f"SIPp exit code {meta.exit_code}, out of script: " \
                                      f"{meta.out_of_script()}"
    return f"{expected}; CDR: {record}"


CALLS: list[Callable[[Lab, Path], LabCall]] = [sdes_call, dtls_call, wrong_password,
                                               business_hangs_up, user_hangs_up,
                                               dtls_business_hangs_up, meta_refuses]
COUNTED_AS: dict[Callable[[Lab, Path], LabCall], tuple[str, str]] = {
    sdes_call: ("uic", "answered"), dtls_call: ("uic", "answered"),
    business_hangs_up: ("bic", "answered"), user_hangs_up: ("bic", "answered"),
    dtls_business_hangs_up: ("bic", "answered"),
    meta_refuses: ("bic", "declined"),
}
"""(direction, outcome) each passed call must add to both endpoints' calls_total (the wrong
password ends in a challenge, no outcome)."""
FREESWITCH_CALLS = len(CALLS) + len(MEDIA_CALLS) + 1
"""The calls that need FreeSWITCH (the call-permission section's placed call is the last):
skipped, and counted as skipped, where there is none."""


def freeswitch_calls() -> int:
    """FREESWITCH_CALLS and, where rtpengine is installed, the rtpengine-with-FreeSWITCH
    section's media calls."""
    return FREESWITCH_CALLS + (len(MEDIA_CALLS) if shutil.which("rtpengine") else 0)

PATCH_ONLY: dict[Callable[[Lab, Path], LabCall], str] = {
    dtls_business_hangs_up: "business-initiated call from a DTLS number by `wa-esl originate` "
                            "through FreeSWITCH's gateway (FreeSWITCH's own DTLS offer)"}
"""The calls (besides the DTLS media calls) that need patches/freeswitch/0001."""


def stock_reason() -> str:
    """Why the DTLS-straight-to-FreeSWITCH calls are skipped, or "" on a patched build."""
    binary = freeswitch_binary()
    if is_patched(binary):
        return ""
    return (f"{binary} is stock: DTLS straight to FreeSWITCH needs patches/freeswitch/0001 (stock "
            "FreeSWITCH offers RTP/SAVPF and sends no DTLS ClientHello to Meta's ICE-lite media; "
            "README, 'FreeSWITCH patch'); the rtpengine-with-FreeSWITCH section carries DTLS on stock")


def skipped_call(name: str, reason: str) -> LabCall:
    print(f"\n[SKIP] {name}\n  why: {reason}")
    return LabCall(name, False, [], skipped=reason)


# ---- set-up ---------------------------------------------------------------------------------


def lab_overrides(config_path: Path) -> tuple[dict[str, Any], list[str]]:
    """Numbers of both SRTP modes and the IVR route, added to the user's config; what was added."""
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise LabError(f"{config_path}: {error}") from None
    numbers = list(raw.get("numbers", []))
    added = []
    for mode, (number, number_id) in LAB_NUMBERS.items():
        if not any(n.get("srtp_mode", "DTLS") == mode for n in numbers):
            numbers.append({"business_number": number, "phone_number_id": number_id,
                            "srtp_mode": mode})
            added.append(f"{number} ({mode})")
    media_numbers, media_routes = media_overrides()
    numbers += media_numbers
    added += [f"{n['business_number']} ({n['srtp_mode']}, media calls)" for n in media_numbers]
    routes = [IVR_ROUTE, *media_routes, *raw.get("esl", {}).get("routes", [])]
    return {"numbers": numbers, "esl": {"routes": routes}}, added


def describe(bundle: BundleLab, added: list[str]) -> list[str]:
    config: SiteConfig = bundle.config
    fs = bundle.freeswitch
    numbers = ", ".join(f"{n.business_number} ({n.srtp_mode})" for n in config.numbers)
    return [
        f"lab: Kamailio edge: TLS 127.0.0.1:{bundle.edge.ports.tls} (domain "
        f"{config.site.sip_domain}), internal UDP 127.0.0.1:{bundle.edge.ports.internal}",
        f"lab: FreeSWITCH ({fs.argv()[0]}): profile wa-edge on 127.0.0.1:{fs.sip_port}, "
        f"Event Socket 127.0.0.1:{fs.esl_port}, config rendered to {fs.conf}",
        f"lab: wa-esl run --config {bundle.config_file} (socket server "
        f"127.0.0.1:{config.esl.listen.port}, CDRs {config.esl.cdr_db})",
        f"lab: Meta stand-in (wa.meta.vc) on TLS 127.0.0.1:{bundle.edge.ports.meta.public}",
        f"lab: numbers {numbers}" + (f"; added by the lab: {', '.join(added)}" if added else "")
        + f"; route '{IVR_ROUTE['name']}' (IVR-style tone) added first",
    ]


def metrics_check(bundle: BundleLab, expected: Expected) -> LabCall:
    """Both /metrics endpoints scraped after the calls, as Prometheus would (lab/metrics_summary)."""
    esl_listen = bundle.config.esl.metrics_listen
    summary = summarize(f"http://127.0.0.1:{bundle.edge.ports.metrics}/metrics",
                        f"http://{esl_listen}/metrics" if esl_listen else None, expected)
    print(f"\n[{'PASS' if summary.passed else 'FAIL'}] metrics scraped from the edge and wa-esl "
          "match the calls placed")
    for line in summary.lines:
        print(f"  = {line}")
    for problem in summary.problems:
        print(f"  why: {problem}")
    return LabCall("metrics summary", summary.passed, [], summary.lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG,
                        help="site config to rehearse (moved onto loopback); default: the example")
    parser.add_argument("--keep", action="store_true",
                        help="keep the lab folder (logs, traces, rendered config, CDRs) afterwards")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-lab-"))
    missing = freeswitch_missing()
    try:
        print(f"lab: config {args.config}, scratch folder {folder}")
        if missing is None:
            stock = stock_reason()
            results, freeswitch_ran = with_freeswitch(args.config, folder, stock)
            anchored = anchored_media(args.config, folder)
            results += anchored
            freeswitch_ran += len(anchored)
            freeswitch_line = (f"lab: FreeSWITCH calls: {freeswitch_ran} ran, "
                               f"{freeswitch_calls() - freeswitch_ran} skipped (FreeSWITCH "
                               f"{freeswitch_version()} at {freeswitch_binary()}"
                               + (", stock: the DTLS calls straight to it need "
                                  "patches/freeswitch/0001)" if stock else ")"))
        else:
            print(freeswitch_absent_line(missing, freeswitch_calls()))
            results = edge_only(args.config, folder)
            results += permissions_only(folder)
            freeswitch_line = (f"lab: FreeSWITCH calls: 0 ran, {freeswitch_calls()} skipped "
                               "(no FreeSWITCH installed)")
        results += rtpengine_media(args.config, folder)
    finally:
        if args.keep:
            print(f"lab: kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    passed = sum(r.passed for r in results)
    failed = sum(not r.passed and not r.skipped for r in results)
    print(freeswitch_line)
    print(f"lab: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def anchored_media(config: Path, folder: Path) -> list[LabCall]:
    """The four media calls through a bundle with [media] anchor = "rtpengine": Meta's media
    on rtpengine, FreeSWITCH on plain RTP (a stock FreeSWITCH carries DTLS calls this way), a
    DTMF digit each way on each call (RFC 4733 at WhatsApp, a DTMF event at FreeSWITCH)."""
    if shutil.which("rtpengine") is None:
        print("\nlab: rtpengine-with-FreeSWITCH section skipped: no rtpengine installed "
              "(Debian's rtpengine-daemon; make lab installs it)")
        return []
    results: list[LabCall] = []
    try:
        overrides, _ = lab_overrides(config)
        with BundleLab(folder / "anchored", config_path=config,
                       overrides=merge(overrides, {"media": {"anchor": "rtpengine"}})) as bundle:
            print(f"\nlab: rtpengine-with-FreeSWITCH section: [media] anchor = \"rtpengine\", "
                  f"rtpengine on {bundle.config.media.rtpengine.ng_listen}; WhatsApp's media "
                  "(lab/media's peer, 1000 Hz) on rtpengine, FreeSWITCH on plain RTP playing 440 Hz; "
                  "one DTMF digit each way")
            for index, (who, mode) in enumerate(MEDIA_CALLS, 1):
                call_folder = folder / f"anchored-{index}"
                call_folder.mkdir()
                outcome = media_call(bundle, who, mode, call_folder, dtmf=True)
                result = LabCall(f"rtpengine + FreeSWITCH: {outcome.name}", outcome.passed, [],
                                 outcome.notes, outcome.detail)
                results.append(result)
                print(f"\n[{'PASS' if result.passed else 'FAIL'}] {result.name}")
                for note in result.notes:
                    print(f"  {note}" if note.startswith("media:") else f"  = {note}")
                if result.detail:
                    print(f"  why: {result.detail}")
    except (LabError, ConfigError, RenderError) as error:
        print(f"lab: rtpengine-with-FreeSWITCH section cannot run: {error}", file=sys.stderr)
        results.append(LabCall("rtpengine-with-FreeSWITCH section set-up", False, []))
    return results


def edge_only(config: Path, folder: Path) -> list[LabCall]:
    """No FreeSWITCH: the edge-only section (lab/edge_only_section.py), the business side
    played by SIPp."""
    try:
        calls = run_edge_only(folder, config)
    except (LabError, ConfigError, RenderError) as error:
        print(f"lab: cannot run: {error}", file=sys.stderr)
        return [LabCall("lab set-up", False, [])]
    return [LabCall(c.name, c.passed, c.ladder, c.notes, c.detail) for c in calls]


def rtpengine_media(config: Path, folder: Path) -> list[LabCall]:
    """The four media flows with rtpengine as the anchor (lab/rtpengine_section.py), the
    business on plain RTP: on every machine, FreeSWITCH or not."""
    try:
        calls = run_rtpengine_media(folder, config)
    except (ConfigError, RenderError) as error:
        print(f"lab: rtpengine section cannot run: {error}", file=sys.stderr)
        return [LabCall("rtpengine section set-up", False, [])]
    return [LabCall(c.name, c.passed, [], c.notes, c.detail) for c in calls]


def _lab_call(step: PermissionStep) -> LabCall:
    return LabCall(step.name, step.passed, [], step.notes, step.detail)


def permissions_only(folder: Path) -> list[LabCall]:
    """No FreeSWITCH: the call-permission section on its own site config, the placed call
    skipped."""
    try:
        steps = run_without_freeswitch(folder / "permission",
                                       "skipped, no FreeSWITCH installed (see the first lines)")
    except (LabError, OSError) as error:
        print(f"lab: call-permission section cannot run: {error}", file=sys.stderr)
        return [LabCall("call-permission section set-up", False, [])]
    return [_lab_call(step) for step in steps]


def permission_section(lab: Lab, permissions: PermissionLab, folder: Path,
                       expected: Expected) -> list[LabCall]:
    """The call-permission section on the running bundle, its last call placed for real."""
    bundle = lab.bundle
    number = lab.sdes
    permissions.serve({n.phone_number_id: n.business_number for n in bundle.config.numbers})
    print(section_line(number.business_number, PERMISSION_USER))
    database = bundle.config.esl.cdr_db
    assert isinstance(database, Path), "the lab's bundle keeps its CDRs in SQLite"
    steps = permission_steps(permissions, bundle.config_file, number.business_number,
                             number.phone_number_id, database)
    for step in steps:
        print_step(step)
    call_folder = folder / "call-permission"
    call_folder.mkdir()
    placed = business_initiated(lab, call_folder, user_hangs_up=False, force=False)
    placed.name = PLACED_NAME
    print_call(placed)
    if placed.passed:
        expected[("bic", "answered")] += 1
    return [*(_lab_call(step) for step in steps), placed]


def print_call(result: LabCall) -> None:
    print(f"\n[{'PASS' if result.passed else 'FAIL'}] {result.name}")
    print("\n".join(result.ladder))
    for note in result.notes:
        print(f"  = {note}")
    if result.detail:
        print(f"  why: {result.detail}")


def with_freeswitch(config: Path, folder: Path, stock: str = "") -> tuple[list[LabCall], int]:
    """The whole bundle, FreeSWITCH and wa-esl included; the results and how many FreeSWITCH
    calls were placed. `stock` (stock_reason) skips the calls that need the patch."""
    results: list[LabCall] = []
    ran = 0
    try:
        overrides, added = lab_overrides(config)
        permissions = PermissionLab(folder / "permission")
        with permissions, BundleLab(folder, config_path=config,
                                    overrides=merge(overrides, permissions.overrides())) as bundle:
            for command in TRACE_COMMANDS:
                bundle.api(command)
            print("\n".join(describe(bundle, added)))
            lab = Lab(bundle)
            expected: Expected = Counter()
            for index, play in enumerate(CALLS, 1):
                if stock and play in PATCH_ONLY:
                    results.append(skipped_call(PATCH_ONLY[play], stock))
                    continue
                call_folder = folder / f"call-{index}"
                call_folder.mkdir()
                result = play(lab, call_folder)
                results.append(result)
                ran += 1
                print_call(result)
                if result.passed and play in COUNTED_AS:
                    expected[COUNTED_AS[play]] += 1
            print("\nlab: media section: WhatsApp's media played by lab/media's peer (1000 Hz), "
                  "FreeSWITCH playing 440 Hz")
            for index, (who, mode) in enumerate(MEDIA_CALLS, len(CALLS) + 1):
                if stock and mode == "DTLS":
                    results.append(skipped_call(f"media: {who}-initiated DTLS call", stock))
                    continue
                call_folder = folder / f"call-{index}"
                call_folder.mkdir()
                outcome = media_call(bundle, who, mode, call_folder)
                results.append(LabCall(outcome.name, outcome.passed, [], outcome.notes,
                                       outcome.detail))
                ran += 1
                print(f"\n[{'PASS' if outcome.passed else 'FAIL'}] {outcome.name}")
                for note in outcome.notes:
                    print(f"  {note}" if note.startswith("media:") else f"  = {note}")
                if outcome.detail:
                    print(f"  why: {outcome.detail}")
                if outcome.answered:
                    expected[("uic" if who == "user" else "bic", "answered")] += 1
            results += permission_section(lab, permissions, folder, expected)
            ran += 1
            results.append(metrics_check(bundle, expected))
    except (LabError, ConfigError) as error:
        print(f"lab: cannot run: {error}", file=sys.stderr)
        results.append(LabCall("lab set-up", False, []))
    return results, ran


if __name__ == "__main__":
    sys.exit(main())

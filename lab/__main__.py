"""`make lab`: place real calls through a real Kamailio edge on loopback and show what happened.

User-initiated: Meta is played by SIPp behind stunnel (TLS, a test CA made at run time),
FreeSWITCH by a SIPp UAS. Business-initiated: FreeSWITCH is a SIPp UAC, Meta's edge a second
Kamailio behind stunnel with a `wa.meta.vc` certificate (it challenges with 407 and checks the
digest and From rules), the WhatsApp user a SIPp UAS behind it. Every process started here is
stopped before the command returns. The last line is `lab: N passed, M failed`; the exit code is
1 when a call failed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.edge import EXAMPLE_CONFIG, EdgeLab
from lab.meta_standin import StandinEvent
from lab.processes import LabError
from lab.sipp import SippResult, TracedMessage, start_sipp_server
from provisioning.config import ConfigError


@dataclass
class LabCall:
    name: str
    passed: bool
    ladder: list[str]
    detail: str = ""


def ladder(meta: list[TracedMessage], freeswitch: list[TracedMessage]) -> list[str]:
    """One line per message, in time order, with an arrow showing who sent it to whom."""
    rows = [(m.time, f"Meta        {'──▶' if m.sent else '◀──'} edge        {m.first_line}")
            for m in meta]
    rows += [(m.time, f"edge        {'◀──' if m.sent else '──▶'} FreeSWITCH  {m.first_line}")
             for m in freeswitch]
    return [f"  {time}  {text}" for time, text in sorted(rows)]


def bic_ladder(freeswitch: list[TracedMessage], meta: list[StandinEvent],
               whatsapp: list[TracedMessage]) -> list[str]:
    """The three legs of a business-initiated call, in time order."""
    rows = [(m.time, f"FreeSWITCH  {'──▶' if m.sent else '◀──'} edge        {m.first_line}")
            for m in freeswitch]
    rows += [(e.time, f"edge        {'──▶' if e.way == 'recv' else '◀──'} Meta        "
                      f"{e.first_line}  [{e.detail.rsplit(' call=', 1)[0]}]")
             for e in meta if "side=user" not in e.detail and e.way != "auth"]
    rows += [(m.time, f"Meta        {'◀──' if m.sent else '──▶'} WhatsApp    {m.first_line}")
             for m in whatsapp]
    return [f"  {time}  {text}" for time, text in sorted(rows)]


def business_initiated_call(edge: EdgeLab, folder: Path) -> LabCall:
    assert edge.meta is not None
    user = edge.whatsapp_user("bic-answered", folder=folder)
    try:
        fs = edge.freeswitch_call("bic-answered", dialed="00 1 (555) 012-3456".replace(" ", "%20"),
                                  folder=folder)
        user_code = user.wait(15) if fs.passed else -1
    finally:
        user.stop()
    call_id = next((m.text.split("Call-ID: ", 1)[1].split("\r\n", 1)[0] for m in fs.trace
                    if "Call-ID: " in m.text), "")
    meta = edge.meta.events_for(call_id)
    digest_once = [e.detail.split()[1] for e in meta
                   if e.way == "recv" and e.first_line.startswith("INVITE")] == ["auth=no", "auth=yes"]
    passed = fs.passed and user_code == 0 and digest_once
    detail = "" if passed else (fs.errors.strip() or f"SIPp exit {fs.exit_code}, WhatsApp user "
                                f"{user_code}, Meta saw {[e.first_line for e in meta]}")
    return LabCall("business-initiated call, agent-typed number, Meta's 407 answered, re-INVITE "
                   "and REFER refused locally, FreeSWITCH hangs up",
                   passed, bic_ladder(fs.trace, meta, user.trace()), detail)


def answered_call(edge: EdgeLab, folder: Path) -> LabCall:
    fs = start_sipp_server("uic-answered", "freeswitch", folder, edge.ports.freeswitch[0])
    try:
        meta = edge.meta_call("uic-answered", folder=folder)
        fs_code = fs.wait(15) if meta.passed else -1
    finally:
        fs.stop()
    passed = meta.passed and fs_code == 0
    return LabCall("user-initiated call, digest-challenged, answered, Meta hangs up",
                   passed, ladder(meta.trace, fs.trace()), _detail(meta, passed))


def wrong_password(edge: EdgeLab, folder: Path) -> LabCall:
    meta = edge.meta_call("uic-wrong-password", password="not-the-meta-password", folder=folder)
    return LabCall("user-initiated call with a wrong SIP password is refused, never relayed",
                   meta.passed, ladder(meta.trace, []), _detail(meta, meta.passed))


def _detail(meta: SippResult, passed: bool) -> str:
    return "" if passed else (meta.errors.strip() or f"SIPp exit code {meta.exit_code}")


CALLS: list[Callable[[EdgeLab, Path], LabCall]] = [answered_call, wrong_password,
                                                    business_initiated_call]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make lab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG,
                        help="site config to rehearse (moved onto loopback); default: the example")
    parser.add_argument("--keep", action="store_true",
                        help="keep the lab folder (logs, traces, rendered config) afterwards")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-lab-"))
    results: list[LabCall] = []
    try:
        print(f"lab: config {args.config}, scratch folder {folder}")
        with EdgeLab(folder, config_path=args.config, meta_standin=True) as edge:
            print(f"lab: Kamailio edge up: TLS 127.0.0.1:{edge.ports.tls} "
                  f"(domain {edge.config.site.sip_domain}), internal UDP "
                  f"127.0.0.1:{edge.ports.internal}; Meta stand-in (wa.meta.vc) on TLS "
                  f"127.0.0.1:{edge.ports.meta.public}")
            for index, play in enumerate(CALLS, 1):
                call_folder = folder / f"call-{index}"
                call_folder.mkdir()
                result = play(edge, call_folder)
                results.append(result)
                print(f"\n[{'PASS' if result.passed else 'FAIL'}] {result.name}")
                print("\n".join(result.ladder))
                if result.detail:
                    print(f"  why: {result.detail}")
    except (LabError, ConfigError) as error:
        print(f"lab: cannot run: {error}", file=sys.stderr)
        results.append(LabCall("lab set-up", False, []))
    finally:
        if args.keep:
            print(f"lab: kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    passed = sum(r.passed for r in results)
    print(f"lab: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())

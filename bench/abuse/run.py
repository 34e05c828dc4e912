"""Bench: a loopback edge under the long attack run of issue 10 ("Keep it fixed").

One edge (examples/site.toml moved onto loopback, the product's log level and limits), one
FreeSWITCH played twice: a SIPp UAS on the first dispatcher node answers the legitimate calls,
and a silent UDP sink (lab/attack/freeswitch_sink.py) on the second node and two spare ports
records anything else the edge relays. Meta's legitimate calls (SIPp through stunnel, digest
answered) run one after another from 127.0.0.1 the whole time; attackers use 127.0.0.2 and up.

Phases, each bounded in count and time:
  1. reference: one legitimate call on the idle edge (its duration, shm free, log size);
  2. SIP fuzz over UDP (untrusted sources to the internal socket), then over TLS (Meta's
     socket): mutated INVITE/BYE/REGISTER/OPTIONS/... with invalid UTF-8, forged To-tags and
     Routes toward FreeSWITCH ports, bad digests (lab/attack/sip_fuzz.py);
  3. TLS abuse: idle connections from several sources, garbage, CRLF-only and unfinished
     messages, raw half-open TCP (lab/attack/tls_hold.py);
  4. a 10-s flood of well-formed INVITE/OPTIONS from one source: over TLS as fast as one
     connection goes, over UDP at --udp-flood-rate (10 x pike's limit; the internal socket is
     not on the Internet, and an unpaced UDP flood starves FreeSWITCH's replies on it whatever
     the script does: firewall it);
  5. the TLS scan, 8 clients (lab/attack/tls_scan.py).
Then a last legitimate call on the quiet edge, and:
  6. the many-source idle-connection attack (bench/abuse/idle_sources.py), on an edge of its
     own inside network namespaces the bench creates (the admission rules `provision render`
     writes are loaded there, never in the host's tables): 450 idle TLS connections from 200
     sources, re-opened as the edge closes them, while Meta places calls from inside its
     configured ranges; with the rules, then without them (the reference). Skipped, with the
     reason, without root, ip or nft.
The last line printed is ``RESULT crashes=<n> relayed_unauthenticated=<n> tracebacks=<n>
legit_calls_failed=<n> shm_free_min_mb=<x> log_mb=<x> idle_sources=<n> idle_conns_held=<n>
meta_calls_during_idle=<ok>/<n> meta_calls_without_admission=<ok>/<n>
meta_call_max_s_during_idle=<s> meta_call_max_s_without_admission=<s>``: Kamailio (and HAProxy)
processes lost or respawned, requests that reached FreeSWITCH without being a legitimate call,
Python tracebacks in the log, legitimate calls that failed (Meta's calls during the idle attack
with admission included), the least shared memory free seen, what the run wrote to the log;
then the idle phase: sources, attacker connections held while Meta called, Meta's calls that
connected with and without the rules, and the slowest of them. The exit code is 1 when any of
the first four is not 0 or the idle phase failed to run (skipped is not a failure, nor is the
reference's count: it shows what admission buys).

    make bench-abuse                     # ~3 minutes
    .venv/bin/python -m bench.abuse.run --help
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.attack.edge_watch import (
    MB,
    ShmWatch,
    count_tracebacks,
    kamailio_pids,
    log_problems,
    shm_free,
)
from lab.attack.freeswitch_sink import FreeswitchSink
from lab.attack.sip_fuzz import (
    FuzzContext,
    SendReport,
    TlsSender,
    flood_messages,
    mutated_messages,
    send_udp,
)
from lab.attack.targets import attacker_sources, loopback_target
from lab.attack.tls_hold import IdleFlood, hold_idle_connections, open_raw_connections
from lab.attack.tls_scan import ScanSettings, scan
from lab.edge import EdgeLab
from lab.processes import LabError, free_port
from lab.sipp import start_sipp_server
from provisioning.kamailio_binary import KamailioNotFound, kamailio_binary
from provisioning.kamailio_rpc import RpcError

from . import idle_sources
from .relayed import call_ids, relayed_to_sipp


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


@dataclass
class LegitCalls:
    """Meta's legitimate calls, one after another in a background thread until stopped."""

    edge: EdgeLab
    folder: Path
    passed: int = 0
    failed: int = 0
    durations: list[float] = field(default_factory=list)
    call_ids: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="legit-calls", daemon=True)

    def one(self, tag: str) -> bool:
        folder = self.folder / tag
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            result = self.edge.meta_call("uic-answered", folder=folder, timeout_s=30)
        except LabError as error:
            self.failed += 1
            self.failures.append(f"{tag}: {error}")
            return False
        self.call_ids |= call_ids(result.messages)
        if result.passed:
            self.passed += 1
            self.durations.append(time.monotonic() - started)
        else:
            self.failed += 1
            self.failures.append(f"{tag}: {result.errors.strip()[:300]}")
        return result.passed

    def _run(self) -> None:
        serial = 0
        while not self._stop.is_set():
            serial += 1
            self.one(f"during-{serial:03d}")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def log_size(edge: EdgeLab) -> int:
    path = edge.folder / "kamailio.log"
    return path.stat().st_size if path.exists() else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Long attack run against a loopback edge.")
    parser.add_argument("--udp-messages", type=int, default=12000)
    parser.add_argument("--tls-messages", type=int, default=12000)
    parser.add_argument("--fuzz-rate", type=float, default=500.0, help="messages/s")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument("--udp-flood-rate", type=float, default=1000.0,
                        help="datagrams/s of the UDP part of the flood (the TLS part is unpaced)")
    parser.add_argument("--scan-seconds", type=float, default=45.0)
    parser.add_argument("--abuse-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=10)
    idle_sources.add_arguments(parser, prefix="idle-")
    parser.add_argument("--keep", type=Path, help="keep the run folder (logs) here")
    args = parser.parse_args(argv)
    try:
        kamailio_binary()
    except KamailioNotFound as error:
        print(f"bench-abuse: {error}", file=sys.stderr)
        return 2
    # SIGTERM unwinds like Ctrl-C: edges, namespaces and their processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            return run(args, args.keep)
        with tempfile.TemporaryDirectory(prefix="wa-sip-abuse-") as scratch:
            return run(args, Path(scratch))
    except KeyboardInterrupt:  # every edge, namespace and process is stopped by now
        print("bench-abuse: interrupted", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, folder: Path) -> int:
    started = time.monotonic()
    # the direct path (no rtpengine): the abuse is aimed at the edge's SIP and TLS sides
    with EdgeLab(folder / "edge", {"media": {"anchor": "freeswitch"}}) as edge:
        node1, node2 = edge.ports.freeswitch
        spare = (free_port(), free_port())
        fs = start_sipp_server("uic-answered", "freeswitch", folder, node1, calls=10000,
                               timeout_s=600)
        ctx = FuzzContext(edge.config.site.sip_domain, edge.config.numbers[0].business_number,
                          edge.ports.tls, edge.ports.internal, (node1, node2, *spare))
        tls_target = loopback_target("127.0.0.1", edge.ports.tls)
        udp_target = loopback_target("127.0.0.1", edge.ports.internal)
        pids = kamailio_pids(edge.rpc_socket)
        calls = LegitCalls(edge, folder / "calls")
        with FreeswitchSink((node2, *spare)) as sink, ShmWatch(edge.rpc_socket, 0.5) as shm:
            say(f"edge up: {len(pids)} Kamailio processes, shm free "
                f"{shm_free(edge.rpc_socket) / MB:.1f} MB, FreeSWITCH SIPp on {node1}, "
                f"sink on {node2} {spare[0]} {spare[1]}")
            log_start = log_size(edge)
            reference_ok = calls.one("reference")
            reference = calls.durations[0] if reference_ok else float("nan")
            say(f"reference legitimate call on the idle edge: {reference:.2f} s "
                f"({'passed' if reference_ok else 'FAILED'})")
            calls.start()
            phase_logs: dict[str, float] = {}

            def phase(name: str, work: Callable[[], None]) -> None:
                before = log_size(edge)
                t0 = time.monotonic()
                work()
                phase_logs[name] = (log_size(edge) - before) / MB
                say(f"{name}: done in {time.monotonic() - t0:.1f} s, log +{phase_logs[name]:.2f} MB, "
                    f"legit calls {calls.passed} passed / {calls.failed} failed, "
                    f"relayed so far {len(sink.relayed())}")

            def fuzz_udp() -> None:
                sources = attacker_sources(60, first=2)
                report = send_udp(
                    udp_target, mutated_messages(ctx, args.udp_messages, args.seed), sources,
                    time_limit_s=args.udp_messages / args.fuzz_rate * 2 + 10,
                    rate_per_s=args.fuzz_rate,
                    on_progress=lambda r: say(f"  udp fuzz: {r.sent} sent, {r.replies} replies"))
                say(f"  udp fuzz: {report.sent} sent in {report.seconds:.1f} s, {report.replies} "
                    f"replies {dict(sorted(report.statuses.items()))}")

            def fuzz_tls() -> None:
                sender = TlsSender(tls_target, attacker_sources(60, first=70))
                report = sender.send(
                    mutated_messages(ctx, args.tls_messages, args.seed + 1),
                    time_limit_s=args.tls_messages / args.fuzz_rate * 2 + 10,
                    rate_per_s=args.fuzz_rate,
                    on_progress=lambda r: say(f"  tls fuzz: {r.sent} sent, {r.replies} replies, "
                                              f"{r.reconnects} connections"))
                say(f"  tls fuzz: {report.sent} sent in {report.seconds:.1f} s, {report.replies} "
                    f"replies, {report.reconnects} connections, {report.failed} failed sends "
                    f"{dict(sorted(report.statuses.items()))}")

            def tls_abuse() -> None:
                sources = attacker_sources(6, first=140)
                limit = edge.config.security.connections
                with IdleFlood(tls_target, sources[:4], attempt_limit=20000,
                               time_limit_s=args.abuse_seconds,
                               per_source_attempts=limit.per_source + 8) as flood:
                    raw = open_raw_connections(tls_target, sources[4], limit.per_source)
                    kinds = {"garbage": bytes(range(1, 256)) * 4, "crlf": b"\r\n\r\n",
                             "unfinished": b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TLS x\r\n"}
                    for name, data in kinds.items():
                        with hold_idle_connections(tls_target, [sources[5]], 8, 10, data) as held:
                            say(f"  tls abuse: {name}: {held.attempts - held.refused} held")
                    peak = 0
                    deadline = time.monotonic() + args.abuse_seconds
                    while flood.running and time.monotonic() < deadline:
                        peak = max(peak, flood.held.alive())
                        time.sleep(0.5)
                    for sock in raw:
                        sock.close()
                say(f"  tls abuse: idle flood {flood.held.attempts} attempts, {flood.held.refused} "
                    f"refused, at most {peak} held at once (limit {len(sources[:4])} x "
                    f"{limit.per_source}), {len(raw)} raw half-open")

            def flood() -> None:
                source = attacker_sources(1, first=200)
                count = int(args.flood_seconds * 100000)  # the time bound ends it first
                results: list[SendReport] = []

                def udp_flood() -> None:
                    results.append(send_udp(udp_target, flood_messages(ctx, count), source,
                                            args.flood_seconds, args.udp_flood_rate))

                udp = threading.Thread(target=udp_flood, name="udp-flood")
                udp.start()
                tls = TlsSender(tls_target, attacker_sources(1, first=201)).send(
                    flood_messages(ctx, count, seed=21), args.flood_seconds)
                udp.join(args.flood_seconds + 30)
                sent = results[0].sent if results else 0
                replies = results[0].replies if results else 0
                say(f"  flood: udp {sent} sent ({sent / args.flood_seconds:.0f}/s), "
                    f"{replies} replies; tls {tls.sent} sent "
                    f"({tls.sent / args.flood_seconds:.0f}/s), {tls.replies} replies")

            def tls_scan() -> None:
                scanner = edge.ca.issue("scanner", ["scanner.invalid"])
                report = scan(ScanSettings(tls_target, scanner.certificate, scanner.private_key),
                              clients=8, seconds=args.scan_seconds,
                              progress=lambda r: None)
                say(f"  scan: {report.attempts} attempts in {report.seconds:.1f} s "
                    f"({report.attempts / max(report.seconds, 0.1):.0f}/s); "
                    + ", ".join(f"{k} {v}" for k, v in sorted(report.by_probe().items())))

            phase("sip fuzz over UDP", fuzz_udp)
            phase("sip fuzz over TLS", fuzz_tls)
            phase("TLS abuse", tls_abuse)
            phase(f"{args.flood_seconds:g}-s flood", flood)
            phase("TLS scan", tls_scan)
            calls.stop()
            time.sleep(2)
            final_ok = calls.one("final")
            say(f"last legitimate call on the quiet edge: {'passed' if final_ok else 'FAILED'}")
            relayed = sink.relayed()

        fs.stop()
        relayed_fs = relayed_to_sipp(fs, calls.call_ids)
        try:
            after = kamailio_pids(edge.rpc_socket)
        except RpcError:
            after = {}
        # every Kamailio process that is gone (or was replaced) counts; no RPC = all gone
        crashes = len([pid for pid in pids if pid not in after])
        text = edge.kamailio_log()
        problems = [line for line in log_problems(text) if "Traceback" not in line]
        tracebacks = count_tracebacks(text)
        log_mb = (log_size(edge) - log_start) / MB

    say(f"legitimate calls: {calls.passed} passed, {calls.failed} failed; reference duration "
        f"{reference:.2f} s, during the attacks median "
        f"{sorted(calls.durations)[len(calls.durations) // 2]:.2f} s" if calls.durations else
        "legitimate calls: none passed")
    for failure in calls.failures[:5]:
        say(f"  failed: {failure}")
    say(f"relayed without authentication: {len(relayed)} to the sink, {len(relayed_fs)} to "
        f"the FreeSWITCH SIPp")
    for request in relayed[:5]:
        say(f"  port {request.port}: {request.first_line[:90]} (X-WA-Auth: {request.wa_auth})")
    for line in relayed_fs[:3]:
        say(f"  FreeSWITCH SIPp: {line[:90]}")
    say(f"log: {log_mb:.2f} MB in all; per phase "
        + ", ".join(f"{k} {v:.2f}" for k, v in phase_logs.items()))
    say(f"BUG/CRITICAL lines: {len(problems)} (per-source refusals not counted); "
        f"tracebacks: {tracebacks}; shm free at start {shm.samples[0] / MB if shm.samples else 0:.1f}"
        f" MB, lowest {shm.minimum / MB:.1f} MB; {shm.failed_samples} unanswered RPC samples")
    for line in problems[:5]:
        say(f"  {line[:160]}")

    say("many-source idle connections, in network namespaces of the bench's own:")
    t0 = time.monotonic()
    idle = idle_sources.run_phase(idle_sources.settings_from(args, "idle-"), folder / "idle", say)
    for line in idle_sources.summary(idle):
        say(line)
    say(f"many-source idle connections: {idle.status} in {time.monotonic() - t0:.1f} s")
    say(f"run took {time.monotonic() - started:.0f} s")
    crashes += idle.crashes
    tracebacks += idle.tracebacks
    legit_failed = calls.failed + idle.meta_calls_failed
    relayed_total = len(relayed) + len(relayed_fs) + idle.relayed
    print(f"RESULT crashes={crashes} relayed_unauthenticated={relayed_total} "
          f"tracebacks={tracebacks} legit_calls_failed={legit_failed} "
          f"shm_free_min_mb={shm.minimum / MB:.1f} log_mb={log_mb:.1f} {idle.result_keys()}",
          flush=True)
    failed = crashes or relayed_total or tracebacks or legit_failed or idle.status == "error"
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

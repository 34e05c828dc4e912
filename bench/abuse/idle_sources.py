"""bench-abuse phase: the many-source idle-connection attack, with and without admission.

Hundreds of idle TLS connections spread over 200 source addresses, each far under the
per-source limits, held (re-opened as the edge closes them) while Meta places calls: the real
edge flow, INVITE, 407 digest challenge, INVITE with the answer, 200, ACK, BYE, from an address
inside the configured Meta ranges. Twice in one run, on one edge: with the admission rules that
`provision render` writes (OUT/nftables/wa-sip.nft, `render_nftables`, loaded with `nft -f`),
then with none loaded, only the edge's own caps (HAProxy's maxconn on 5.6, Kamailio's
tcp_max_connections on 6.x): the reference, which shows what admission buys.

The rules may only be loaded where they cannot touch the host's own tables, so the phase runs
its own edge inside network namespaces it creates (lab/netns.py). The edge's namespace holds the
edge (listen.tls on 0.0.0.0, as deployed; Record-Route still names 127.0.0.1), the FreeSWITCH
SIPp and Meta's stunnel, which connects from 10.77.0.2 on that loopback (10.77.0.0/24 is
configured as Meta's range). The attackers have a namespace of their own, 200 addresses of
198.18.0.0/15 on a veth to the edge's 198.18.0.1: their connections arrive over a link, as they
would. (From the same loopback they would not: a locally sent SYN is in conntrack before the
input hook sees it, so a SYN the rules drop would stay counted as a connection.)

The parent (`run_phase`) makes the namespaces and runs this module inside the edge's (`child`),
reads its progress and its one `IDLE-RESULT {json}` line, and removes the namespaces and
whatever is left in them, even on Ctrl-C or failure. Without root, ip or nft the phase is
skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.attack.edge_watch import count_tracebacks, kamailio_pids
from lab.attack.idle_holders import HolderCounts, HoldersProcess
from lab.attack.targets import Target
from lab.edge import EdgeLab, EdgePorts
from lab.netns import (
    NetnsError,
    benchmark_addresses,
    inside_other_namespace,
    link,
    namespaces,
    netns_id,
    nft_inside,
    unavailable_reason,
)
from lab.processes import LabError
from lab.sipp import start_sipp_server
from provisioning.kamailio_rpc import RpcError
from provisioning.render import RenderError
from provisioning.render_nftables import TABLE_FAMILY, TABLE_NAME, render_nftables

from .relayed import call_ids, relayed_to_sipp

ROOT = Path(__file__).resolve().parents[2]
META_SOURCE, META_RANGE = "10.77.0.2", "10.77.0.0/24"
EDGE_ATTACK_ADDRESS, ATTACK_PREFIX = "198.18.0.1", 15  # the edge's end of the attackers' link
NAMESPACE_TAG = "wsidle"
RESULT_PREFIX = "IDLE-RESULT "


@dataclass(frozen=True)
class IdleSettings:
    """The phase's size. The defaults fill the shipped cap (max_connections 409 at 64 MB):
    450 connections over 200 sources is 2 or 3 per source, under every per-source limit
    (admission's 8 at once and 4 new a second, HAProxy's and Kamailio's 32)."""

    connections: int = 450
    sources: int = 200
    meta_calls: int = 4
    call_timeout_s: int = 10
    ramp_s: float = 8.0     # at most, for the attack to reach its plateau
    window_s: float = 12.0  # per half, after the ramp: Meta's calls start evenly across it, so
    #                         the attack re-opens what the edge's 5-s first-message wait closes
    max_connections: int | None = None   # the phase edge's security.connections.max_connections
    meta_connections: int | None = None  # its security.admission.meta_connections

    def argv(self) -> list[str]:
        args = ["--connections", str(self.connections), "--sources", str(self.sources),
                "--meta-calls", str(self.meta_calls), "--call-timeout", str(self.call_timeout_s),
                "--ramp", str(self.ramp_s), "--seconds", str(self.window_s)]
        if self.max_connections is not None:
            args += ["--max-connections", str(self.max_connections)]
        if self.meta_connections is not None:
            args += ["--meta-connections", str(self.meta_connections)]
        return args

    def hard_limit_s(self) -> float:
        """What the whole phase may take, edge start-up and clean-up included."""
        return 2 * (self.ramp_s + self.window_s + self.call_timeout_s + 15) + 60


@dataclass
class Half:
    """One half of the phase: the attack, with or without the rules, and Meta's calls in it."""

    label: str
    calls_ok: int = 0
    calls: int = 0
    call_seconds: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    held_median: int = 0   # attacker's connections held while Meta's calls ran
    held_peak: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> str:
        return f"{self.calls_ok}/{self.calls}"

    @property
    def slowest(self) -> str:
        """The longest of Meta's calls that connected, in seconds ("none" when none did)."""
        return f"{max(self.call_seconds):.2f}" if self.call_seconds else "none"


@dataclass
class IdleReport:
    status: str                  # "ran", "skipped" or "error"
    reason: str = ""
    sources: int = 0
    connections: int = 0
    per_source: int = 0
    edge: str = ""               # who held Meta's TLS port, the caps
    with_admission: Half | None = None
    without_admission: Half | None = None
    rule_counters: dict[str, int] = field(default_factory=dict)
    crashes: int = 0
    tracebacks: int = 0
    relayed: int = 0

    @classmethod
    def from_json(cls, text: str) -> IdleReport:
        data: dict[str, Any] = json.loads(text)
        for key in ("with_admission", "without_admission"):
            data[key] = Half(**data[key]) if data.get(key) else None
        return cls(**data)

    def result_keys(self) -> str:
        """The phase's part of the RESULT line."""
        if self.status != "ran" or self.with_admission is None or self.without_admission is None:
            value = self.status
            return (f"idle_sources={value} idle_conns_held={value} meta_calls_during_idle={value} "
                    f"meta_calls_without_admission={value} meta_call_max_s_during_idle={value} "
                    f"meta_call_max_s_without_admission={value}")
        return (f"idle_sources={self.sources} idle_conns_held={self.with_admission.held_median} "
                f"meta_calls_during_idle={self.with_admission.ratio} "
                f"meta_calls_without_admission={self.without_admission.ratio} "
                f"meta_call_max_s_during_idle={self.with_admission.slowest} "
                f"meta_call_max_s_without_admission={self.without_admission.slowest}")

    @property
    def meta_calls_failed(self) -> int:
        """Meta's calls that failed during the attack with admission (legit_calls_failed)."""
        half = self.with_admission
        return half.calls - half.calls_ok if half is not None else 0


# ---- the parent: outside the namespace ---------------------------------------------------------


def run_phase(settings: IdleSettings, folder: Path, say: Callable[[str], None]) -> IdleReport:
    """Make the namespace, run `child` inside it, and always remove both."""
    if settings.connections < 1:
        return IdleReport("skipped", "no idle connections asked for")
    reason = unavailable_reason()
    if reason is not None:
        return IdleReport("skipped", reason)
    outside = netns_id()
    if outside is None:
        return IdleReport("skipped", "cannot read this process's network namespace (/proc/self/ns/net)")
    folder.mkdir(parents=True, exist_ok=True)
    sources = benchmark_addresses(settings.sources)
    try:
        with namespaces(NAMESPACE_TAG, ["e", "a"]) as (edge_ns, attackers_ns):
            edge_ns.add_addresses("lo", [META_SOURCE], 32)
            link(edge_ns, "atk0", attackers_ns, "atk1")
            edge_ns.add_addresses("atk0", [EDGE_ATTACK_ADDRESS], ATTACK_PREFIX)
            attackers_ns.add_addresses("atk1", sources, ATTACK_PREFIX)
            say(f"  idle: namespaces {edge_ns.name} (the edge, Meta from {META_SOURCE}) and "
                f"{attackers_ns.name} ({settings.sources} attacker addresses {sources[0]}.."
                f"{sources[-1]} -> {EDGE_ATTACK_ADDRESS})")
            child = subprocess.Popen(
                edge_ns.argv(sys.executable, "-m", "bench.abuse.idle_sources", "--folder",
                             str(folder), "--outside-netns", outside, "--attackers-netns",
                             attackers_ns.name, *settings.argv()),
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                return _follow(child, settings.hard_limit_s(), say)
            finally:
                _end(child)
    except NetnsError as error:
        return IdleReport("error", f"network namespace: {error}")


def _follow(child: subprocess.Popen[str], limit_s: float, say: Callable[[str], None]) -> IdleReport:
    """Relay the child's progress; its IDLE-RESULT line is the report."""
    assert child.stdout is not None
    timer = threading.Timer(limit_s, child.terminate)  # bounded even if the child hangs
    timer.start()
    report: IdleReport | None = None
    tail: list[str] = []
    try:
        for line in child.stdout:
            line = line.rstrip("\n")
            if line.startswith(RESULT_PREFIX):
                report = IdleReport.from_json(line.removeprefix(RESULT_PREFIX))
            else:
                tail = [*tail[-9:], line]
                say(f"  idle: {line}")
        child.wait(timeout=30)
    finally:
        timer.cancel()
    if report is None:
        return IdleReport("error", f"the phase ended without a result (exit {child.returncode}): "
                          + " | ".join(tail[-3:]))
    return report


def _end(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.terminate()  # the child stops its edge on SIGTERM as on Ctrl-C
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)


# ---- the child: inside the namespace -----------------------------------------------------------


def _print(text: str) -> None:
    print(text, flush=True)


def _nft(outside: str, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return nft_inside(outside, *args)
    except NetnsError as error:
        raise LabError(str(error)) from None


def _rule_counters(outside: str) -> dict[str, int]:
    listed = _nft(outside, "-j", "list", "table", TABLE_FAMILY, TABLE_NAME)
    counts: dict[str, int] = {}
    if listed.returncode != 0:
        return counts
    for entry in json.loads(listed.stdout).get("nftables", []):
        rule = entry.get("rule")
        if isinstance(rule, dict) and "comment" in rule:
            packets = sum(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
            counts[rule["comment"]] = counts.get(rule["comment"], 0) + packets
    return counts


class _Sampler:
    """The attacker's held count every 0.25 s while Meta's calls run."""

    def __init__(self, counts: HolderCounts) -> None:
        self.counts = counts
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="held-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.counts.held)
            self._stop.wait(0.25)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait_ramp(holders: HoldersProcess, within_s: float) -> float:
    """Until every slot has tried once and the held count has not grown for 1.5 s."""
    started = time.monotonic()
    best, best_at = -1, started
    while time.monotonic() - started < within_s:
        held = holders.counts.held
        if held > best:
            best, best_at = held, time.monotonic()
        elif (holders.counts.attempts >= holders.connections
              and time.monotonic() - best_at >= 1.5):
            break
        time.sleep(0.1)
    return time.monotonic() - started


@dataclass
class _MetaCall:
    """One of Meta's calls, started at `start_at` in a thread of its own: Meta's calls do not
    wait for each other, so one the attack holds up does not delay the next."""

    tag: str
    start_at: float
    passed: bool = False
    seconds: float = 0.0
    failure: str = ""
    call_ids: set[str] = field(default_factory=set)

    def place(self, edge: EdgeLab, meta_port: int, folder: Path, timeout_s: int) -> None:
        time.sleep(max(0.0, self.start_at - time.monotonic()))
        (folder / self.tag).mkdir(exist_ok=True)
        started = time.monotonic()
        try:
            result = edge.meta_call("uic-answered", folder=folder / self.tag, timeout_s=timeout_s,
                                    client_port=meta_port)
        except LabError as error:
            self.failure = f"{self.tag}: {error}"
            return
        self.seconds = time.monotonic() - started
        self.call_ids = call_ids(result.messages)
        self.passed = result.passed
        if not result.passed:
            last = (result.errors.strip().splitlines() or ["no SIP exchange"])[-1]
            last = last.rsplit("\t", 1)[-1].split(": ", 1)[-1]  # SIPp's time stamps off
            self.failure = f"{self.tag} after {self.seconds:.1f} s: {last[:160]}"


@dataclass(frozen=True)
class _Attackers:
    """Where the attack runs from: the attackers' namespace, never ours (`outside`)."""

    netns: str
    outside: str
    sources: list[str]

    def holders(self, edge: EdgeLab, settings: IdleSettings) -> HoldersProcess:
        return HoldersProcess(
            ["ip", "netns", "exec", self.netns], Target(EDGE_ATTACK_ADDRESS, edge.ports.tls),
            self.sources, settings.connections,
            time_limit_s=settings.ramp_s + settings.window_s + settings.call_timeout_s + 10,
            attempt_limit=settings.connections * 60, outside_netns=self.outside)


def _attack_half(label: str, edge: EdgeLab, meta_port: int, attackers: _Attackers,
                 settings: IdleSettings, folder: Path, legit_ids: set[str]) -> Half:
    half = Half(label)
    holders = attackers.holders(edge, settings)
    with holders:
        ramp = _wait_ramp(holders, settings.ramp_s)
        window_start = time.monotonic()
        c = holders.counts
        _print(f"{label}: {c.held} held after {ramp:.1f} s ({c.attempts} attempts, "
               f"{c.connect_failed} connects failed, {c.handshake_failed} handshakes failed)")
        with _Sampler(holders.counts) as sampler:
            calls = [_MetaCall(f"{label.replace(' ', '-')}-{index + 1}",
                               window_start + index * settings.window_s / settings.meta_calls)
                     for index in range(settings.meta_calls)]
            threads = [threading.Thread(target=call.place, args=(edge, meta_port, folder,
                                                                 settings.call_timeout_s),
                                        name=call.tag, daemon=True) for call in calls]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=settings.window_s + settings.call_timeout_s + 30)
        for call in calls:
            half.calls += 1
            legit_ids |= call.call_ids
            if call.passed:
                half.calls_ok += 1
                half.call_seconds.append(round(call.seconds, 2))
            else:
                half.failures.append(call.failure or f"{call.tag}: did not end")
        half.counts = asdict(holders.counts)
    half.held_median = int(statistics.median(sampler.samples)) if sampler.samples else 0
    half.held_peak = half.counts["peak"]
    _print(f"{label}: Meta's calls {half.ratio} connected "
           f"(seconds {half.call_seconds}); attacker held median {half.held_median}, peak "
           f"{half.held_peak}; {half.counts['handshakes']} handshakes, "
           f"{half.counts['closed_by_server']} closed by the edge, "
           f"{half.counts['connect_failed']} connects and {half.counts['handshake_failed']} "
           f"handshakes failed")
    for failure in half.failures[:3]:
        _print(f"  failed: {failure}")
    return half


def _edge_overrides(settings: IdleSettings, ports: EdgePorts) -> dict[str, Any]:
    """Meta's range, the phase's caps, and Meta's TLS port on every address of the namespace
    (the attackers reach it over their link), still advertised as 127.0.0.1."""
    admission: dict[str, Any] = {"enabled": True, "meta_ranges": [META_RANGE]}
    if settings.meta_connections is not None:
        admission["meta_connections"] = settings.meta_connections
    security: dict[str, Any] = {"admission": admission}
    if settings.max_connections is not None:
        security["connections"] = {"max_connections": settings.max_connections}
    return {"security": security, "media": {"anchor": "freeswitch"},  # no rtpengine needed
            "listen": {"tls": f"0.0.0.0:{ports.tls}", "advertise": "127.0.0.1"}}


def child(settings: IdleSettings, folder: Path, outside: str, attackers_netns: str) -> IdleReport:
    """Inside the edge's namespace: one edge, the attack with the rendered rules, then without;
    `outside` is the parent's namespace, where nothing may be loaded."""
    if not inside_other_namespace(outside):
        return IdleReport("error", "not inside a network namespace of the bench's own")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attackers = _Attackers(attackers_netns, outside, benchmark_addresses(settings.sources))
    holders_per_source = -(-settings.connections // settings.sources)
    report = IdleReport("ran", sources=settings.sources, connections=settings.connections,
                        per_source=holders_per_source)
    ports = EdgePorts()
    with EdgeLab(folder / "edge", _edge_overrides(settings, ports), ports=ports) as edge:
        limits, admission = edge.config.security.connections, edge.config.security.admission
        front = "HAProxy" if edge.haproxy is not None else "Kamailio"
        report.edge = (f"{front} holds Meta's TLS port; cap {limits.tls_max_connections}, "
                       f"{limits.per_source} per source; admission: Meta "
                       f"{admission.meta_connections}, others "
                       f"{admission.other_budget(limits.tls_max_connections)} "
                       f"({admission.per_source_connections} per source, "
                       f"{admission.per_source_new_per_second}/s)")
        _print(f"edge up: {report.edge}")
        node1 = edge.ports.freeswitch[0]
        fs = start_sipp_server("uic-answered", "freeswitch", folder, node1, calls=1000,
                               timeout_s=int(settings.hard_limit_s()) + 60)
        meta_port = edge.meta_client_from(META_SOURCE)
        ruleset = render_nftables(edge.config, edge.folder / "out")
        if ruleset is None:
            return IdleReport("error", "the site config renders no admission rules")
        pids = kamailio_pids(edge.rpc_socket)
        front_pid = edge.haproxy.pid if edge.haproxy is not None else None
        legit_ids: set[str] = set()
        loaded = _nft(outside, "-f", str(ruleset))
        if loaded.returncode != 0:
            return IdleReport("error", f"nft -f {ruleset}: {loaded.stderr.strip()}")
        _print(f"loaded {ruleset} (table {TABLE_FAMILY} {TABLE_NAME}) in the namespace")
        (folder / "quiet").mkdir(exist_ok=True)
        quiet = edge.meta_call("uic-answered", folder=folder / "quiet", timeout_s=10,
                               client_port=meta_port)
        legit_ids |= call_ids(quiet.messages)
        _print(f"Meta's call on the quiet edge, rules loaded: "
               f"{'passed' if quiet.passed else 'FAILED'}")
        report.with_admission = _attack_half("with admission", edge, meta_port, attackers,
                                             settings, folder, legit_ids)
        if not quiet.passed:
            report.with_admission.calls += 1
            report.with_admission.failures.insert(0, "the quiet call failed")
        report.rule_counters = _rule_counters(outside)
        _print("rule counters: " + ", ".join(f"{k} {v}" for k, v in report.rule_counters.items()))
        _nft(outside, "delete", "table", TABLE_FAMILY, TABLE_NAME)
        time.sleep(1.0)  # the edge sees the last attack's connections closed
        report.without_admission = _attack_half("without admission", edge, meta_port, attackers,
                                                settings, folder, legit_ids)
        time.sleep(1.0)
        try:
            after = kamailio_pids(edge.rpc_socket)
        except RpcError:
            after = {}
        report.crashes = len([pid for pid in pids if pid not in after])
        if front_pid is not None and (edge.haproxy is None or not edge.haproxy.running()):
            report.crashes += 1
        fs.stop()
        report.relayed = len(relayed_to_sipp(fs, legit_ids))
        report.tracebacks = count_tracebacks(edge.kamailio_log())
    return report


def add_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """The phase's size options (bench.abuse.run names them --idle-*)."""
    default = IdleSettings()
    parser.add_argument(f"--{prefix}connections", type=int, default=default.connections,
                        help="idle TLS connections the attack keeps open (0: skip the phase)")
    parser.add_argument(f"--{prefix}sources", type=int, default=default.sources,
                        help="attacker addresses they are spread over")
    parser.add_argument(f"--{prefix}meta-calls", type=int, default=default.meta_calls,
                        help="Meta's calls during each half")
    parser.add_argument(f"--{prefix}call-timeout", type=int, default=default.call_timeout_s,
                        help="seconds one of Meta's calls may take")
    parser.add_argument(f"--{prefix}ramp", type=float, default=default.ramp_s,
                        help="seconds at most for the attack to fill what it can")
    parser.add_argument(f"--{prefix}seconds", type=float, default=default.window_s,
                        help="seconds of each half, after the ramp, over which Meta's calls start")
    parser.add_argument(f"--{prefix}max-connections", type=int,
                        help="the phase edge's security.connections.max_connections")
    parser.add_argument(f"--{prefix}meta-connections", type=int,
                        help="the phase edge's security.admission.meta_connections")


def settings_from(args: argparse.Namespace, prefix: str = "") -> IdleSettings:
    def value(name: str) -> Any:
        return getattr(args, (prefix + name).replace("-", "_"))

    return IdleSettings(value("connections"), value("sources"), value("meta-calls"),
                        value("call-timeout"), value("ramp"), value("seconds"),
                        value("max-connections"), value("meta-connections"))


def summary(report: IdleReport) -> list[str]:
    """What a reader wants from the phase, in a few lines."""
    if report.status != "ran" or report.with_admission is None or report.without_admission is None:
        return [f"many-source idle attack: {report.status}: {report.reason}"]
    lines = [f"many-source idle attack: {report.connections} idle TLS connections from "
             f"{report.sources} sources (at most {report.per_source} each); {report.edge}"]
    for half in (report.with_admission, report.without_admission):
        lines.append(f"  {half.label}: Meta's calls {half.ratio} connected (slowest {half.slowest} s); "
                     f"attacker held {half.held_median} (median), {half.counts.get('handshakes', 0)}"
                     f" handshakes, {half.counts.get('closed_by_server', 0)} closed by the edge")
        lines += [f"    failed: {failure}" for failure in half.failures[:3]]
    lines.append(f"  edge after both: {report.crashes} processes lost, {report.tracebacks} "
                 f"tracebacks, {report.relayed} requests relayed unauthenticated")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="bench-abuse's many-source idle attack on its own: makes the namespaces and "
        "runs the phase inside them (with --outside-netns: the part inside, started by that).")
    parser.add_argument("--folder", type=Path, help="keep the phase's logs here")
    parser.add_argument("--outside-netns", help=argparse.SUPPRESS)
    parser.add_argument("--attackers-netns", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    # SIGTERM (for the child: the parent's time bound) unwinds like Ctrl-C: the edge's
    # processes are stopped, and the parent removes the namespaces.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.outside_netns is None:
        return _standalone(settings, args.folder)
    if args.folder is None or args.attackers_netns is None:
        parser.error("--outside-netns needs --folder and --attackers-netns")
    try:
        report = child(settings, args.folder, args.outside_netns, args.attackers_netns)
    except (LabError, RenderError, RpcError, OSError) as error:
        report = IdleReport("error", str(error).splitlines()[0] if str(error) else repr(error))
    except KeyboardInterrupt:  # the edge is stopped by now (its context manager)
        report = IdleReport("error", "interrupted")
    _print(RESULT_PREFIX + json.dumps(asdict(report)))
    return 0


def _standalone(settings: IdleSettings, folder: Path | None) -> int:
    def say(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    try:
        if folder is None:
            with tempfile.TemporaryDirectory(prefix="wa-sip-idle-") as scratch:
                report = run_phase(settings, Path(scratch), say)
        else:
            report = run_phase(settings, folder, say)
    except KeyboardInterrupt:
        print("idle phase: interrupted; its namespaces and processes are removed", file=sys.stderr)
        return 130
    for line in summary(report):
        say(line)
    print(f"RESULT {report.result_keys()}", flush=True)
    return 1 if report.status == "error" or report.meta_calls_failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

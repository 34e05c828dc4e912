"""Bench: a site's call rate with one KEMI edge and with two (issue 20), native reference alongside.

Three set-ups in one run, on the same SIPp scenarios as bench-edge (sipp-scenarios/uic-answered):
1. `one-edge`: the product rendered from templates/kamailio/ as bench-edge's `kemi` (one edge,
   no `[cluster]`, the bench-only plain TCP listener for Meta's leg), on 127.0.0.1;
2. `two-edges`: two Kamailios rendered from the same site config with `[cluster]` as README
   "More than one machine" has it (both DMQ sockets listed, each its `this_edge`, one nonce
   secret, the same credential store and in-dialog key file), edge A on 127.0.0.1 and edge B
   on 127.0.0.2 with the same ports (`listen.internal` on the same port on every edge). Meta's
   load is split evenly between them, one SIPp per edge on its own connection, as Meta spreads
   calls over the addresses of the site's one name; one FreeSWITCH-side UAS serves both;
3. `native`: bench/edge/native.cfg.j2, bench-edge's native reference (one edge).
Each: interleaved fixed-rate rounds (a fresh Kamailio per round; CPU per call = the site's
Kamailio CPU, every edge summed, over its completed calls; the machine's busy share beside it),
then a ramp until a step fails, loses pace or overloads. The load generator (SIPp: Meta's side
and FreeSWITCH's) runs on the same cores as the edges: the call rates say what this machine
does; the CPU per call is what travels to a site with one edge per machine.
`--edge-cores X` gives every edge (all its processes) X cores of CPU through a cgroup quota
(bench/edge/cpu_cap.py, root), the load generator outside it: one edge per machine of X cores,
so the ramp's call rates show what a second edge adds to a site.
The last line printed is
``RESULT one_edge_cps=<x> two_edge_cps=<x> scaling=<x> native_cps=<x> ratio=<x>
cpu_us_one=<x> cpu_us_two=<x> cpu_us_native=<x> cpu_ratio=<x> failed=<n>`` (one line).
Run it as `python -m bench.edge.site_run` from the checkout (`make bench-edge-site`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.media.cpu import machine_cpu_s
from lab.processes import LabError, free_port
from provisioning.kamailio_binary import kamailio_available
from provisioning.kamailio_rpc import RpcError, call

from .cpu_cap import CpuCap, CpuCapError
from .kamailio import Kamailio
from .load import Step, StepResult, run_split_step, split_step
from .report import SetupReport, median, ratio
from .run import DEFAULT_STEPS, Plan, plan_from
from .setups import Setup, SetupError, kemi_setup, native_setup
from .site import BenchPorts, BenchSite, bench_site

SECOND_EDGE = "127.0.0.2"
STAGGER_S = 1.1  # between the Meta SIPps' starts (load.run_split_step says why)
NONCE_SECRET = "bench-site-nonce-secret-0123456789abcdef"
LABELS = {
    "one-edge": "one KEMI edge (product; bench-only plain TCP leg), no [cluster]",
    "two-edges": "two KEMI edges, [cluster] over DMQ, Meta's load split evenly between them",
    "native": "native-config reference, one edge (bench/edge/native.cfg.j2)",
}


@dataclass(frozen=True)
class SiteSetup:
    """The Kamailios of one set-up (one edge, or a site's edges) and where Meta reaches them."""

    name: str
    setups: list[Setup]
    edges: list[BenchSite]


@dataclass
class SiteStepResult(StepResult):
    machine_busy: float = 0.0  # share of all cores busy during the step (0-1)


def sites(folder: Path, metrics: bool) -> tuple[BenchSite, list[BenchSite]]:
    """The one edge's site, and the two edges of the cluster (same folder: one credential
    store, one in-dialog key file, one CA)."""
    single = bench_site(folder, BenchPorts(), metrics=metrics)
    ports = single.ports
    dmq = free_port(socket.SOCK_DGRAM)
    secret = folder / "nonce.secret"
    secret.write_text(NONCE_SECRET + "\n", encoding="utf-8")
    secret.chmod(0o600)
    edges = [f"127.0.0.1:{dmq}", f"{SECOND_EDGE}:{dmq}"]

    def cluster(this_edge: str) -> dict[str, Any]:
        return {"edges": edges, "this_edge": this_edge, "nonce_secret_file": str(secret)}

    edge_a = bench_site(folder, ports, metrics=metrics, cluster=cluster(edges[0]), ca=single.ca)
    ports_b = BenchPorts(tls=ports.tls, plain=ports.plain, internal=ports.internal,
                         freeswitch=ports.freeswitch, meta_sipp=free_port(),
                         stunnel=ports.stunnel, metrics=ports.metrics,
                         front_backend=ports.front_backend, outbound_tls=ports.outbound_tls)
    edge_b = bench_site(folder, ports_b, metrics=metrics, host=SECOND_EDGE,
                        cluster=cluster(edges[1]), ca=single.ca)
    return single, [edge_a, edge_b]


def wait_for_peers(kamailios: list[Kamailio], timeout_s: float = 15) -> None:
    """Every edge sees every other as an active DMQ node (so htable replication runs)."""
    deadline = time.monotonic() + timeout_s
    for kamailio in kamailios:
        while True:
            try:
                nodes = call(kamailio.setup.rpc_socket, "dmq.list_nodes")
            except RpcError:
                nodes = []
            listed = nodes if isinstance(nodes, list) else [nodes]
            active = [n for n in listed if n.get("status") == "active" and not n.get("local")]
            if len(active) >= len(kamailios) - 1:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{kamailio.setup.name}: DMQ peers not active within "
                               f"{timeout_s:.0f} s: {listed}")
            time.sleep(0.2)


class Running:
    """The Kamailios of a set-up, started together (and peered), stopped together."""

    def __init__(self, site_setup: SiteSetup, folder: Path, edge_cores: float | None) -> None:
        self.site_setup = site_setup
        self.folder = folder
        self.edge_cores = edge_cores
        self.stack = ExitStack()
        self.kamailios: list[Kamailio] = []

    def __enter__(self) -> Running:
        try:
            for setup in self.site_setup.setups:
                # the cap first: it is removed after its Kamailio stopped (ExitStack's order)
                cap = (self.stack.enter_context(CpuCap(setup.name, self.edge_cores))
                       if self.edge_cores else None)
                self.kamailios.append(self.stack.enter_context(Kamailio(setup, self.folder, cap)))
            if len(self.kamailios) > 1:
                wait_for_peers(self.kamailios)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.close()

    def cpu_seconds(self) -> float:
        return sum(kamailio.cpu_seconds() for kamailio in self.kamailios)

    def step(self, step: Step, folder: Path) -> SiteStepResult:
        cpu_before = self.cpu_seconds()
        busy_before, total_before = machine_cpu_s()
        plain = run_split_step(split_step(step, self.site_setup.edges), folder,
                               with_freeswitch=True, stagger_s=STAGGER_S)
        busy_after, total_after = machine_cpu_s()
        result = SiteStepResult(**vars(plain))
        result.cpu_s = self.cpu_seconds() - cpu_before
        result.machine_busy = ratio(busy_after - busy_before, total_after - total_before)
        for kamailio in self.kamailios:
            if not kamailio.running():
                result.notes.append(f"{kamailio.setup.name} exited")
                result.failed = max(result.failed, 1)
        return result

    def warm_up(self, plan: Plan, folder: Path) -> None:
        if plan.warmup_calls:
            self.step(Step(50, plan.warmup_calls, 0, "tcp"), folder / "warmup")


def fixed_round(site_setup: SiteSetup, plan: Plan, folder: Path, number: int,
                edge_cores: float | None) -> SiteStepResult:
    folder = folder / f"round-{number}"
    with Running(site_setup, folder, edge_cores) as running:
        running.warm_up(plan, folder / site_setup.name)
        result = running.step(Step(plan.fixed_rate, plan.calls(plan.fixed_rate, plan.fixed_seconds),
                                   0, "tcp", trace_messages=True),
                              folder / f"{site_setup.name}-fixed")
    print(f"  round {number} {site_setup.name}: {result.failed} failed, "
          f"{result.cpu_us_per_call:.0f} us/call, machine {100 * result.machine_busy:.0f} % busy",
          flush=True)
    return result


def ramp(site_setup: SiteSetup, plan: Plan, folder: Path, report: SetupReport,
         edge_cores: float | None) -> None:
    with Running(site_setup, folder, edge_cores) as running:
        running.warm_up(plan, folder / f"{site_setup.name}-ramp")
        for rate in plan.steps:
            time.sleep(plan.settle_s)
            step = running.step(Step(rate, plan.calls(rate, plan.step_seconds), 0, "tcp",
                                     max_p99_ms=plan.max_p99_ms),
                                folder / f"{site_setup.name}-ramp-{rate}")
            report.ramp.append(step)
            busy = step.machine_busy if isinstance(step, SiteStepResult) else 0.0
            print(f"  {site_setup.name} {rate} cps: {step.failed} failed, {step.verdict}, "
                  f"{step.cpu_us_per_call:.0f} us/call, machine {100 * busy:.0f} % busy",
                  flush=True)
            if not step.passed:
                break


def busy_share(report: SetupReport) -> float:
    return median([r.machine_busy for r in report.fixed_rounds if isinstance(r, SiteStepResult)])


def top_busy(report: SetupReport) -> float:
    """The machine's busy share at the highest passed ramp step."""
    passed = [s for s in report.ramp if s.passed and isinstance(s, SiteStepResult)]
    return passed[-1].machine_busy if passed else 0.0


def summary(one: SetupReport, two: SetupReport, native: SetupReport, plan: Plan,
            edge_cores: float | None = None) -> list[str]:
    cores = os.cpu_count() or 1
    cpu_one, cpu_two, cpu_native = (one.cpu_us_per_call, two.cpu_us_per_call,
                                    native.cpu_us_per_call)
    budget = (f"each edge capped at {edge_cores:g} cores (cgroup quota), the load generator "
              "outside the caps" if edge_cores else "shared with the load generator")
    out = [
        f"site call rate, one edge -> two edges: {one.max_cps} -> {two.max_cps} cps "
        f"(x{ratio(two.max_cps, one.max_cps):.2f}); machine busy at the top passed step "
        f"{100 * top_busy(one):.0f} % / {100 * top_busy(two):.0f} % of {cores} cores; {budget}",
        f"site Kamailio CPU per call at {plan.fixed_rate} cps: one edge {cpu_one:.0f} us, "
        f"two edges {cpu_two:.0f} us (x{ratio(cpu_two, cpu_one):.2f}: DMQ replication and two "
        f"sets of processes), native {cpu_native:.0f} us",
        f"KEMI/native, one edge: call rate {ratio(one.max_cps, native.max_cps):.2f}, "
        f"CPU per call {ratio(cpu_one, cpu_native):.2f}",
    ]
    if cpu_two and not edge_cores:
        per_core = 1e6 / cpu_two
        out.append(f"one edge per machine (its cores its own, no load generator): about "
                   f"{per_core:.0f} calls/s per core at two edges' CPU per call, so a site "
                   f"grows by that per edge core (an estimate from CPU per call, not measured "
                   f"on separate machines)")
    return out


def result_line(one: SetupReport, two: SetupReport, native: SetupReport, failed: int) -> str:
    return (f"RESULT one_edge_cps={one.max_cps} two_edge_cps={two.max_cps} "
            f"scaling={ratio(two.max_cps, one.max_cps):.2f} native_cps={native.max_cps} "
            f"ratio={ratio(one.max_cps, native.max_cps):.2f} "
            f"cpu_us_one={one.cpu_us_per_call:.0f} cpu_us_two={two.cpu_us_per_call:.0f} "
            f"cpu_us_native={native.cpu_us_per_call:.0f} "
            f"cpu_ratio={ratio(one.cpu_us_per_call, native.cpu_us_per_call):.2f} failed={failed}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="ramp rates in calls/s (site)")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--fixed-rate", type=int, default=500, help="site calls/s")
    parser.add_argument("--fixed-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-p99-ms", type=float, default=200.0)
    parser.add_argument("--workers", type=int, default=2, help="children and tcp_children")
    parser.add_argument("--log-level", type=int, default=2)
    parser.add_argument("--only", default="one-edge,two-edges,native")
    parser.add_argument("--no-ramp", action="store_true", help="fixed-rate rounds only")
    parser.add_argument("--keep", action="store_true", help="keep logs and SIPp files")
    parser.add_argument("--memory-manager", choices=("qm", "fm", "tlsf"), default=None,
                        help="Kamailio's memory manager (-x) for every set-up; default: its own "
                        "(qm)")
    parser.add_argument("--edge-cores", type=float, default=None,
                        help="every edge's CPU, in cores, through a cgroup quota (root): one "
                        "edge per machine of that size; default: no cap")
    parser.add_argument("--smoke", action="store_true",
                        help="a few calls per set-up: proves the harness, times nothing")
    parser.add_argument("--tls-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _stop_on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_term)
    plan = plan_from(args)
    if not kamailio_available() or shutil.which("sipp") is None:
        print("bench-edge-site: needs kamailio and sipp (make test installs them)",
              file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-bench-edge-site-"))
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    reports = {name: SetupReport(name, label + ("" if name in only else " (not run)"))
               for name, label in LABELS.items()}
    try:
        single, pair = sites(folder, metrics=True)
        print(f"bench-edge-site: {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; workers={args.workers} per "
              f"edge; memory manager {args.memory_manager or 'default'}; "
              f"{f'{args.edge_cores:g} cores' if args.edge_cores else 'no CPU cap'} per edge; "
              f"ramp {plan.steps} x "
              f"{plan.step_seconds:g} s; fixed {plan.fixed_rate} cps "
              f"x {plan.fixed_seconds:g} s; logs in {folder}", flush=True)
        makers = {
            "one-edge": lambda: SiteSetup("one-edge", [kemi_setup(
                single, args.workers, args.log_level)], [single]),
            "two-edges": lambda: SiteSetup("two-edges", [
                kemi_setup(edge, args.workers, args.log_level, name=f"kemi-{letter}")
                for edge, letter in zip(pair, "ab", strict=True)], pair),
            "native": lambda: SiteSetup("native", [native_setup(
                single, args.workers, args.log_level)], [single]),
        }
        setups = [makers[name]() for name in LABELS if name in only]
        if args.memory_manager:
            setups = [replace(s, setups=[replace(k, memory_manager=args.memory_manager)
                                         for k in s.setups]) for s in setups]
        for number in range(1, plan.rounds + 1):
            print(f"bench-edge-site: fixed rate, round {number} of {plan.rounds} ...", flush=True)
            for site_setup in setups:
                reports[site_setup.name].fixed_rounds.append(
                    fixed_round(site_setup, plan, folder, number, args.edge_cores))
        if not args.no_ramp:
            for site_setup in setups:
                print(f"bench-edge-site: ramp {site_setup.name} ...", flush=True)
                ramp(site_setup, plan, folder, reports[site_setup.name], args.edge_cores)
                time.sleep(2 * plan.settle_s)
    except (LabError, SetupError, CpuCapError) as error:
        print(f"bench-edge-site: {error}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for report in reports.values():
        print("\n".join(report.lines()))
        if report.fixed_rounds:
            print(f"  machine busy during the fixed rounds (median): "
                  f"{100 * busy_share(report):.0f} % of {os.cpu_count()} cores")
    one, two, native = reports["one-edge"], reports["two-edges"], reports["native"]
    print("\n".join(summary(one, two, native, plan, args.edge_cores)))
    failed = sum(report.fixed_failed for report in reports.values())
    print(result_line(one, two, native, failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bench: the KEMI Python edge against a native-config reference and a stateless ceiling.

One run, in turn, on the same loopback ports and the same SIPp scenarios
(sipp-scenarios/uic-answered: complete user-initiated calls with the 407 round trip):
1. `kemi`: the product rendered from templates/kamailio/ (see setups.py for the labelled
   bench-only plain TCP listener that keeps stunnel out of the measurement);
2. `native`: bench/edge/native.cfg.j2, the same policy in Kamailio's native language;
3. `ceiling`: bench/edge/ceiling.cfg.j2, stateless, answers everything: the machine's SIP limit.
Per set-up: a warm-up, a fixed-rate run (default 500 calls/s) for response-time percentiles and
CPU per call, then a ramp of bounded steps until a step has a failed call or loses pace.
Then a short fixed-rate run of the product over TLS through stunnel, for what TLS costs.
The machine is shared and noisy: compare the ratios of one run, not figures across runs.
The last line printed is
``RESULT kemi_cps=<x> native_cps=<x> ceiling_cps=<x> ratio=<x> p99_ms_at_500=<x> failed=<n>``
(`failed` counts the fixed-rate runs, where no call may fail; the ramp fails at its top by
design). The exit code is 1 when a fixed-rate call failed.
Run it as `python -m bench.edge.run` from the checkout (`make bench-edge`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lab.processes import LabError
from lab.stunnel import stunnel_client
from provisioning.kamailio_binary import kamailio_available

from .kamailio import Kamailio, children_of, cpu_seconds_of
from .load import Step, StepResult, run_step
from .report import (
    SetupReport,
    plot,
    ramp_series,
    reference_keys,
    reference_lines,
    result_line,
    save_json,
    series_from_json,
    summary_lines,
)
from .setups import Setup, SetupError, ceiling_setup, kemi_setup, native_setup
from .site import BenchPorts, BenchSite, bench_site

HERE = Path(__file__).resolve().parent
DEFAULT_STEPS = ("200,400,600,800,1000,1100,1200,1300,1400,1500,1650,1800,2000,2200,2400,2700,"
                 "3000,3400,3800,4200,4600,5000,6000,7000,8000")
LABELS = {
    "kemi": "KEMI Python edge (product, rendered from templates/; bench-only plain TCP leg)",
    "native": "native-config reference, same policy (bench/edge/native.cfg.j2; plain TCP leg)",
    "ceiling": "stateless ceiling: 407/200 answered by Kamailio itself, no FreeSWITCH leg",
    "kemi-tls": "KEMI Python edge, product config unchanged, Meta's leg over TLS via stunnel",
    "kemi-ref": "KEMI Python edge as `kemi`, kemi/ loaded from --kemi-ref (before/after)",
}


@dataclass(frozen=True)
class Plan:
    steps: list[int]
    step_seconds: float
    fixed_rate: int
    fixed_seconds: float
    tls_seconds: float
    warmup_calls: int
    rounds: int = 3  # fixed-rate runs per set-up, interleaved; medians are reported
    max_p99_ms: float = 200.0
    settle_s: float = 1.0  # pause between steps so the previous step's transactions drain
    drain_s: float = 7.0  # before reading memory "after": tm's wait timer (5 s) has run out

    def calls(self, rate: int, seconds: float) -> int:
        return max(1, round(rate * seconds))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", default=DEFAULT_STEPS, help="ramp rates in calls/s")
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--fixed-rate", type=int, default=500)
    parser.add_argument("--fixed-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved fixed-rate runs per set-up (medians reported)")
    parser.add_argument("--max-p99-ms", type=float, default=200.0,
                        help="a ramp step with a p99 setup time over this counts as overloaded")
    parser.add_argument("--tls-seconds", type=float, default=5.0, help="0 = no TLS run")
    parser.add_argument("--workers", type=int, default=2, help="children and tcp_children")
    parser.add_argument("--log-level", type=int, default=2, help="Kamailio debug= (product: 2)")
    parser.add_argument("--only", default="kemi,native,ceiling", help="set-ups to run")
    parser.add_argument("--plot", type=Path, default=HERE / "edge-bench.png")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep logs and SIPp files")
    parser.add_argument("--replot", type=Path, default=None,
                        help="only draw --plot again from a run saved with --json")
    parser.add_argument("--no-metrics", action="store_true",
                        help="render the KEMI edge without its /metrics endpoint (cost compare)")
    parser.add_argument("--memory-manager", choices=("qm", "fm", "tlsf"), default=None,
                        help="Kamailio's memory manager (-x) for every set-up; default: its own "
                        "(qm)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few calls per set-up, no plot: proves the harness, times nothing")
    parser.add_argument("--kemi-ref", type=Path, default=None,
                        help="a folder holding another kemi/ (e.g. git archive of an older "
                        "commit): run it too, interleaved, as set-up kemi-ref")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    if args.smoke:
        return Plan(steps=[10], step_seconds=1.0, fixed_rate=10, fixed_seconds=1.0,
                    tls_seconds=1.0 if args.tls_seconds else 0.0, warmup_calls=0, rounds=1,
                    max_p99_ms=args.max_p99_ms, settle_s=0.0, drain_s=0.0)
    steps = sorted({int(rate) for rate in args.steps.split(",") if rate.strip()})
    if (not steps or len(steps) > 40 or args.step_seconds > 60 or args.fixed_seconds > 120
            or not 1 <= args.rounds <= 9):
        raise SystemExit("bench-edge: 1-40 steps, at most 60 s a step, 120 s fixed, 9 rounds")
    return Plan(steps, args.step_seconds, args.fixed_rate, args.fixed_seconds, args.tls_seconds,
                warmup_calls=100, rounds=args.rounds, max_p99_ms=args.max_p99_ms)


def measured_step(kamailio: Kamailio, site: BenchSite, setup: Setup, step: Step,
                  folder: Path) -> StepResult:
    before = kamailio.cpu_seconds()
    result = run_step(site, step, folder, setup.uses_freeswitch)
    result.cpu_s = kamailio.cpu_seconds() - before
    if not kamailio.running():
        result.notes.append("Kamailio exited")
        result.failed = max(result.failed, 1)
    return result


def _port(site: BenchSite, setup: Setup) -> int:
    return site.ports.plain if setup.meta_transport == "tcp" else site.ports.stunnel


def _warm_up(site: BenchSite, setup: Setup, plan: Plan, folder: Path) -> None:
    """Connections open, Python modules imported, caches filled: not measured."""
    if plan.warmup_calls:
        run_step(site, Step(50, plan.warmup_calls, _port(site, setup), setup.meta_transport),
                 folder / f"{setup.name}-warmup", setup.uses_freeswitch)


def fixed_round(site: BenchSite, setup: Setup, plan: Plan, folder: Path, number: int) -> StepResult:
    """A fresh Kamailio, a warm-up, then `plan.fixed_rate` calls/s with microsecond timing."""
    seconds = plan.tls_seconds if setup.meta_transport == "tls" else plan.fixed_seconds
    folder = folder / f"round-{number}"
    with Kamailio(setup, folder) as kamailio:
        stunnel = None
        try:
            if setup.meta_transport == "tls":
                stunnel = stunnel_client(folder, f"meta-to-{setup.name}", site.ports.stunnel,
                                         site.ports.tls, site.ca.certificate,
                                         site.config.site.sip_domain)
            _warm_up(site, setup, plan, folder)
            stunnel_before = _stunnel_cpu()
            result = measured_step(kamailio, site, setup, Step(
                plan.fixed_rate, plan.calls(plan.fixed_rate, seconds), _port(site, setup),
                setup.meta_transport, trace_messages=True), folder / f"{setup.name}-fixed")
            result.stunnel_cpu_s = _stunnel_cpu() - stunnel_before
        finally:
            if stunnel is not None:
                stunnel.stop()
    print(f"  round {number} {setup.name}: {result.failed} failed", flush=True)
    return result


def ramp(site: BenchSite, setup: Setup, plan: Plan, folder: Path, report: SetupReport) -> None:
    """Raise the rate step by step until a step fails, loses pace or overloads (then stop)."""
    with Kamailio(setup, folder) as kamailio:
        report.memory_before = kamailio.memory()
        _warm_up(site, setup, plan, folder)
        for rate in plan.steps:
            time.sleep(plan.settle_s)
            step = measured_step(kamailio, site, setup, Step(
                rate, plan.calls(rate, plan.step_seconds), _port(site, setup),
                setup.meta_transport, max_p99_ms=plan.max_p99_ms),
                folder / f"{setup.name}-ramp-{rate}")
            report.ramp.append(step)
            print(f"  {setup.name} {rate} cps: {step.failed} failed, {step.verdict}", flush=True)
            if not step.passed:
                break
        time.sleep(plan.drain_s)  # tm keeps finished transactions for its 5 s wait timer
        report.memory_after = kamailio.memory()


def _stunnel_cpu() -> float:
    """CPU of this process's stunnel children (the TLS run's terminator)."""
    pids = [pid for pid in children_of(os.getpid())
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("stunnel")]
    return sum(cpu_seconds_of(pid) for pid in pids)


def _stop_on_term(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every Kamailio, SIPp and stunnel is stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot:
        print(plot(series_from_json(args.replot), args.plot))
        return 0
    signal.signal(signal.SIGTERM, _stop_on_term)
    plan = plan_from(args)
    if not kamailio_available():
        print("bench-edge: no Kamailio installed (make test installs Debian's)", file=sys.stderr)
        return 2
    for tool in ("sipp", "stunnel4"):
        if shutil.which(tool) is None:
            print(f"bench-edge: {tool} is not installed (make test installs it)", file=sys.stderr)
            return 2
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-bench-edge-"))
    only = {name.strip() for name in args.only.split(",")}
    try:
        site = bench_site(folder, BenchPorts(), metrics=not args.no_metrics)
        print(f"bench-edge: {os.cpu_count()} CPUs, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; workers={args.workers}; "
              f"memory manager {args.memory_manager or 'default'}; "
              f"ramp {plan.steps} x {plan.step_seconds:g} s; fixed {plan.fixed_rate} cps x "
              f"{plan.fixed_seconds:g} s; logs in {folder}", flush=True)
        makers = {"kemi": kemi_setup, "native": native_setup, "ceiling": ceiling_setup}
        setups = {name: make(site, args.workers, args.log_level)
                  for name, make in makers.items() if name in only}
        if args.kemi_ref is not None:
            if not (args.kemi_ref / "kemi" / "edge.py").is_file():
                raise SetupError(f"--kemi-ref {args.kemi_ref}: no kemi/edge.py there")
            setups = {"kemi-ref": kemi_setup(site, args.workers, args.log_level, name="kemi-ref",
                                             kemi_parent=args.kemi_ref.resolve()), **setups}
        if plan.tls_seconds and "kemi" in only:
            setups["kemi-tls"] = kemi_setup(site, args.workers, args.log_level, "tls")
        if args.memory_manager:
            setups = {name: replace(setup, memory_manager=args.memory_manager)
                      for name, setup in setups.items()}
        reports = {name: SetupReport(name, LABELS[name] + ("" if name in setups else " (not run)"))
                   for name in [*makers, "kemi-tls", "kemi-ref"]}
        for number in range(1, plan.rounds + 1):  # interleaved, so noise hits every set-up
            print(f"bench-edge: fixed rate, round {number} of {plan.rounds} ...", flush=True)
            for name, setup in setups.items():
                reports[name].fixed_rounds.append(fixed_round(site, setup, plan, folder, number))
        for name, setup in setups.items():
            if name != "kemi-tls":
                print(f"bench-edge: ramp {name} ...", flush=True)
                ramp(site, setup, plan, folder, reports[name])
                time.sleep(2 * plan.settle_s)
        tls = reports["kemi-tls"] if "kemi-tls" in setups else None
    except (LabError, SetupError) as error:
        print(f"bench-edge: {error}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    ref = reports["kemi-ref"] if args.kemi_ref is not None else None
    every = [reports["kemi"], reports["native"], reports["ceiling"], *([tls] if tls else []),
             *([ref] if ref else [])]
    for report in every:
        print("\n".join(report.lines()))
    print("\n".join(summary_lines(reports["kemi"], reports["native"], reports["ceiling"], tls,
                                  plan.fixed_rate)))
    if ref:
        print("\n".join(reference_lines(reports["kemi"], ref, reports["native"], plan.fixed_rate)))
    if args.json:
        save_json(every, args.json)
    if not args.smoke:
        print(plot(ramp_series([reports["kemi"], reports["native"], reports["ceiling"]]),
                   args.plot))
    failed = sum(report.fixed_failed for report in every)
    line = result_line(reports["kemi"], reports["native"], reports["ceiling"], failed)
    print(line + (reference_keys(reports["kemi"], ref, reports["native"]) if ref else ""),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

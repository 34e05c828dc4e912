"""Where the KEMI edge's time goes, next to the native reference (`python -m bench.edge.profile`).

Two measurements on the same fixed-rate load (sipp-scenarios/uic-answered, bench plain TCP leg):
- Kamailio's own timing of each request route (`latency_cfg_log`: "request-route executed in:
  N usec"), for the KEMI edge and the native reference: the script's cost per request without
  the core's parsing, tm and I/O around it;
- with `--count-ksr`, the KSR calls the edge makes per request (a counting proxy put in front
  of the KSR module in a profile-only entry script; it slows the edge, so that run is separate);
- with py-spy installed (`pip install py-spy` into the venv for the session; not a project
  dependency), a sampling profile of the busiest KEMI worker: the Python functions the time is
  spent in, KSR calls included (py-spy sees them as Python calls into the module).
Not part of `make bench-edge`: profiling perturbs the timing it would report.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from provisioning.templates_dir import KEMI_DIR

from .kamailio import Kamailio, children_of, cpu_seconds_of
from .load import Step, StepResult, percentile, run_step
from .setups import Setup, kemi_setup, native_setup
from .site import BenchPorts, BenchSite, bench_site

ROUTE_TIME = re.compile(r"request-route executed in: (\d+) usec")


def with_route_timing(setup: Setup) -> Setup:
    """The same configuration, logging each request route's duration at INFO (debug=2)."""
    text = setup.config.read_text(encoding="utf-8")
    if "latency_cfg_log" in text:
        return setup
    text = re.sub(r"^debug=(\d+)$", r"debug=\1\nlatency_cfg_log=2", text, count=1, flags=re.M)
    setup.config.write_text(text, encoding="utf-8")
    return setup


COUNTING_ENTRY = '''"""PROFILE-ONLY entry script (bench/edge/profile.py --count-ksr): counts KSR calls."""

import json
import os
import sys
from collections import Counter

sys.path.insert(0, {kemi_parent})

import KSR as _KSR  # noqa: E402

import kemi.edge as edge_module  # noqa: E402

COUNTS = Counter()


class CountingProxy:
    def __init__(self, target, name):
        self._target = target
        self._name = name

    def __getattr__(self, attribute):
        value = getattr(self._target, attribute)
        name = self._name + "." + attribute
        if callable(value):
            def counted(*args):
                COUNTS[name] += 1
                return value(*args)
            return counted
        return CountingProxy(value, name)


edge_module.KSR = CountingProxy(_KSR, "KSR")


class CountingEdge(edge_module.WhatsAppEdge):
    requests = 0

    def from_meta(self):
        return not edge_module.KSR.is_UDP()

    def ksr_request_route(self, msg):
        result = super().ksr_request_route(msg)
        CountingEdge.requests += 1
        if CountingEdge.requests % 100 == 0:
            path = os.path.join({out}, "ksr-counts-%d.json" % os.getpid())
            with open(path, "w") as handle:
                json.dump({{"requests": CountingEdge.requests, "counts": COUNTS}}, handle)
        return result


def mod_init():
    edge = edge_module.create_edge({settings})
    edge.__class__ = CountingEdge
    return edge
'''


def with_ksr_counting(setup: Setup) -> Setup:
    """The KEMI set-up loading the counting entry script instead of the bench one."""
    entry = setup.folder / "wa_edge_count.py"
    entry.write_text(COUNTING_ENTRY.format(
        kemi_parent=json.dumps(str(KEMI_DIR.parent)), out=json.dumps(str(setup.folder)),
        settings=json.dumps(str(setup.folder / "edge-settings.json"))), encoding="utf-8")
    text = setup.config.read_text(encoding="utf-8")
    setup.config.write_text(text.replace("/wa_edge_bench.py", "/wa_edge_count.py"),
                            encoding="utf-8")
    return setup


def ksr_counts(site: BenchSite, setup: Setup, rate: int, seconds: float, folder: Path) -> list[str]:
    """KSR calls per request route and per call, by function, from the counting entry script."""
    setup = with_ksr_counting(setup)
    with Kamailio(setup, folder / "count") as _kamailio:
        result = run_step(site, Step(rate, int(rate * seconds), site.ports.plain, "tcp"),
                          folder / "count-load", True)
        time.sleep(0.5)
    requests = 0
    counts: Counter[str] = Counter()
    for path in setup.folder.glob("ksr-counts-*.json"):
        data = json.loads(path.read_text())
        requests += int(data["requests"])
        counts.update(data["counts"])
    if not requests:
        return ["  KSR calls: no counts written"]
    total = sum(counts.values())
    per_call = requests / max(result.successful, 1)
    out = [f"  KSR calls: {total / requests:.1f} per request route, "
           f"{total / requests * per_call:.0f} per call ({per_call:.1f} request routes per call, "
           f"{result.successful} calls, {result.failed} failed); most frequent per call:"]
    out += [f"    {n / requests * per_call:5.1f}  {name}" for name, n in counts.most_common(25)]
    return out


def busiest_child(kamailio: Kamailio, window_s: float = 1.0) -> int:
    before = {pid: cpu_seconds_of(pid) for pid in children_of(kamailio.main_pid)}
    time.sleep(window_s)
    return max(before, key=lambda pid: cpu_seconds_of(pid) - before[pid])


def py_spy_summary(raw: Path, top: int = 18) -> list[str]:
    """Self and inclusive sample shares per Python function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r" \((?:.*/)?([^/]+:\d+)\)$", r" (\1)", f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(re.sub(r":\d+\)$", ")", f) for f in frames):
            inclusive[frame] += count
    if not total:
        return ["  py-spy: no samples"]
    out = [f"  py-spy: {total} samples; self time (leaf frame, file:line):"]
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    out.append("  inclusive time per function:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return out


def profile_setup(site: BenchSite, setup: Setup, rate: int, seconds: float, folder: Path,
                  py_spy: str | None) -> list[str]:
    setup = with_route_timing(setup)
    lines = [f"[{setup.name}]"]
    with Kamailio(setup, folder) as kamailio:
        run_step(site, Step(50, 100, site.ports.plain, "tcp"), folder / f"{setup.name}-warmup",
                 True)
        outcome: list[StepResult] = []
        worker = threading.Thread(target=lambda: outcome.append(run_step(
            site, Step(rate, int(rate * seconds), site.ports.plain, "tcp"),
            folder / f"{setup.name}-profiled", True)))
        log_mark = kamailio.process.log.stat().st_size
        cpu_before = kamailio.cpu_seconds()
        worker.start()
        if py_spy:
            pid = busiest_child(kamailio)
            raw = folder / "py-spy.raw"
            subprocess.run([py_spy, "record", "--pid", str(pid), "--duration",
                            str(max(1, int(seconds) - 2)), "--rate", "200", "--format", "raw",
                            "--output", str(raw), "--nonblocking"], capture_output=True,
                           timeout=seconds + 30, check=False)
            lines += py_spy_summary(raw) if raw.exists() else ["  py-spy: no output"]
        worker.join(timeout=seconds + 60)
        cpu = kamailio.cpu_seconds() - cpu_before
    result = outcome[0] if outcome else None
    with kamailio.process.log.open("rb") as log:
        log.seek(log_mark)
        durations = [int(m) for m in ROUTE_TIME.findall(log.read().decode(errors="replace"))]
    calls = result.successful if result else 0
    lines.insert(1, f"  {calls} calls at {rate} cps, {result.failed if result else '?'} failed; "
                    f"Kamailio CPU per call {1e6 * cpu / calls if calls else 0:.0f} us")
    if durations:
        as_float = [float(d) for d in durations]
        lines.insert(2, f"  request routes: {len(durations)} ({len(durations) / max(calls, 1):.1f} "
                        f"per call), mean {sum(durations) / len(durations):.0f} us, p50 "
                        f"{percentile(as_float, 0.5):.0f} us, p99 {percentile(as_float, 0.99):.0f} "
                        f"us; script time per call {sum(durations) / max(calls, 1):.0f} us")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--py-spy", default=shutil.which("py-spy")
                        or str(Path(sys.executable).with_name("py-spy")))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--count-ksr", action="store_true",
                        help="also count the KEMI edge's KSR calls (a separate, slower run)")
    args = parser.parse_args(argv)
    py_spy = args.py_spy if Path(args.py_spy).exists() else None
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-bench-edge-profile-"))
    try:
        site = bench_site(folder, BenchPorts())
        setups = [kemi_setup(site, args.workers, 2), native_setup(site, args.workers, 2)]
        for setup in setups:
            print("\n".join(profile_setup(site, setup, args.rate, min(args.seconds, 60), folder,
                                          py_spy if setup.name == "kemi" else None)), flush=True)
        if args.count_ksr:
            print("[kemi, KSR calls counted]")
            print("\n".join(ksr_counts(site, kemi_setup(site, args.workers, 2), 100, 5.0,
                                       folder)), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    if py_spy is None:
        print("py-spy not found: pip install py-spy into the venv for a Python profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

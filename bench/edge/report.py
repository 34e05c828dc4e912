"""What one bench run found, per set-up, and how it is printed and plotted."""

from __future__ import annotations

import importlib
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .kamailio import Memory
from .load import StepResult, percentile

GOAL_RATIO = 0.9
GOAL_ADDED_P99_MS = 2.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


@dataclass
class SetupReport:
    """One set-up: its fixed-rate rounds, its ramp, its memory before and after the ramp."""

    name: str
    label: str
    ramp: list[StepResult] = field(default_factory=list)
    fixed_rounds: list[StepResult] = field(default_factory=list)
    memory_before: Memory | None = None
    memory_after: Memory | None = None

    @property
    def max_cps(self) -> int:
        """Highest offered rate of the ramp with zero failed calls, at pace, not overloaded."""
        best = 0
        for step in self.ramp:
            if not step.passed:
                break
            best = step.rate
        return best

    def fixed_ms(self, fraction: float) -> float:
        """Call setup time at the fixed rate (microsecond message trace), median of rounds."""
        return median([percentile(r.setup_ms, fraction) for r in self.fixed_rounds])

    def fixed_rtd_ms(self, fraction: float) -> float:
        """The same from SIPp's response time 1 (whole ms on a 4 ms clock), median of rounds."""
        return median([percentile(r.response_ms, fraction) for r in self.fixed_rounds])

    @property
    def fixed_failed(self) -> int:
        return sum(r.failed for r in self.fixed_rounds)

    @property
    def cpu_us_per_call(self) -> float:
        return median([r.cpu_us_per_call for r in self.fixed_rounds])

    @property
    def stunnel_us_per_call(self) -> float:
        return median([1e6 * r.stunnel_cpu_s / r.successful
                       for r in self.fixed_rounds if r.successful])

    def lines(self) -> list[str]:
        out = [f"[{self.name}] {self.label}"]
        if self.fixed_rounds:
            rounds = self.fixed_rounds
            first = rounds[0]
            cpu = f"{self.cpu_us_per_call:.0f} us"
            if self.stunnel_us_per_call:
                cpu += f" (+ stunnel {self.stunnel_us_per_call:.0f} us)"
            out.append(f"  fixed {first.rate} cps, {len(rounds)} rounds x {first.calls} calls: "
                       f"{self.fixed_failed} failed; Kamailio CPU per call {cpu} (median)")
            out.append(f"    call setup (first INVITE to 200 OK, 407 round trip included), "
                       f"median of rounds: p50 {self.fixed_ms(0.5):.2f} ms "
                       f"p95 {self.fixed_ms(0.95):.2f} ms p99 {self.fixed_ms(0.99):.2f} ms; "
                       "p99 per round: "
                       + " ".join(f"{percentile(r.setup_ms, 0.99):.2f}" for r in rounds))
            out.append(f"    SIPp response time 1 (same span, 4 ms clock), median of rounds: "
                       f"p50 {self.fixed_rtd_ms(0.5):.0f} ms p95 {self.fixed_rtd_ms(0.95):.0f} ms "
                       f"p99 {self.fixed_rtd_ms(0.99):.0f} ms")
            for number, result in enumerate(rounds, 1):
                if result.notes:
                    out.append(f"    round {number}: {'; '.join(result.notes)}")
        for step in self.ramp:
            notes = f"  ({'; '.join(step.notes)})" if step.notes else ""
            out.append(f"  ramp {step.rate:>5} cps: {step.successful}/{step.calls} calls, "
                       f"{step.failed} failed, SIPp p50 {percentile(step.response_ms, 0.5):.0f} ms "
                       f"p99 {percentile(step.response_ms, 0.99):.0f} ms, "
                       f"{step.cpu_us_per_call:.0f} us CPU/call, {step.verdict}{notes}")
        if self.ramp:
            out.append(f"  highest call rate with zero failed calls: {self.max_cps} cps")
        if self.memory_before and self.memory_after:
            before, after = self.memory_before, self.memory_after
            out.append(f"  memory (ramp start -> 7 s after its end): shm {before.shm_used_kb} -> "
                       f"{after.shm_used_kb} KiB, pkg (all processes) {before.pkg_used_kb} -> "
                       f"{after.pkg_used_kb} KiB")
        return out


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def summary_lines(kemi: SetupReport, native: SetupReport, ceiling: SetupReport,
                  tls: SetupReport | None, fixed_rate: int) -> list[str]:
    added_p99 = kemi.fixed_ms(0.99) - native.fixed_ms(0.99)
    cps_ratio = ratio(kemi.max_cps, native.max_cps)
    cpu_kemi = kemi.cpu_us_per_call
    cpu_native = native.cpu_us_per_call
    out = [
        f"ratio KEMI/native call rate: {cps_ratio:.2f} (goal >= {GOAL_RATIO}: "
        f"{'met' if cps_ratio >= GOAL_RATIO else 'MISSED'})",
        f"ratio KEMI/ceiling call rate: {ratio(kemi.max_cps, ceiling.max_cps):.2f}",
        f"ratio KEMI/native Kamailio CPU per call at {fixed_rate} cps: "
        f"{ratio(cpu_kemi, cpu_native):.2f} ({cpu_kemi:.0f} vs {cpu_native:.0f} us)",
        f"added p99 at {fixed_rate} cps (KEMI - native): {added_p99:+.2f} ms (goal <= "
        f"{GOAL_ADDED_P99_MS:.0f} ms: {'met' if added_p99 <= GOAL_ADDED_P99_MS else 'MISSED'})",
    ]
    if tls and tls.fixed_rounds and kemi.fixed_rounds:
        out.append(f"TLS cost (KEMI through stunnel vs bench plain TCP, {fixed_rate} cps): "
                   f"p50 {tls.fixed_ms(0.5) - kemi.fixed_ms(0.5):+.2f} ms, "
                   f"p99 {tls.fixed_ms(0.99) - kemi.fixed_ms(0.99):+.2f} ms, "
                   f"Kamailio CPU per call {tls.cpu_us_per_call - cpu_kemi:+.0f} us, "
                   f"stunnel {tls.stunnel_us_per_call:.0f} us")
    return out


def result_line(kemi: SetupReport, native: SetupReport, ceiling: SetupReport, failed: int) -> str:
    return (f"RESULT kemi_cps={kemi.max_cps} native_cps={native.max_cps} "
            f"ceiling_cps={ceiling.max_cps} ratio={ratio(kemi.max_cps, native.max_cps):.2f} "
            f"p99_ms_at_500={kemi.fixed_ms(0.99):.2f} failed={failed}")


def reference_lines(kemi: SetupReport, ref: SetupReport, native: SetupReport,
                    fixed_rate: int) -> list[str]:
    """This tree's kemi/ against the --kemi-ref one, each against the same native rounds."""
    return [
        f"kemi/ of this tree vs --kemi-ref, Kamailio CPU per call at {fixed_rate} cps: "
        f"{kemi.cpu_us_per_call:.0f} vs {ref.cpu_us_per_call:.0f} us "
        f"({kemi.cpu_us_per_call - ref.cpu_us_per_call:+.0f} us, x"
        f"{ratio(kemi.cpu_us_per_call, ref.cpu_us_per_call):.2f}); over native: "
        f"{ratio(kemi.cpu_us_per_call, native.cpu_us_per_call):.2f} vs "
        f"{ratio(ref.cpu_us_per_call, native.cpu_us_per_call):.2f}",
        f"call rate over native: {ratio(kemi.max_cps, native.max_cps):.2f} vs "
        f"{ratio(ref.max_cps, native.max_cps):.2f} ({kemi.max_cps} vs {ref.max_cps} cps); "
        "CPU per call of each round (this tree / ref / native): "
        + " ".join(f"{a.cpu_us_per_call:.0f}/{b.cpu_us_per_call:.0f}/{c.cpu_us_per_call:.0f}"
                   for a, b, c in zip(kemi.fixed_rounds, ref.fixed_rounds, native.fixed_rounds,
                                      strict=False)),
    ]


def reference_keys(kemi: SetupReport, ref: SetupReport, native: SetupReport) -> str:
    """RESULT keys added by --kemi-ref (CPU per call of the three, the reference's ratios)."""
    return (f" kemi_cpu_us={kemi.cpu_us_per_call:.0f} native_cpu_us={native.cpu_us_per_call:.0f}"
            f" cpu_ratio={ratio(kemi.cpu_us_per_call, native.cpu_us_per_call):.2f}"
            f" ref_cps={ref.max_cps} ref_ratio={ratio(ref.max_cps, native.max_cps):.2f}"
            f" ref_cpu_us={ref.cpu_us_per_call:.0f}"
            f" ref_cpu_ratio={ratio(ref.cpu_us_per_call, native.cpu_us_per_call):.2f}")


def save_json(reports: list[SetupReport], path: Path) -> None:
    def plain(report: SetupReport) -> dict[str, Any]:
        data = asdict(report)
        for step in [*data["ramp"], *data["fixed_rounds"]]:
            values = step.pop("response_ms")
            traced = step.pop("setup_ms")
            step.update(rtd_p50_ms=percentile(values, 0.5), rtd_p95_ms=percentile(values, 0.95),
                        rtd_p99_ms=percentile(values, 0.99))
            if traced:
                step.update(p50_ms=percentile(traced, 0.5), p95_ms=percentile(traced, 0.95),
                            p99_ms=percentile(traced, 0.99))
        data["max_cps"] = report.max_cps
        return data
    path.write_text(json.dumps([plain(r) for r in reports], indent=2) + "\n", encoding="utf-8")


Series = dict[str, list[tuple[int, int, float, float]]]  # set-up -> (rate, failed, p50, p99)


def ramp_series(reports: list[SetupReport]) -> Series:
    return {r.name: [(s.rate, s.failed, percentile(s.response_ms, 0.5),
                      percentile(s.response_ms, 0.99)) for s in r.ramp] for r in reports}


def series_from_json(path: Path) -> Series:
    """The ramps of a run saved with --json, to draw its plot again."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {r["name"]: [(s["rate"], s["failed"], s["rtd_p50_ms"], s["rtd_p99_ms"])
                        for s in r["ramp"]] for r in data if r["ramp"]}


def plot(series: Series, path: Path) -> str:
    """Call rate against failed calls and response time, one colour per set-up (PNG).

    matplotlib is in the `bench` extra only, imported here so CI (dev extra) never needs it.
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, (failures, latency) = pyplot.subplots(2, 1, figsize=(8, 7), sharex=True)
    for index, (name, steps) in enumerate(series.items()):
        colour = f"C{index}"
        rates = [step[0] for step in steps]
        failures.plot(rates, [step[1] for step in steps], marker="o", color=colour, label=name)
        latency.plot(rates, [step[3] for step in steps], marker="o", color=colour,
                     label=f"{name} p99")
        latency.plot(rates, [step[2] for step in steps], linestyle="--", marker=".",
                     color=colour, label=f"{name} p50")
    failures.set_ylabel("failed calls in the step")
    failures.set_title("wa-sip edge, UIC calls with the 407 round trip (bench plain TCP leg)")
    failures.legend()
    failures.grid(True, alpha=0.3)
    latency.set_ylabel("SIPp INVITE to 200 OK (ms, 4 ms clock)")
    latency.set_xlabel("offered call rate (calls/s); each ramp stops at its first failed or "
                       "overloaded step")
    latency.set_yscale("symlog", linthresh=10)
    latency.legend(fontsize="small", ncol=3)
    latency.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return f"plot: {path}"

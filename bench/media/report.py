"""bench-media's plot: loss, jitter and FreeSWITCH CPU per call against concurrent calls."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .run import Step


def plot(steps: dict[str, list[Step]], path: Path, loss_limit_pct: float) -> str:
    """One colour per scenario (PNG). matplotlib is in the `bench` extra only, imported here so
    CI (dev extra) never needs it."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, (loss, jitter, cpu) = pyplot.subplots(3, 1, figsize=(8, 9), sharex=True)
    for index, (name, ramp) in enumerate(steps.items()):
        colour = f"C{index}"
        calls = [step.calls for step in ramp]
        loss.plot(calls, [step.loss_pct for step in ramp], marker="o", color=colour, label=name)
        jitter.plot(calls, [step.jitter(step.jitter_ms)[1] for step in ramp], marker="o",
                    color=colour, label=f"{name} max")
        jitter.plot(calls, [step.jitter(step.jitter_ms)[0] for step in ramp], marker=".",
                    linestyle="--", color=colour, label=f"{name} median")
        cpu.plot(calls, [step.fs_cpu_us_per_call / 1000 for step in ramp], marker="o",
                 color=colour, label=f"{name} FreeSWITCH")
        cpu.plot(calls, [(step.cpu.own_cores if step.cpu else 0) * 1000 / step.calls
                         for step in ramp], marker=".", linestyle=":", color=colour,
                 label=f"{name} media peer + wa-esl")
    loss.axhline(loss_limit_pct, color="grey", linestyle="--", linewidth=1)
    loss.set_ylabel("packet loss to WhatsApp (%)")
    loss.set_yscale("symlog", linthresh=0.1)
    loss.set_ylim(bottom=0)
    loss.set_title("wa-sip media on one FreeSWITCH, 2 cores shared with the media peer")
    jitter.set_ylabel("RFC 3550 jitter at WhatsApp (ms)")
    cpu.set_ylabel("CPU ms per call-second")
    cpu.set_xlabel("concurrent calls; each ramp stops at its first step with loss >= "
                   f"{loss_limit_pct} % or an unanswered call")
    for axis in (loss, jitter, cpu):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small", ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return f"plot: {path}"

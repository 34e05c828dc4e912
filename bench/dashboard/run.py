"""The dashboard's series from a lab run, drawn with matplotlib (Grafana is not in Debian).

`python -m bench.dashboard.run` starts the whole bundle on loopback (lab/bundle.py: edge, Meta
stand-in, FreeSWITCH, wa-esl), places a bounded mix of calls for `--seconds` (answered and
refused user-initiated calls, a wrong password, business-initiated calls Meta answers or
refuses), scrapes both /metrics endpoints every second as Prometheus would, and plots the
panels of contrib/grafana/wa-sip-dashboard.json from those samples into a PNG. The last line
is `RESULT ...` with the counts both endpoints ended with.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.bundle import BundleLab
from lab.meta_standin import META_ANSWERS_BY_FLOW, WHATSAPP_USER
from lab.metrics_scrape import Samples, ScrapeError, scrape, total, value

DEFAULT_PNG = Path(__file__).resolve().parents[2] / "contrib" / "grafana" / "lab-run.png"
NUMBERS = [{"business_number": "+15550100008", "phone_number_id": "100000000000008",
            "srtp_mode": "SDES"},
           {"business_number": "+15550100009", "phone_number_id": "100000000000009",
            "srtp_mode": "DTLS"}]


class Sampler(threading.Thread):
    """Scrapes the endpoints every `interval` s until stopped (bounded by the run's length)."""

    def __init__(self, urls: dict[str, str], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.interval = interval
        self.series: list[tuple[float, dict[str, Samples]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopped.is_set():
            taken: dict[str, Samples] = {}
            for name, url in self.urls.items():
                try:
                    taken[name] = scrape(url, timeout=2)
                except ScrapeError:
                    taken[name] = {}
            self.series.append((time.monotonic() - start, taken))
            self.stopped.wait(self.interval)


def call_mix(bundle: BundleLab, folder: Path) -> list[Callable[[], object]]:
    """One round of calls, each a callable; every one ends by itself (SIPp/originate bounded)."""
    sdes, dtls = (n["business_number"] for n in NUMBERS)
    edge = bundle.edge
    round_folder = folder

    def uic(number: str) -> Callable[[], object]:
        return lambda: bundle.uic(number, hold_ms=500, duration_s=1, folder=round_folder)

    def refused(flow: str) -> Callable[[], object]:
        answer = META_ANSWERS_BY_FLOW[flow]
        return lambda: bundle.originate(sdes, answer.called_number)

    def bic_answered() -> object:
        user = edge.whatsapp_user("bic-meta-hangup", folder=round_folder)
        try:
            return bundle.originate(sdes, WHATSAPP_USER)
        finally:
            user.wait(20)
            user.stop()

    return [uic(sdes), uic(dtls), refused("declined"), uic(sdes),
            lambda: edge.meta_call("uic-unknown-number", business_number="+15559999999",
                                   folder=round_folder),
            bic_answered, refused("no-call-permission"),
            lambda: edge.meta_call("uic-wrong-password", password="wrong",
                                   business_number=sdes, folder=round_folder),
            uic(dtls), refused("daily-limit")]


def rate_series(series: list[tuple[float, dict[str, Samples]]], source: str, name: str,
                labels: dict[str, str], window: int = 5) -> tuple[list[float], list[float]]:
    """Per-second rate of a counter over `window` samples (like rate()[5s])."""
    xs, ys = [], []
    for i in range(window, len(series)):
        (t0, a), (t1, b) = series[i - window], series[i]
        delta = total(b.get(source, {}), name, **labels) - total(a.get(source, {}), name, **labels)
        xs.append(t1)
        ys.append(max(delta, 0) / (t1 - t0))
    return xs, ys


def quantile_series(series: list[tuple[float, dict[str, Samples]]], name: str, fraction: float,
                    window: int = 15) -> tuple[list[float], list[float]]:
    """histogram_quantile over `window` samples, with linear interpolation inside a bucket."""
    xs, ys = [], []
    for i in range(window, len(series)):
        before, after = series[i - window][1].get("esl", {}), series[i][1].get("esl", {})
        buckets: dict[float, float] = {}
        for (metric, labels), number in after.items():
            if metric == f"{name}_bucket":
                bound = float(dict(labels)["le"])
                buckets[bound] = buckets.get(bound, 0.0) + number - before.get((metric, labels), 0)
        ordered = sorted(buckets.items())
        if not ordered or ordered[-1][1] <= 0:
            continue
        wanted, lower, below = fraction * ordered[-1][1], 0.0, 0.0
        for bound, count in ordered:
            if count >= wanted:
                if bound == float("inf"):
                    ys.append(lower)
                else:
                    share = (wanted - below) / (count - below) if count > below else 1.0
                    ys.append(lower + (bound - lower) * share)
                xs.append(series[i][0])
                break
            lower, below = bound, count
    return xs, ys


def plot(series: list[tuple[float, dict[str, Samples]]], png: Path) -> None:
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(3, 2, figsize=(13, 10), constrained_layout=True)
    figure.suptitle("wa-sip lab run: the dashboard's series (contrib/grafana/wa-sip-dashboard.json)")
    last_edge = series[-1][1].get("edge", {})

    calls = axes[0][0]
    outcomes = sorted({tuple(sorted(dict(ls).items())) for (n, ls), v in last_edge.items()
                       if n == "wasip_edge_calls_total" and v})
    for labels in outcomes:
        tags = dict(labels)
        xs, ys = rate_series(series, "edge", "wasip_edge_calls_total", tags)
        calls.plot(xs, ys, label=f"{tags['direction']} {tags['outcome']}")
    calls.set_title("Edge: calls per second by direction and outcome")
    calls.legend(fontsize=7)

    refusals = axes[0][1]
    codes = sorted(((dict(ls)["direction"] + " " + dict(ls)["outcome"], v)
                    for (n, ls), v in last_edge.items()
                    if n == "wasip_edge_calls_total" and v and dict(ls)["outcome"] != "answered"),
                   key=lambda item: item[1])
    refusals.barh([c for c, _ in codes], [v for _, v in codes], color="tab:red")
    refusals.set_title("Refused calls by outcome / diagnosis (run total)")

    digest = axes[1][0]
    for result in ("challenged", "accepted", "failed", "locked_out"):
        xs, ys = rate_series(series, "edge", "wasip_edge_digest_total", {"result": result})
        digest.plot(xs, ys, label=result)
    digest.set_title("Digest results per second")
    digest.legend(fontsize=7)

    latency = axes[1][1]
    for name, label in (("wasip_esl_uic_setup_seconds", "setup"),
                        ("wasip_esl_first_media_seconds", "first media")):
        for fraction in (0.5, 0.95):
            xs, ys = quantile_series(series, name, fraction)
            latency.plot(xs, [y * 1000 for y in ys], label=f"{label} p{int(fraction * 100)}")
    latency.set_title("wa-esl: UIC setup (CHANNEL_DATA to answer), first media (ms)")
    latency.legend(fontsize=7)

    memory = axes[2][0]
    times = [t for t, _ in series]
    memory.plot(times, [value(s.get("edge", {}), "wasip_edge_shmem_free_size") / 2**20
                        for _, s in series], label="shm free MiB")
    memory.set_title("Edge: shared memory free (MiB)")
    memory.legend(fontsize=7)

    gauges = axes[2][1]
    for name, label in (("wasip_edge_tls_opened_connections", "TLS connections"),
                        ("wasip_edge_dialog_active_dialogs", "dialogs"),
                        ("wasip_edge_tmx_active_transactions", "transactions")):
        gauges.plot(times, [value(s.get("edge", {}), name) for _, s in series], label=label)
    gauges.plot(times, [total(s.get("esl", {}), "wasip_esl_calls_active") for _, s in series],
                label="wa-esl active calls")
    gauges.set_title("Edge connections, dialogs, transactions; wa-esl active calls")
    gauges.legend(fontsize=7)
    for row in axes:
        for axis in row:
            if axis is not refusals:
                axis.set_xlabel("seconds into the run")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=72)
    # A line plot needs few colours: a 64-colour palette keeps the committed picture small.
    image: Any = importlib.import_module("PIL.Image").open(png)
    image.convert("RGB").quantize(colors=64).save(png, optimize=True)


def run_calls(folder: Path, seconds: float) -> tuple[Sampler, int]:
    """The bundle up, calls placed for `seconds` while both endpoints are sampled."""
    with BundleLab(folder, overrides={"numbers": NUMBERS}) as bundle:
        esl = bundle.config.esl.metrics_listen
        sampler = Sampler({"edge": f"http://127.0.0.1:{bundle.edge.ports.metrics}/metrics",
                           "esl": f"http://{esl}/metrics"})
        sampler.start()
        deadline = time.monotonic() + seconds
        placed = 0
        try:
            while time.monotonic() < deadline:
                for place in call_mix(bundle, folder):
                    if time.monotonic() >= deadline:
                        break
                    place()
                    placed += 1
            time.sleep(5)  # the last hangups reach both endpoints
        finally:
            sampler.stopped.set()
            sampler.join(timeout=10)
    return sampler, placed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=75.0, help="how long calls are placed")
    parser.add_argument("--out", type=Path, default=DEFAULT_PNG)
    args = parser.parse_args(argv)
    if not 5 <= args.seconds <= 600:
        raise SystemExit("bench-dashboard: --seconds must be 5-600 (the run is bounded)")
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-dashboard-"))
    try:
        sampler, placed = run_calls(folder, args.seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    plot(sampler.series, args.out)
    edge, esl_samples = sampler.series[-1][1].get("edge", {}), sampler.series[-1][1].get("esl", {})
    print(f"plot: {args.out}")
    print(f"RESULT calls_placed={placed} "
          f"edge_calls={total(edge, 'wasip_edge_calls_total'):.0f} "
          f"esl_calls={total(esl_samples, 'wasip_esl_calls_total'):.0f} "
          f"samples={len(sampler.series)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

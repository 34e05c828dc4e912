"""The end of `make lab`: both Prometheus endpoints scraped, checked against the calls placed.

What an operator's dashboard would show after the lab's calls: calls by direction and
outcome at the edge (xhttp_prom) and at the controller (wa-esl), digest results, setup and
first-media latency. Each expected (direction, outcome) count must appear at both ends; a
missing or extra call is a failure of the lab, as a failed call is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lab.metrics_scrape import Samples, ScrapeError, scrape, value

Expected = Counter[tuple[str, str]]


@dataclass
class MetricsSummary:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _calls(samples: Samples, name: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for (metric, labels), number in samples.items():
        if metric == name and number:
            tags = dict(labels)
            counts[(tags.get("direction", "?"), tags.get("outcome", "?"))] += int(number)
    return counts


def _quantile(samples: Samples, name: str, fraction: float) -> float | None:
    """The bucket bound under which `fraction` of the observations fell (no interpolation)."""
    by_bound: dict[float, float] = {}
    for (metric, labels), number in samples.items():
        if metric == f"{name}_bucket":  # summed over the other labels (direction)
            bound = float(dict(labels)["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + number
    buckets = sorted(by_bound.items())
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = fraction * buckets[-1][1]
    return next(bound for bound, count in buckets if count >= wanted)


def _describe(counts: Counter[tuple[str, str]]) -> str:
    return ", ".join(f"{d} {o} {n}" for (d, o), n in sorted(counts.items())) or "none"


def summarize(edge_url: str, esl_url: str | None, expected: Expected) -> MetricsSummary:
    summary = MetricsSummary()
    try:
        edge = scrape(edge_url)
    except ScrapeError as error:
        summary.problems.append(f"edge metrics: {error}")
        return summary
    edge_calls = _calls(edge, "wasip_edge_calls_total")
    summary.lines.append(f"edge {edge_url}: calls {_describe(edge_calls)}")
    digest = {dict(labels).get("result"): int(n) for (metric, labels), n in edge.items()
              if metric == "wasip_edge_digest_total" and n}
    summary.lines.append("edge: digest " + ", ".join(f"{k} {v}" for k, v in sorted(digest.items()))
                         + f"; TLS connections {value(edge, 'wasip_edge_tls_opened_connections'):.0f}"
                         + f", shm free {value(edge, 'wasip_edge_shmem_free_size') / 2**20:.1f} MiB")
    if edge_calls != expected:
        summary.problems.append(f"edge counted {_describe(edge_calls)}; the lab placed "
                                f"{_describe(expected)}")
    if esl_url is None:
        summary.lines.append("wa-esl: no metrics_listen in the lab's config: not checked")
        return summary
    try:
        esl = scrape(esl_url)
    except ScrapeError as error:
        summary.problems.append(f"wa-esl metrics: {error}")
        return summary
    esl_calls = _calls(esl, "wasip_esl_calls_total")
    summary.lines.append(f"wa-esl {esl_url}: calls {_describe(esl_calls)}; active "
                         f"{value(esl, 'wasip_esl_calls_active', direction='uic'):.0f} uic, "
                         f"{value(esl, 'wasip_esl_calls_active', direction='bic'):.0f} bic")
    latency = []
    for name, label in (("wasip_esl_uic_setup_seconds", "setup"),
                        ("wasip_esl_first_media_seconds", "first media")):
        p50, p99 = _quantile(esl, name, 0.5), _quantile(esl, name, 0.99)
        if p50 is not None and p99 is not None:
            latency.append(f"{label} p50 <= {p50 * 1000:.0f} ms, p99 <= {p99 * 1000:.0f} ms")
    summary.lines.append("wa-esl: " + ("; ".join(latency) or "no latency observed"))
    if esl_calls != expected:
        summary.problems.append(f"wa-esl counted {_describe(esl_calls)}; the lab placed "
                                f"{_describe(expected)}")
    return summary

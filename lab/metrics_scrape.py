"""Scrape a Prometheus endpoint as Prometheus would, for the lab's summary and the tests.

Reads the text exposition format line by line, tolerant of what Kamailio's xhttp_prom writes
(untyped statistics, timestamps after the value). Samples are keyed by metric name and label
set, so a test can ask for one series and a summary can add them up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import httpx

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)\s*(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]


class ScrapeError(Exception):
    """The endpoint did not answer 200 with metrics."""


def parse_exposition(text: str) -> Samples:
    samples: Samples = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = number
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    try:
        response = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as error:
        raise ScrapeError(f"{url}: {error}") from None
    if response.status_code != 200:
        raise ScrapeError(f"{url}: HTTP {response.status_code}")
    return parse_exposition(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """One series' value; 0 when it is absent (a counter never bumped)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def names(samples: Iterable[tuple[str, Labels]]) -> set[str]:
    return {name for name, _ in samples}

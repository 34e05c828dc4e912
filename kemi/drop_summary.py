"""Requests the edge drops or refuses before any call logic: counted each, logged in summary.

A flood (pike, a scanner outside the allow-list, a fuzzer) would otherwise write one log line
per request: megabytes per minute, and the one line that matters lost among them. Each drop
adds 1 to a Kamailio statistic (declared in kamailio.cfg, read with `stats.get_statistics`,
exported by an exporter later); the log gets the first drop of a kind at once and then at most
one summary line per kind, worker and interval, with the count and the sources seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

SUMMARY_INTERVAL = 10.0  # seconds between two log lines about the same kind of drop
SOURCES_NAMED = 5  # distinct source addresses a summary line names; the rest are counted


class Drop(Enum):
    """Kinds of drop, each with the statistic that counts it and the words that log it."""

    PIKE = ("wa_pike_blocked", "request flood blocked by pike")
    NOT_ALLOWED = ("wa_not_allowed_source", "dropped: source not in allowed_sources")
    UNTRUSTED = ("wa_untrusted_source", "refused with 403: source may not originate calls")
    MALFORMED = ("wa_malformed", "malformed request refused (sanity checks, unparsable header)")
    BAD_BYTES = ("wa_bad_bytes", "refused with 400: invalid UTF-8")
    UNKNOWN_DIALOG = ("wa_unknown_dialog", "in-dialog request on no route this site signed")
    LOCKED_OUT = ("wa_locked_out", "refused with 403: source locked out after failed digests")
    BAD_CREDENTIALS = ("wa_bad_credentials", "refused with 400: unusable digest credentials")
    NOT_A_PEER = ("wa_dmq_not_peer", "dropped: not a peer edge's DMQ socket ([cluster] edges)")

    @property
    def statistic(self) -> str:
        return self.value[0]

    @property
    def words(self) -> str:
        return self.value[1]


@dataclass
class _Tally:
    since: float
    count: int = 0
    sources: set[str] = field(default_factory=set)
    others: int = 0


class DropSummary:
    """Per worker (Kamailio forks workers; each keeps its own tallies, no locking needed)."""

    def __init__(self, interval: float = SUMMARY_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.tallies: dict[Drop, _Tally] = {}

    def record(self, drop: Drop, source: str) -> str | None:
        """Count one drop; the log line to write now, or None while the interval runs."""
        now = self.clock()
        tally = self.tallies.get(drop)
        if tally is None:
            self.tallies[drop] = _Tally(since=now)
            return f"{drop.words} ({source}); further ones summarised every " \
                   f"{self.interval:.0f} s, all counted in statistic {drop.statistic}"
        tally.count += 1
        if len(tally.sources) < SOURCES_NAMED:
            tally.sources.add(source)
        elif source not in tally.sources:
            tally.others += 1
        if now - tally.since < self.interval:
            return None
        named = ", ".join(sorted(tally.sources))
        more = f" and {tally.others} more requests from other sources" if tally.others else ""
        line = (f"{drop.words}: {tally.count} in the last {now - tally.since:.0f} s "
                f"from {named}{more} (statistic {drop.statistic})")
        self.tallies[drop] = _Tally(since=now)
        return line

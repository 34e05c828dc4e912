"""What can go wrong on the way to Graph, on demand: 5xx, rate limits, slow answers, resets.

Tests add rules (`FaultPlan.add`) that fire on matching requests a given number of times; the
rate limiter is a token bucket per app, as Graph's limits are per app (and per number).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["status", "rate_limit", "timeout", "reset"]


@dataclass
class FaultRule:
    """Fire `kind` on requests whose path contains `match` (and method, if given), `times` times.

    status: answer HTTP `status` with Graph `code` (a 5xx by default).
    rate_limit: HTTP `status` (429 by default) with Graph `code` (130429) and Retry-After.
    timeout: stay silent for `delay_s` before answering normally (the client should give up).
    reset: close the connection without an answer.
    """

    kind: FaultKind
    match: str = ""
    method: str | None = None
    times: int = 1
    status: int = 500
    code: int = 1
    delay_s: float = 2.0
    retry_after: float | None = None
    after: int = 0  # let this many matching requests through first


class FaultPlan:
    """The active rules; each request takes at most one firing rule."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()
        self.fired = 0

    def add(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.times <= 0 or rule.match not in path:
                    continue
                if rule.method is not None and rule.method != method:
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    continue
                rule.times -= 1
                self.fired += 1
                return rule
        return None


class RateLimiter:
    """Token bucket per app: `rate` requests/s sustained, `burst` at once."""

    def __init__(self, rate: float, burst: int, retry_after: float = 1.0,
                 code: int = 130429, status: int = 429,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.code = code  # 130429 for messages; call_permissions answers 613 past 100/s
        self.status = status
        self.rate = rate
        self.burst = burst
        self.retry_after = retry_after
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock  # a test's own clock: a loaded machine must not refill the bucket

    def allow(self, app_id: str) -> bool:
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(app_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[app_id] = (tokens, now)
                return False
            self._buckets[app_id] = (tokens - 1.0, now)
            return True

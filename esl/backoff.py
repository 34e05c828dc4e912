"""Reconnect delays: exponential, capped, with jitter so many controllers do not stampede."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float, max_s: float, *, factor: float = 2.0) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self._next = initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt (between half and all of the nominal value)."""
        nominal = self._next
        self._next = min(self._next * self.factor, self.max_s)
        return nominal * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        """Call after a connection worked, so the next outage starts from short delays."""
        self._next = self.initial_s

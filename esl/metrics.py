"""Latency samples the controller keeps about itself (event received -> commands written)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LatencySamples:
    """Bounded: keeps the last ``capacity`` samples, in seconds."""

    capacity: int = 100_000
    samples: list[float] = field(default_factory=list)
    count: int = 0

    def add(self, seconds: float) -> None:
        self.count += 1
        if len(self.samples) >= self.capacity:
            self.samples.pop(0)
        self.samples.append(seconds)

    def percentile(self, fraction: float) -> float:
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]

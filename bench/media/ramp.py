"""The load ramp bench-media and bench-rtpengine share: per scenario, concurrency levels one
after another until a step fails or the scenario's share of the time budget is spent.

Why one function: both benches answer "how many calls at what cost", and a ramp that stops at a
different point in each (one at its first failure, the other a step later) would make their
figures disagree for reasons that are not the media path's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar


class RampStep(Protocol):
    """What a ramp needs of one measured step."""

    @property
    def passed(self) -> bool: ...

    def line(self) -> str: ...


StepT = TypeVar("StepT", bound=RampStep)


async def ramp(scenarios: Sequence[str], levels: Sequence[int], budget_s: float,
               measure: Callable[[str, int], Awaitable[StepT]],
               limit_of: Callable[[StepT], str]) -> dict[str, list[StepT]]:
    """Each scenario in turn: `measure(scenario, calls)` for each level, printing each step's
    line; a scenario stops at its first failed step (saying what limited it, `limit_of`) or
    once it has used its share of `budget_s` (the budget split evenly over the scenarios)."""
    share_s = budget_s / max(1, len(scenarios))
    steps: dict[str, list[StepT]] = {}
    for scenario in scenarios:
        started = time.monotonic()
        steps[scenario] = []
        for calls in levels:
            if time.monotonic() - started > share_s:
                print(f"{scenario}: time budget spent, ramp stops", flush=True)
                break
            step = await measure(scenario, calls)
            steps[scenario].append(step)
            print(step.line(), flush=True)
            if not step.passed:
                print(f"{scenario}: limit at {calls} calls: {limit_of(step)}", flush=True)
                break
    return steps

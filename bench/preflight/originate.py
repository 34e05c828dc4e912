"""What pre-flight adds to a business-initiated call's set-up, against the Event Socket stand-in.

- **command**: ``wa-esl originate`` run in this process (typer's CliRunner: the whole command,
  site file read, pre-flight, Event Socket login, ``originate``, Meta's answer), with pre-flight
  and with ``--force``, alternately. Each run builds its own pre-flight (as each process
  does), so every pre-flight here is a cache miss: a new Graph connection and one GET. The
  interpreter's start-up, the same for both, is not in these figures.
- **api**: the controller's ``originate`` (``Controller.originate``, the API a dialer inside
  ``wa-esl run`` calls), one controller and one pre-flight shared by every call: ``force``,
  a user not seen before (cache miss: one Graph GET) and the user of the call before (cache
  hit inside ``cache_s``), interleaved.

Every call must be answered (the stand-in's Meta answers every BIC at once); one that is not
counts as failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from typer.testing import CliRunner

from esl.bic import BicRequest
from esl.cli import app
from esl.controller import Controller
from esl.preflight import PacedLookup
from siteconfig.controller import ControllerSettings


@dataclass
class Timings:
    """Set-up times (ms) by variant, and the calls that did not end answered."""

    samples: dict[str, list[float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, variant: str, ms: float, answered: bool, note: str = "") -> None:
        self.samples.setdefault(variant, []).append(ms)
        if not answered:
            self.failed[variant] = self.failed.get(variant, 0) + 1
            if note and len(self.notes) < 5:
                self.notes.append(f"{variant}: {note}")

    @property
    def failures(self) -> int:
        return sum(self.failed.values())


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), round(fraction * len(ordered) + 0.5))) - 1]


def _users(users: list[str]) -> Iterator[str]:
    yield from users
    raise SystemExit("bench: more originates than granted users; raise --users")


def command_originates(site: Path, business_number: str, users: list[str], rounds: int,
                       deadline: float) -> Timings:
    """``rounds`` x (``wa-esl originate --force``, ``wa-esl originate``), order alternating."""
    runner = CliRunner()
    timings = Timings()
    fresh = _users(users)

    def run(force: bool) -> None:
        user = next(fresh)
        argv = ["originate", "-c", str(site), "--from", business_number, "--to", user]
        started = time.perf_counter()
        result = runner.invoke(app, [*argv, "--force"] if force else argv)
        ms = 1000 * (time.perf_counter() - started)
        answered = result.exit_code == 0 and result.stdout.startswith("answered")
        timings.add("force" if force else "preflight", ms, answered,
                    " ".join(result.output.split())[:200])

    for index in range(rounds):
        if time.monotonic() > deadline:
            timings.notes.append(f"command: stopped at round {index} of {rounds} (time bound)")
            break
        for force in ((True, False) if index % 2 == 0 else (False, True)):
            run(force)
    return timings


async def api_originates(settings: ControllerSettings, business_number: str, users: list[str],
                         rounds: int, deadline: float) -> tuple[Timings, int]:
    """``rounds`` x (force, miss, hit) through one controller; also its cache hits."""
    controller = Controller(settings)
    timings = Timings()
    fresh = _users(users)
    await controller.start()
    try:
        await asyncio.wait_for(controller.inbound_ready.wait(), 10)
        lookup = controller.preflight.lookup if controller.preflight is not None else None
        assert isinstance(lookup, PacedLookup), "pre-flight with Graph expected"
        last_user = ""

        async def call(variant: str, user: str, force: bool) -> None:
            started = time.perf_counter()
            result = await controller.originate(BicRequest(business_number, user, None),
                                                force=force)
            ms = 1000 * (time.perf_counter() - started)
            timings.add(variant, ms, result.answered, result.diagnosis)

        def plan(index: int) -> list[tuple[str, Callable[[], tuple[str, bool]]]]:
            steps: list[tuple[str, Callable[[], tuple[str, bool]]]] = [
                ("force", lambda: (next(fresh), True)),
                ("miss", lambda: (next(fresh), False)),
                ("hit", lambda: (last_user, False)),  # the miss's user, answer still cached
            ]
            return steps if index % 2 == 0 else [steps[1], steps[2], steps[0]]

        for index in range(rounds):
            if time.monotonic() > deadline:
                timings.notes.append(f"api: stopped at round {index} of {rounds} (time bound)")
                break
            for variant, choose in plan(index):
                user, force = choose()
                if variant == "miss":
                    last_user = user
                await call(variant, user, force)
        return timings, lookup.cache_hits
    finally:
        await controller.stop()
        controller.store.close()

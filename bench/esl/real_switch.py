"""bench-esl against the real FreeSWITCH: UIC setups per second and CHANNEL_DATA-to-answer time.

No edge: SIPp plays the edge (sipp-scenarios/fs-uic-sdes/edge.xml, the INVITE as the edge
forwards it, SDES offer) and sends straight to the `wa-edge` profile of a FreeSWITCH started
from the rendered configuration (lab/freeswitch.py); its dialplan hands each call to the
controller running in this process, which answers it as in production (SRTP/codec variables,
answer, silence, park). Meta hangs up HOLD_MS after its ACK.

- capacity: SIPp offers calls far faster than they can be set up, `--fs-concurrency` at once at
  most (closed loop); setups/s = answered calls / (last answer - first CHANNEL_DATA).
- latency: SIPp offers `--fs-rate` calls per second (open loop); p50/p99 of CHANNEL_DATA received
  to CHANNEL_ANSWER received by the controller (what a caller waits for once FreeSWITCH has
  handed over the call).

Both are bounded: `--fs-calls` calls per phase, SIPp's own timeout, loopback only.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from esl.client import OutboundSession
from esl.controller import Controller
from esl.event import Event
from esl.prometheus import TimedOutboundSession
from esl.site import controller_settings
from lab.edge import EXAMPLE_CONFIG, merge
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate, loopback_overrides
from lab.processes import LabError, free_port
from lab.sipp import scenario
from provisioning.freeswitch_binary import freeswitch_available
from siteconfig.model import SiteConfig

BUSINESS_NUMBER = "+15550100001"
PASSWORD = "bench-Esl-password"
HOLD_MS = 200
SCENARIO = scenario("fs-uic-sdes", "edge")


@dataclass
class AnswerClock:
    """CHANNEL_DATA-to-CHANNEL_ANSWER times of every call the controller set up."""

    samples: list[float] = field(default_factory=list)
    first_channel_data: float | None = None
    last_answer: float | None = None

    def reset(self) -> None:
        self.samples.clear()
        self.first_channel_data = self.last_answer = None

    def wrap(self, handler: Callable[[OutboundSession], Awaitable[None]]
             ) -> Callable[[OutboundSession], Awaitable[None]]:
        async def timed_handler(session: OutboundSession) -> None:
            timed = TimedOutboundSession(session.connection)
            answered = False

            def on_event(event: Event) -> None:
                nonlocal answered
                if (event.name == "CHANNEL_ANSWER" and not answered and event.unique_id == timed.uuid
                        and timed.channel_data_at is not None):
                    answered = True
                    now = time.monotonic()
                    self.samples.append(now - timed.channel_data_at)
                    if self.first_channel_data is None or timed.channel_data_at < self.first_channel_data:
                        self.first_channel_data = timed.channel_data_at
                    self.last_answer = now if self.last_answer is None else max(self.last_answer, now)

            session.connection.on_event(on_event)
            await handler(timed)

        return timed_handler


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class PhaseResult:
    label: str
    offered: int
    answered: int
    sipp_failed: int
    setups_per_s: float
    p50_ms: float
    p99_ms: float


def site_config(ports: FreeswitchPorts, folder: Path) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw = merge(raw, loopback_overrides(ports, f"127.0.0.1:{free_port()}", PASSWORD))
    raw = merge(raw, {
        "media": {"anchor": "freeswitch"},  # the direct path, as this bench has always measured
        "numbers": [{"business_number": BUSINESS_NUMBER, "phone_number_id": "100000000000001",
                     "srtp_mode": "SDES"}],
        "esl": {"cdr_db": str(folder / "cdr.sqlite3"), "metrics_listen": None,
                "routes": [{"name": "park", "target": {"action": "park"}}]},
    })
    return SiteConfig.model_validate(raw)


def _sipp_failed(log: Path) -> int:
    """SIPp's final 'Failed call' count from its screen output (-trace_stat is not needed)."""
    failed = 0
    for line in log.read_text(errors="replace").splitlines():
        if line.strip().startswith("Failed call"):
            parts = line.split("|")
            if len(parts) > 2 and parts[2].strip().isdigit():
                failed = int(parts[2].strip())
    return failed


async def run_phase(fs: FreeswitchLab, clock: AnswerClock, folder: Path, label: str, calls: int,
                    rate: float, limit: int) -> PhaseResult:
    clock.reset()
    keys = {"business_number": BUSINESS_NUMBER, "meta_user": "+15550123456",
            "wacid": "wacid.bench", "rtp_port": str(free_port())}
    phase_folder = folder / label.replace(" ", "-").replace("/", "")
    phase_folder.mkdir()
    timeout_s = int(calls / max(rate, 1) + 60)
    # SIPp straight, without lab.sipp's per-message trace: at hundreds of calls per second the
    # trace file would slow the load generator, not FreeSWITCH
    argv = ["sipp", "-sf", str(SCENARIO), "-i", "127.0.0.1", "-p", str(free_port()), "-t", "u1",
            "-m", str(calls), "-r", f"{rate:g}", "-l", str(limit), "-d", str(HOLD_MS),
            "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
            "-trace_screen", "-screen_file", str(phase_folder / "screen.log"),
            "-default_behaviors", "all,-abortunexp"]
    for key, value in keys.items():
        argv += ["-key", key, value]
    argv.append(f"127.0.0.1:{fs.sip_port}")
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=phase_folder, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        code = await asyncio.wait_for(process.wait(), timeout_s + 15)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise LabError(f"SIPp did not finish the {label} phase within {timeout_s + 15} s") from None
    screen = phase_folder / "screen.log"
    failed = _sipp_failed(screen) if screen.exists() else calls
    if code not in (0, 1):  # 1: some calls failed (counted above); others: SIPp itself broke
        failed = max(failed, calls - len(clock.samples))
    span = ((clock.last_answer or 0.0) - (clock.first_channel_data or 0.0)) or 1e-9
    return PhaseResult(label, calls, len(clock.samples), failed, len(clock.samples) / span,
                       percentile(clock.samples, 0.50) * 1000, percentile(clock.samples, 0.99) * 1000)


async def wait_calls_ended(controller: Controller, timeout: float = 15.0) -> None:
    """SIPp has its BYEs answered before FreeSWITCH reports every hangup; let them land."""
    deadline = time.monotonic() + timeout
    while controller.store.active_calls() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def run_real_switch(calls: int, rate: float, concurrency: int,
                          capacity_rate: float = 10_000) -> list[PhaseResult] | str:
    """The two phases, or why they could not run."""
    if not freeswitch_available():
        return "no FreeSWITCH installed (scripts/install-freeswitch)"
    folder = Path(tempfile.mkdtemp(prefix="bench-esl-fs-"))
    try:
        ports = FreeswitchPorts()
        config = site_config(ports, folder)
        pem = dtls_certificate(folder / "dtls" / "dtls-srtp.pem")
        fs = FreeswitchLab(folder / "freeswitch", config, pem)
        try:
            await asyncio.to_thread(fs.start)  # it waits with blocking ESL calls of its own
            controller = Controller(controller_settings(config))
            clock = AnswerClock()
            controller.uic = clock.wrap(controller.uic)  # type: ignore[assignment]
            await controller.start()
            try:
                await asyncio.wait_for(controller.inbound_ready.wait(), 20)
                capacity = await run_phase(fs, clock, folder, f"closed loop {concurrency} in flight",
                                           calls, capacity_rate, concurrency)
                await wait_calls_ended(controller)
                latency = await run_phase(fs, clock, folder, f"rate {rate:g}/s", calls, rate,
                                          max(concurrency, int(rate * 2)))
            finally:
                await wait_calls_ended(controller)
                await controller.stop()
                controller.store.close()
        finally:
            await asyncio.to_thread(fs.stop)
        return [capacity, latency]
    except LabError as error:
        return str(error)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

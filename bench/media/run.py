"""Concurrent WhatsApp calls with SRTP and Opus on one FreeSWITCH: how many, at what CPU.

`make bench-media` starts one real FreeSWITCH from the rendered configuration (wa-esl answering)
and ramps concurrent user-initiated calls, one scenario at a time:
- sdes: SDES-SRTP with Opus; FreeSWITCH plays its tone (Opus encode) and reads WhatsApp's (decode);
- dtls: the same after an ICE-lite + DTLS-SRTP handshake per call;
- transcode: SDES with Opus, bridged by FreeSWITCH to a second leg on G.711 (PCMU, plain RTP, a
  small user agent in this process): Opus decode + PCMU encode and back, per call.
Per step it measures FreeSWITCH's CPU (/proc of its pid) over a steady window, and from the
WhatsApp peer's RTP receive side (and the G.711 leg's) the packet loss from sequence gaps and
the RFC 3550 interarrival jitter. A step passes with every call answered and loss under 0.5 %;
each ramp stops at its first failed step. The WhatsApp side is the lean media peer (pre-encoded
Opus, nothing decoded) in this one asyncio process, which shares the 2 cores with FreeSWITCH:
each step also says how busy this process and the machine were, hence what limited the ramp.
Reference in the same run: one SDES call alone (FreeSWITCH CPU per call-second).
Then, where rtpengine is installed, the rtpengine path (bench/media/anchored.py): a bundle with
[media] anchor = "rtpengine", Meta's SDES or DTLS media on rtpengine and this FreeSWITCH on plain
RTP, with Opus passed through (rtpengine-opus-*), Opus <-> PCMU in FreeSWITCH toward a PCMU leg
(rtpengine-transcode-*) and Meta offering PCMU too (rtpengine-g711-*): CPU per call of rtpengine
and of FreeSWITCH, loss both ways, handshake and first business packet at the highest passing
step, and each against the direct path's sdes figure of this run (`*_vs_direct_sdes`).
Where no FreeSWITCH is installed nothing runs: the reason is printed and RESULT says skipped.
Last line: RESULT sdes_calls=<n> dtls_calls=<n> transcode_calls=<n> fs_cpu_us_per_call_sdes=<x> ...
(fs_cpu_us_per_call_*: FreeSWITCH CPU microseconds per second of one call, idle CPU taken off,
median over the passed steps; <name>_loss_pct and _jitter_ms_max are the highest passed step's.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from esl.controller import Controller
from esl.site import controller_settings
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate
from lab.media.freeswitch_call import (
    DTLS_NUMBER,
    SDES_NUMBER,
    MediaCall,
    media_site,
    uic_call,
)
from lab.media.freeswitch_patch import is_patched
from lab.media.peer import MediaTimeouts
from lab.media.sdp import SrtpMode
from lab.processes import LabError
from provisioning.freeswitch_binary import FreeswitchNotFound, freeswitch_binary
from siteconfig.controller import Route as ControllerRoute
from siteconfig.model import Number, SiteConfig

from . import anchored
from .cpu import CpuSample, CpuUse
from .g711_leg import G711Endpoint, LegStats
from .ramp import ramp
from .report import plot

TRANSCODE_NUMBER = "+15550100003"
LOSS_LIMIT_PCT = 0.5
GOAL_SDES_CALLS_PER_CORE = 200
START_GAP_S = 0.02  # 50 new calls a second while a step ramps up
SETTLE_S = 1.0  # once every call's channels are up, before the CPU window
SETUP_SLACK_S = 1.0  # how much longer than the ramp (plus as much again) calls may take to be up
SCENARIOS = {  # name: (SRTP mode, business number)
    "sdes": (SrtpMode.SDES, SDES_NUMBER),
    "dtls": (SrtpMode.DTLS, DTLS_NUMBER),
    "transcode": (SrtpMode.SDES, TRANSCODE_NUMBER),
}
DEFAULT_LEVELS = (10, 25, 50, 75, 100, 130, 160, 200)
# The per-call CPU figure is the median over passed steps of at least this many calls: a
# single step near the top understates it (FreeSWITCH is then short of CPU and calls of the
# step may still be setting up), the first steps carry FreeSWITCH's fixed costs.
PER_CALL_MIN_CALLS = 10


@dataclass
class Step:
    """One concurrency level of one scenario."""

    scenario: str
    calls: int
    answered: int = 0
    expected: int = 0  # packets FreeSWITCH sent WhatsApp (sequence numbers), all calls
    lost: int = 0
    jitter_ms: list[float] = field(default_factory=list)  # per call, at its end
    g711_expected: int = 0
    g711_lost: int = 0
    g711_jitter_ms: list[float] = field(default_factory=list)
    cpu: CpuUse | None = None
    fs_idle_cores: float = 0.0

    @property
    def loss_pct(self) -> float:
        """The worse of the two receive sides (WhatsApp's, and the G.711 leg's if any)."""
        whatsapp = 100.0 * self.lost / self.expected if self.expected else 100.0
        if not self.g711_expected:
            return whatsapp
        return max(whatsapp, 100.0 * self.g711_lost / self.g711_expected)

    @property
    def passed(self) -> bool:
        return self.answered == self.calls and self.loss_pct < LOSS_LIMIT_PCT

    @property
    def fs_cpu_us_per_call(self) -> float:
        """FreeSWITCH CPU per second of one call (microseconds), its idle use taken off."""
        if self.cpu is None:
            return 0.0
        return max(0.0, self.cpu.freeswitch_cores - self.fs_idle_cores) * 1e6 / self.calls

    def jitter(self, which: list[float]) -> tuple[float, float]:
        """(median, max) over the calls, ms."""
        return (statistics.median(which), max(which)) if which else (0.0, 0.0)

    def line(self) -> str:
        median, worst = self.jitter(self.jitter_ms)
        cpu = self.cpu or CpuUse(0, 0, 0)
        text = (f"{self.scenario:9} {self.calls:4} calls: {self.answered} answered, loss "
                f"{self.loss_pct:.2f} % ({self.lost}/{self.expected} to WhatsApp), jitter median "
                f"{median:.2f} ms max {worst:.2f} ms")
        if self.g711_expected:
            g_median, g_worst = self.jitter(self.g711_jitter_ms)
            text += (f"; G.711 leg {self.g711_lost}/{self.g711_expected} lost, jitter "
                     f"{g_median:.2f}/{g_worst:.2f} ms")
        return (f"{text}; FreeSWITCH {cpu.freeswitch_cores * 100:.0f} % of a core "
                f"({self.fs_cpu_us_per_call:.0f} us per call-second), bench process "
                f"{cpu.own_cores * 100:.0f} %, others {others_cores(cpu) * 100:.0f} %, machine "
                f"{cpu.machine_busy * 100:.0f} % busy"
                f" -> {'pass' if self.passed else 'FAIL'}")


def bench_site(ports: FreeswitchPorts, folder: Path, g711: tuple[str, int]) -> SiteConfig:
    """media_site plus a third number (SDES) whose calls FreeSWITCH bridges to the G.711 leg:
    PCMU only, plain RTP (the leg toward a PBX inside the business's network)."""
    base = media_site(ports, folder)
    number = Number(business_number=TRANSCODE_NUMBER, phone_number_id="100000000000003",
                    srtp_mode="SDES")
    route = ControllerRoute.model_validate({
        "name": "g711", "match": {"business_number": TRANSCODE_NUMBER},
        "target": {"action": "bridge",
                   "destination": "{absolute_codec_string=PCMU,rtp_secure_media=false}"
                                  f"sofia/wa-edge/sip:g711@{g711[0]}:{g711[1]}"}})
    esl = base.esl.model_copy(update={"routes": [route, *base.esl.routes]})
    return SiteConfig.model_validate({**dict(base), "numbers": [*base.numbers, number], "esl": esl})


class TunedFreeswitch(FreeswitchLab):
    """The rendered FreeSWITCH, with mod_opus's encoder `complexity` (0-10) changed if asked:
    libopus is most of FreeSWITCH's CPU on these calls, and complexity its main knob."""

    def __init__(self, folder: Path, config: SiteConfig, pem: Path, opus_complexity: int | None) -> None:
        super().__init__(folder, config, pem)
        self.opus_complexity = opus_complexity

    def render(self) -> Path:
        out = super().render()
        if self.opus_complexity is not None:
            conf = self.conf / "autoload_configs" / "opus.conf.xml"
            text, count = re.subn(r'name="complexity" value="\d+"',
                                  f'name="complexity" value="{self.opus_complexity}"',
                                  conf.read_text(encoding="utf-8"))
            if count != 1:
                raise SystemExit(f"{conf}: no complexity parameter to change")
            conf.write_text(text, encoding="utf-8")
        return out


def freeswitch_pid(lab: FreeswitchLab) -> int:
    """FreeSWITCH writes its pid into its run folder."""
    return int((lab.run_dir / "run" / "freeswitch.pid").read_text(encoding="ascii").split()[0])


class Bench:
    """One FreeSWITCH, wa-esl and the G.711 leg, shared by every step."""

    def __init__(self, lab: FreeswitchLab, g711: G711Endpoint, folder: Path, measure_s: float) -> None:
        self.lab = lab
        self.g711 = g711
        self.folder = folder
        self.measure_s = measure_s
        self.pid = freeswitch_pid(lab)
        self.fs_idle_cores = 0.0

    async def idle(self, seconds: float = 2.0) -> float:
        """FreeSWITCH's CPU with no call (its timers), taken off the per-call figures."""
        before, started = CpuSample.take(self.pid), time.monotonic()
        await asyncio.sleep(seconds)
        use = CpuUse.between(before, CpuSample.take(self.pid), time.monotonic() - started)
        self.fs_idle_cores = use.freeswitch_cores
        return use.freeswitch_cores

    async def step(self, scenario: str, calls: int) -> Step:
        mode, number = SCENARIOS[scenario]
        ramp_s = calls * START_GAP_S
        # every call outlives the window: all up at 2 * ramp_s + SETUP_SLACK_S at the latest
        slack_s = ramp_s + SETUP_SLACK_S
        hold_s = ramp_s + slack_s + SETTLE_S + self.measure_s + 1.0
        channels = calls * (2 if scenario == "transcode" else 1)
        timeouts = MediaTimeouts(start_s=5, mid_call_s=5)

        async def one(index: int) -> MediaCall:
            await asyncio.sleep(index * START_GAP_S)
            return await uic_call(self.lab, mode, number, self.folder, hold_s=hold_s,
                                  timeouts=timeouts, observe=False, lean=True)

        tasks = [asyncio.create_task(one(i)) for i in range(calls)]
        await asyncio.sleep(ramp_s)
        await self.wait_channels(channels, slack_s)
        await asyncio.sleep(SETTLE_S)
        before, started = CpuSample.take(self.pid), time.monotonic()
        await asyncio.sleep(self.measure_s)
        cpu = CpuUse.between(before, CpuSample.take(self.pid), time.monotonic() - started)
        results = await asyncio.gather(*tasks)
        await self.wait_quiet()
        step = Step(scenario, calls, cpu=cpu, fs_idle_cores=self.fs_idle_cores)
        for call in results:
            report = call.report
            if call.sip_status == 200 and report.packets_received > 0:
                step.answered += 1
            step.expected += report.packets_expected
            step.lost += report.packets_lost
            if report.packets_received:
                step.jitter_ms.append(report.jitter_ms)
        legs: list[LegStats] = self.g711.take_ended()
        step.g711_expected = sum(leg.expected for leg in legs)
        step.g711_lost = sum(leg.lost for leg in legs)
        step.g711_jitter_ms = [leg.jitter_ms for leg in legs if leg.received]
        if scenario == "transcode" and len(legs) < step.answered:
            step.answered = len(legs)  # a call without its G.711 leg did not transcode
        return step

    async def channel_count(self) -> int:
        reply = await self.lab.api_async("show channels count")
        match = re.search(r"(\d+) total", reply)
        return int(match.group(1)) if match else 0

    async def wait_channels(self, count: int, limit_s: float) -> None:
        """Until FreeSWITCH holds `count` channels (every call up), so the CPU window sees
        steady calls and no call set-up; at most `limit_s`."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and await self.channel_count() < count:
            await asyncio.sleep(0.1)

    async def wait_quiet(self, limit_s: float = 10.0) -> None:
        """Until FreeSWITCH has no channel left (the G.711 legs' BYEs included)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and await self.channel_count() > 0:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.3)


def others_cores(cpu: CpuUse) -> float:
    """Cores used by neither FreeSWITCH nor this process (other tests on a shared machine)."""
    return max(0.0, cpu.machine_busy * (os.cpu_count() or 1) - cpu.freeswitch_cores - cpu.own_cores)


def limit_of(step: Step) -> str:
    """Who used the cores in a failed step: FreeSWITCH, or the media peer beside it."""
    cpu = step.cpu or CpuUse(0, 0, 0)
    if cpu.own_cores >= 0.85:
        return (f"the media peer (bench process at {cpu.own_cores * 100:.0f} % of a core, "
                f"FreeSWITCH {cpu.freeswitch_cores * 100:.0f} %)")
    if cpu.machine_busy >= 0.9:
        return (f"both cores busy (FreeSWITCH {cpu.freeswitch_cores * 100:.0f} % of a core, bench "
                f"process {cpu.own_cores * 100:.0f} %, other processes {others_cores(cpu) * 100:.0f} %)")
    return f"FreeSWITCH (at {cpu.freeswitch_cores * 100:.0f} % of a core, cores not saturated)"


def direct_keys(result: dict[str, str], steps: dict[str, list[Step]], reference: Step) -> None:
    """The direct path's RESULT keys."""
    ref_us = reference.fs_cpu_us_per_call
    result.update({f"{name}_calls": str(max((s.calls for s in ss if s.passed), default=0))
                   for name, ss in steps.items()})
    for name, ss in steps.items():
        passed = [s for s in ss if s.passed]
        best = passed[-1] if passed else None
        per_call = [s.fs_cpu_us_per_call for s in passed if s.calls >= PER_CALL_MIN_CALLS] or [
            s.fs_cpu_us_per_call for s in passed]
        result[f"fs_cpu_us_per_call_{name}"] = f"{statistics.median(per_call):.0f}" if per_call else "none"
        result[f"{name}_loss_pct"] = f"{best.loss_pct:.2f}" if best else "none"
        result[f"{name}_jitter_ms_max"] = f"{best.jitter(best.jitter_ms)[1]:.2f}" if best else "none"
        failed = [s for s in ss if not s.passed]
        result[f"{name}_limit"] = (limit_of(failed[0]).split(" (")[0].replace(" ", "_")
                                   if failed else "not_reached")
    sdes = result.get("fs_cpu_us_per_call_sdes", "none")
    if sdes not in ("none", "0"):
        result["sdes_calls_per_fs_core"] = f"{1e6 / float(sdes):.0f}"
        result["goal_sdes_calls_per_fs_core"] = str(GOAL_SDES_CALLS_PER_CORE)
    result["ref_one_call_fs_cpu_us"] = f"{ref_us:.0f}"
    if ref_us > 0 and sdes not in ("none", "0"):
        result["sdes_per_call_vs_one_call"] = f"{float(sdes) / ref_us:.2f}"


async def run(args: argparse.Namespace, folder: Path) -> dict[str, str]:
    pem = dtls_certificate(folder / "dtls-srtp.pem")
    g711 = await G711Endpoint().open()
    lab = TunedFreeswitch(folder, bench_site(FreeswitchPorts(), folder, ("127.0.0.1", g711.port)),
                          pem, args.opus_complexity)
    await asyncio.to_thread(lab.start)
    result: dict[str, str] = {}
    steps: dict[str, list[Step]] = {}
    started = time.monotonic()
    try:
        controller = Controller(controller_settings(lab.config))
        await controller.start()
        try:
            await asyncio.wait_for(controller.inbound_ready.wait(), 15)
            bench = Bench(lab, g711, folder, args.measure)
            idle = await bench.idle(min(2.0, args.measure))
            print(f"FreeSWITCH idle: {idle * 100:.1f} % of a core", flush=True)
            reference = await bench.step("sdes", 1)
            print(f"reference {reference.line()}", flush=True)
            steps = await ramp(args.scenarios, args.levels, args.budget, bench.step, limit_of)
        finally:
            await controller.stop()
    finally:
        await asyncio.to_thread(lab.stop)
        g711.close()
    direct_keys(result, steps, reference)
    print(plot(steps, args.plot, LOSS_LIMIT_PCT))
    if args.rtpengine_scenarios:
        sdes = result.get("fs_cpu_us_per_call_sdes", "none")
        # the ramp's figure; the one-call reference where the direct sdes ramp did not run
        direct_sdes = float(sdes) if sdes not in ("none", "0") else (
            reference.fs_cpu_us_per_call or None)
        result["direct_sdes_figure"] = "ramp" if sdes not in ("none", "0") else "one_call"
        try:
            result.update(await anchored.run_anchored(
                args.rtpengine_scenarios, args.rtpengine_levels, args.rtpengine_budget,
                args.measure, folder, direct_sdes, freeswitch_pid))
        except LabError as error:
            print(f"rtpengine path cannot run: {error}", file=sys.stderr)
            result["rtpengine_path"] = "failed_to_start"
    if args.opus_complexity is not None:
        result["opus_complexity"] = str(args.opus_complexity)
    result["elapsed_s"] = f"{time.monotonic() - started:.0f}"
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=levels, default=list(DEFAULT_LEVELS),
                        help="concurrent calls per step, e.g. 10,50")
    parser.add_argument("--scenarios", type=lambda text: [v for v in text.split(",") if v],
                        default=None, help=f"direct: {', '.join(SCENARIOS)}; rtpengine path: "
                        f"{', '.join(anchored.SCENARIOS)} (default: all that can run here)")
    parser.add_argument("--measure", type=float, default=5.0, help="CPU window per step (s)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the direct ramps")
    parser.add_argument("--rtpengine-levels", type=levels, default=list(anchored.DEFAULT_LEVELS),
                        help="concurrent calls per step on the rtpengine path")
    parser.add_argument("--rtpengine-budget", type=float, default=180.0,
                        help="seconds for the rtpengine path's ramps")
    parser.add_argument("--opus-complexity", type=int, choices=range(11), default=None,
                        help="mod_opus encoder complexity (default: the rendered opus.conf's)")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent / "media-bench.png")
    args = parser.parse_args(argv)
    chosen = args.scenarios
    unknown = set(chosen or []) - set(SCENARIOS) - set(anchored.SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    try:
        binary = freeswitch_binary()
    except FreeswitchNotFound as error:
        print(f"bench-media skipped: no FreeSWITCH installed ({error})", flush=True)
        print("RESULT skipped=no_freeswitch", flush=True)
        return
    patched = is_patched(binary)
    if chosen is None:  # every scenario that can run here, saying why the others cannot
        chosen = [name for name in SCENARIOS if patched or name != "dtls"]
        if not patched:
            print(f"dtls (direct) skipped: {binary} lacks patches/freeswitch (no DTLS media "
                  "with ICE-lite straight to it; the rtpengine path carries DTLS)", flush=True)
        reason = anchored.skip_reason()
        if reason:
            print(f"rtpengine path skipped: {reason}", flush=True)
        else:
            chosen += list(anchored.SCENARIOS)
    elif "dtls" in chosen and not patched:
        print(f"{binary} lacks patches/freeswitch: no DTLS media with ICE-lite "
              "(scripts/install-freeswitch)", file=sys.stderr)
        sys.exit(2)
    args.scenarios = [name for name in chosen if name in SCENARIOS]
    args.rtpengine_scenarios = [name for name in chosen if name in anchored.SCENARIOS]
    if args.rtpengine_scenarios and anchored.skip_reason():
        print(f"rtpengine path skipped: {anchored.skip_reason()}", flush=True)
        args.rtpengine_scenarios = []
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()), flush=True)


def levels(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("positive numbers of calls, e.g. 10,50")
    return values


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

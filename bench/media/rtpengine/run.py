"""Concurrent WhatsApp calls with rtpengine anchoring Meta's media: how many, at what CPU.

`make bench-rtpengine` runs on registry parts only (no FreeSWITCH): one real edge (Debian's
Kamailio, [media] anchor = "rtpengine", lab/rtpengine_section.py's configuration) and Debian's
rtpengine started from the rendered file, and ramps concurrent user-initiated calls, one
scenario at a time:
- sdes: Meta's SDES-SRTP with Opus, rtpengine toward the business on plain RTP/AVP, Opus passed
  through (rtpengine does SRTP only);
- dtls: the same after ICE (rtpengine controlling against Meta's ICE-lite) and a DTLS-SRTP
  handshake per call, rtpengine the DTLS client.
Meta's side of each call is lab/media's strict peer in lean mode (pre-encoded Opus, nothing
decoded) behind its own TLS connection and digest through the edge (lab/meta_uac.py); the
business side a lean plain-RTP party per call at a FreeSWITCH node's address
(bench/media/rtpengine/business.py). Per step: rtpengine's CPU (all its threads, /proc) over a window
once every call's media flows, its idle use taken off; loss from RTP sequence gaps and RFC 3550
jitter at both receive sides (business -> Meta, Meta -> business); DTLS handshake and first
business packet after ACK per call (p50/p95); how busy this process and the machine were. A step
passes with every call answered (200, media both ways) and loss < 0.5 % both ways; each ramp
stops at its first failed step. Reference in the same run: one SDES call alone.
Last line: RESULT sdes_calls=<n> dtls_calls=<n> rtpengine_cpu_us_per_call_sdes=<x> ...
(rtpengine_cpu_us_per_call_*: rtpengine CPU microseconds per second of one call, median over
the passed steps of >= 10 calls; <name>_loss_pct / _jitter_ms_max: the highest passed step's.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.edge import LAB_PASSWORD, META_USER, EdgeLab, merge
from lab.media.dtls import DtlsCertificate, make_certificate
from lab.media.peer import MediaPeer, MediaReport, MediaTimeouts
from lab.media.plain_peer import PlainReport
from lab.media.sdp import SdpError, SrtpMode
from lab.meta_uac import MetaUac
from lab.processes import LabError
from lab.rtpengine import media_port_range
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    NUMBERS,
    PASSWORDS,
    rtpengine_overrides,
)

from ..cpu import CpuSample, CpuUse, threads_cpu_s
from ..ramp import ramp
from .business import BusinessParty

LOSS_LIMIT_PCT = 0.5
START_GAP_S = 1 / 30  # 30 new calls a second while a step ramps up (TLS + digest each)
SETUP_SLACK_S = 5.0  # how much longer than the ramp every call's media may take to flow
SETTLE_S = 1.0  # once every call's media flows, before the CPU window
SCENARIOS = {"sdes": SrtpMode.SDES, "dtls": SrtpMode.DTLS}
DEFAULT_LEVELS = (10, 25, 50, 100, 150, 200, 250, 300)
PER_CALL_MIN_CALLS = 10  # the per-call CPU figure: median over passed steps of this many calls
PORTS_PER_CALL = 4  # rtpengine: an RTP + RTCP port per leg (rtcp-mux toward Meta still takes 2)
MAX_PORTS = 16000  # fits below the kernel's ephemeral range (32768 up) from 10000, with room
TIMEOUTS = MediaTimeouts(start_s=10, mid_call_s=10)  # Meta's rule, shortened for a failed call


@dataclass
class CallResult:
    status: int
    meta: MediaReport
    call_id: str
    business: PlainReport | None = None
    error: str = ""

    @property
    def answered(self) -> bool:
        """200 and media both ways: the business's reached Meta, Meta's reached the business."""
        return (self.status == 200 and self.meta.packets_received > 0
                and self.business is not None and self.business.packets_received > 0)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"


@dataclass
class Step:
    """One concurrency level of one scenario."""

    scenario: str
    calls: int
    results: list[CallResult] = field(default_factory=list)
    cpu: CpuUse | None = None
    rtpengine_cores: float = 0.0
    rtpengine_idle_cores: float = 0.0
    up_s: float = 0.0  # from the first INVITE until every call's media flowed (or the limit)

    @property
    def answered(self) -> int:
        return sum(1 for r in self.results if r.answered)

    def _loss(self, expected: int, lost: int) -> float:
        return 100.0 * lost / expected if expected else 100.0

    @property
    def to_meta(self) -> tuple[int, int]:
        """(expected, lost) of the business's packets at Meta's side, all calls."""
        return (sum(r.meta.packets_expected for r in self.results),
                sum(r.meta.packets_lost for r in self.results))

    @property
    def to_business(self) -> tuple[int, int]:
        reports = [r.business for r in self.results if r.business is not None]
        return sum(b.packets_expected for b in reports), sum(b.packets_lost for b in reports)

    @property
    def loss_pct(self) -> float:
        """The worse of the two directions."""
        return max(self._loss(*self.to_meta), self._loss(*self.to_business))

    @property
    def passed(self) -> bool:
        return self.answered == self.calls and self.loss_pct < LOSS_LIMIT_PCT

    @property
    def cpu_us_per_call(self) -> float:
        """rtpengine CPU per second of one call (microseconds), its idle use taken off."""
        return max(0.0, self.rtpengine_cores - self.rtpengine_idle_cores) * 1e6 / self.calls

    @property
    def jitter_ms(self) -> list[float]:
        """Per call, at both receive sides."""
        values = [r.meta.jitter_ms for r in self.results if r.meta.packets_received]
        values += [r.business.jitter_ms for r in self.results
                   if r.business is not None and r.business.packets_received]
        return values

    def times(self, which: str) -> tuple[float | None, float | None]:
        """(p50, p95) of `dtls_handshake_ms` or `first_packet_after_ack_ms` over the calls."""
        values = [v for r in self.results if (v := getattr(r.meta, which)) is not None]
        return percentile(values, 0.5), percentile(values, 0.95)

    def line(self) -> str:
        cpu = self.cpu or CpuUse(0, 0, 0)
        jitter = self.jitter_ms
        meta_expected, meta_lost = self.to_meta
        business_expected, business_lost = self.to_business
        text = (f"{self.scenario:4} {self.calls:4} calls: {self.answered} answered (all up in "
                f"{self.up_s:.1f} s), loss {self.loss_pct:.2f} % (to Meta {meta_lost}/"
                f"{meta_expected}, to the business {business_lost}/{business_expected}), jitter "
                f"median {statistics.median(jitter) if jitter else 0:.2f} ms max "
                f"{max(jitter, default=0):.2f} ms")
        if self.scenario == "dtls":
            p50, p95 = self.times("dtls_handshake_ms")
            text += f"; DTLS handshake p50/p95 {ms(p50)}/{ms(p95)} ms"
        p50, p95 = self.times("first_packet_after_ack_ms")
        text += f"; first business packet after ACK p50/p95 {ms(p50)}/{ms(p95)} ms"
        errors = sorted({r.error or f"SIP {r.status}" for r in self.results if not r.answered})
        if errors:
            text += f"; failed: {', '.join(errors[:3])}"
        return (f"{text}; rtpengine {self.rtpengine_cores * 100:.1f} % of a core "
                f"({self.cpu_us_per_call:.0f} us per call-second), bench process "
                f"{cpu.own_cores * 100:.0f} %, others {others_cores(self) * 100:.0f} %, machine "
                f"{cpu.machine_busy * 100:.0f} % busy -> {'pass' if self.passed else 'FAIL'}")


def others_cores(step: Step) -> float:
    """Cores used by neither rtpengine nor this process (Kamailio, stunnel, other work)."""
    cpu = step.cpu or CpuUse(0, 0, 0)
    return max(0.0, cpu.machine_busy * (os.cpu_count() or 1) - step.rtpengine_cores - cpu.own_cores)


def limit_of(step: Step) -> str:
    """Who used the cores in a failed step: rtpengine, this process (Meta's and the business's
    media in Python), or the machine as a whole."""
    cpu = step.cpu or CpuUse(0, 0, 0)
    shares = (f"rtpengine {step.rtpengine_cores * 100:.0f} % of a core, bench process "
              f"{cpu.own_cores * 100:.0f} %, others {others_cores(step) * 100:.0f} %")
    if cpu.own_cores >= 0.85:
        return f"the bench process ({shares})"
    if cpu.machine_busy >= 0.9:
        return f"both cores busy ({shares})"
    return f"rtpengine ({shares}, cores not saturated)"


def bench_overrides(levels: list[int]) -> dict[str, object]:
    """lab/rtpengine_section.py's edge, with room for the ramp's calls: rtpengine's port range
    (PORTS_PER_CALL each, for every call of a ramp: rtpengine keeps a deleted call's ports for
    its delete-delay, 30 s by default, so one step's ports are still held when the next starts),
    and Meta's connections from one address (every bench call has its own
    TLS connection from loopback; Meta keeps a few per proxy) with Meta's address trusted as a
    production edge trusts Meta's prefixes (security.allowed_sources: pike is not in play)."""
    port_min, port_max = media_port_range(min(MAX_PORTS, PORTS_PER_CALL * (sum(levels) + 1) + 40))
    base = rtpengine_overrides()
    return merge(base, {
        "media": {"rtpengine": {"port_min": port_min, "port_max": port_max}},
        "security": {"allowed_sources": ["127.0.0.0/8"],
                     "connections": {"per_source": 409}},
    })


class Bench:
    """One edge with its rtpengine, and the business party, shared by every step."""

    def __init__(self, edge: EdgeLab, business: BusinessParty, certificate: DtlsCertificate,
                 measure_s: float) -> None:
        self.edge = edge
        self.business = business
        self.certificate = certificate
        self.measure_s = measure_s
        assert edge.rtpengine is not None and edge.rtpengine.pid is not None
        self.pid = edge.rtpengine.pid
        self.idle_cores = 0.0
        self.hang_up = asyncio.Event()
        self.up = 0
        self._serial = 0

    async def idle(self, seconds: float = 2.0) -> float:
        """rtpengine's CPU with no call (its timers), taken off the per-call figures."""
        before, started = threads_cpu_s(self.pid), time.monotonic()
        await asyncio.sleep(seconds)
        self.idle_cores = (threads_cpu_s(self.pid) - before) / (time.monotonic() - started)
        return self.idle_cores

    async def call(self, mode: SrtpMode, delay_s: float) -> CallResult:
        """One user-initiated call: TLS + digest through the edge, media until `hang_up`."""
        await asyncio.sleep(delay_s)
        number = NUMBERS[mode]
        ports = self.edge.ports
        self._serial += 1
        wacid = f"wacid.bench{mode.value.lower()}{self._serial}"
        meta = await MediaPeer(mode, tone_hz=META_TONE_HZ, timeouts=TIMEOUTS, lean=True,
                               certificate=self.certificate).open()
        uac = MetaUac(ports.meta_client, self.edge.config.site.sip_domain, META_USER,
                      f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                      f"<sip:127.0.0.1:{ports.internal};r2=on;lr>")
        status, error, started = 0, "", time.monotonic()
        try:
            await uac.open()
            response = await uac.invite(number, number[1:], LAB_PASSWORD, wacid,
                                        "bench-rtpengine", meta.offer())
            status = response.status or 0
            if status == 200:
                meta.accept_answer(response.body)
                meta.start()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(meta.first_packet.wait(), TIMEOUTS.start_s)
                if meta.first_packet.is_set():
                    self.up += 1
                await self.hang_up.wait()
                await uac.bye(wacid, round(time.monotonic() - started))
        except (OSError, TimeoutError, SdpError, asyncio.IncompleteReadError) as problem:
            error = f"{type(problem).__name__} {problem}".strip()
        finally:
            report = await meta.close()
            await uac.close()
        return CallResult(status, report, uac.call_id, error=error)

    async def step(self, scenario: str, calls: int) -> Step:
        mode = SCENARIOS[scenario]
        self.hang_up.clear()
        self.up = 0
        ramp_s = calls * START_GAP_S
        started = time.monotonic()
        tasks = [asyncio.create_task(self.call(mode, i * START_GAP_S)) for i in range(calls)]
        deadline = started + ramp_s + SETUP_SLACK_S
        while self.up < calls and time.monotonic() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        step = Step(scenario, calls, rtpengine_idle_cores=self.idle_cores,
                    up_s=time.monotonic() - started)
        await asyncio.sleep(SETTLE_S)
        before, rtpengine_before = CpuSample.take(self.pid), threads_cpu_s(self.pid)
        window_started = time.monotonic()
        await asyncio.sleep(self.measure_s)
        wall_s = time.monotonic() - window_started
        step.cpu = CpuUse.between(before, CpuSample.take(self.pid), wall_s)
        step.rtpengine_cores = (threads_cpu_s(self.pid) - rtpengine_before) / wall_s
        self.hang_up.set()
        results = await asyncio.gather(*tasks)
        await self.wait_quiet()
        ended = self.business.take_ended()
        for result in results:
            result.business = ended.get(result.call_id)
        step.results = results
        return step

    async def wait_quiet(self, limit_s: float = 10.0) -> None:
        """Until the business party holds no call (the edge relayed every BYE, rtpengine's
        sessions deleted with them)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.business.active:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)


def summary(steps: dict[str, list[Step]], reference: Step, started: float) -> dict[str, str]:
    """The RESULT line's keys."""
    result: dict[str, str] = {f"{name}_calls": str(max((s.calls for s in ss if s.passed), default=0))
                              for name, ss in steps.items()}
    for name, ss in steps.items():
        passed = [s for s in ss if s.passed]
        best = passed[-1] if passed else None
        per_call = [s.cpu_us_per_call for s in passed if s.calls >= PER_CALL_MIN_CALLS] or [
            s.cpu_us_per_call for s in passed]
        result[f"rtpengine_cpu_us_per_call_{name}"] = (f"{statistics.median(per_call):.0f}"
                                                       if per_call else "none")
        result[f"{name}_loss_pct"] = f"{best.loss_pct:.2f}" if best else "none"
        result[f"{name}_jitter_ms_max"] = f"{max(best.jitter_ms, default=0):.2f}" if best else "none"
        if name == "dtls":
            result["dtls_handshake_ms_p50"], result["dtls_handshake_ms_p95"] = (
                map(ms, best.times("dtls_handshake_ms")) if best else ("none", "none"))
        p50, p95 = best.times("first_packet_after_ack_ms") if best else (None, None)
        result[f"{name}_first_packet_ms_p50"], result[f"{name}_first_packet_ms_p95"] = ms(p50), ms(p95)
        failed = [s for s in ss if not s.passed]
        result[f"{name}_limit"] = (limit_of(failed[0]).split(" (")[0].replace(" ", "_")
                                   if failed else "not_reached")
    result["ref_one_call_rtpengine_cpu_us"] = f"{reference.cpu_us_per_call:.0f}"
    sdes = result.get("rtpengine_cpu_us_per_call_sdes", "none")
    if sdes not in ("none", "0"):
        result["sdes_calls_per_rtpengine_core"] = f"{1e6 / float(sdes):.0f}"
        if reference.cpu_us_per_call > 0:
            result["sdes_per_call_vs_one_call"] = f"{float(sdes) / reference.cpu_us_per_call:.2f}"
    result["elapsed_s"] = f"{time.monotonic() - started:.0f}"
    return result


async def run(args: argparse.Namespace, edge: EdgeLab) -> dict[str, str]:
    started = time.monotonic()
    business = await BusinessParty(("127.0.0.1", edge.ports.freeswitch[0]), BUSINESS_TONE_HZ).open()
    steps: dict[str, list[Step]] = {}
    try:
        bench = Bench(edge, business, make_certificate(), args.measure)
        idle = await bench.idle(min(2.0, args.measure))
        print(f"rtpengine idle: {idle * 100:.2f} % of a core", flush=True)
        reference = await bench.step("sdes", 1)
        print(f"reference {reference.line()}", flush=True)
        steps = await ramp(args.scenarios, args.levels, args.budget, bench.step, limit_of)
        if business.refused:
            print(f"business refused {len(business.refused)} offers: {business.refused[0]}")
    finally:
        await business.close()
    return summary(steps, reference, started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda text: [int(v) for v in text.split(",")],
                        default=list(DEFAULT_LEVELS), help="concurrent calls per step, e.g. 10,50")
    parser.add_argument("--scenarios", type=lambda text: text.split(","), default=list(SCENARIOS))
    parser.add_argument("--measure", type=float, default=5.0, help="CPU window per step (s)")
    parser.add_argument("--budget", type=float, default=200.0, help="seconds for all ramps")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the edge's folder (logs, rendered config) here")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels: positive numbers of calls")
    if shutil.which("rtpengine") is None:
        print("bench-rtpengine: no rtpengine installed (Debian's rtpengine-daemon; make lab "
              "installs it)", file=sys.stderr)
        sys.exit(2)
    with contextlib.ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="bench-rtpengine-")))
        try:
            edge = stack.enter_context(EdgeLab(folder / "edge", bench_overrides(args.levels),
                                               passwords=PASSWORDS))
        except LabError as error:
            print(f"bench-rtpengine: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"edge in {folder} with rtpengine {edge.config.media.rtpengine.port_min}-"
              f"{edge.config.media.rtpengine.port_max} on {edge.config.media.rtpengine.ng_listen}; "
              f"levels {','.join(map(str, args.levels))}, {1 / START_GAP_S:.0f} new calls/s, "
              f"{args.measure:g} s CPU window", flush=True)
        result = asyncio.run(run(args, edge))
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

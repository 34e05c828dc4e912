"""bench-media's rtpengine path: Meta's media on rtpengine, a real FreeSWITCH behind it on plain
RTP, beside the direct path's figures of the same run.

One bundle as lab/ runs it with [media] anchor = "rtpengine" (lab.bundle.BundleLab: Debian's
Kamailio and rtpengine, the FreeSWITCH in use, `wa-esl run`), and Meta's calls placed the way
bench-rtpengine places them (TLS + digest through the edge, lab/media's strict peer in lean mode,
bench/media/rtpengine/run.py's Bench), with FreeSWITCH instead of the lab's plain business party.
A scenario is a variant in one SRTP mode toward Meta (sdes, or dtls: ICE + DTLS-SRTP per call,
rtpengine the DTLS client), FreeSWITCH always on plain RTP/AVP:
- rtpengine-opus: Opus passed through by rtpengine; FreeSWITCH plays its tone (Opus encode) and
  reads Meta's (decode), as the direct path's sdes scenario does;
- rtpengine-transcode: Opus toward FreeSWITCH, which bridges the call to a PCMU-only leg on plain
  RTP (bench/media/g711_leg.py, the PBX): Opus <-> PCMU in FreeSWITCH, never in rtpengine;
- rtpengine-g711: the number has additional_codecs = ["PCMU"], so Meta's offer carries PCMU
  after Opus and the edge passes it; FreeSWITCH bridges to the same PCMU leg. Which codec
  FreeSWITCH took toward Meta is printed and in RESULT (`_meta_codec`): wa-esl answers from
  [esl.media] codecs (OPUS first) with the profile's generous negotiation, so it takes Opus and
  transcodes; PCMU there would be G.711 end to end.
Per step: rtpengine's CPU (its threads) and FreeSWITCH's (its pid), each with its idle use taken
off, over a window once every call's media flows; loss toward Meta from RTP sequence gaps at
Meta's peer, toward the business from FreeSWITCH's own count (rtp_audio_in_flaw_total against
rtp_audio_in_media_packet_count of each channel from Meta, at hangup) and, where bridged, at the
PCMU leg; RFC 3550 jitter at Meta and at the PCMU leg; DTLS handshake and first business packet
after ACK (p50/p95). Pass: every call answered and loss < 0.5 % both ways (bench/media/ramp.py).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esl.client import EslConnection, connect_inbound
from esl.event import Event
from lab.bundle import BundleLab
from lab.media.dtls import make_certificate
from lab.media.freeswitch_call import FREESWITCH_TONE_HZ
from lab.media.plain_peer import PlainReport
from lab.processes import LabError
from lab.rtpengine import media_port_range

from .cpu import CpuUse, process_cpu_s
from .g711_leg import G711Endpoint
from .ramp import ramp
from .rtpengine.run import (
    LOSS_LIMIT_PCT,
    MAX_PORTS,
    MODES,
    PORTS_PER_CALL,
    Bench,
    Scenario,
    Step,
    Variant,
    others_cores,
    summary,
)

PREFIX = "rtpengine-"
VARIANTS = {  # Variant.business_codec: what FreeSWITCH's far side is (tone, or the PCMU leg)
    "rtpengine-opus": Variant("rtpengine-opus", (), "opus", False),
    "rtpengine-transcode": Variant("rtpengine-transcode", (), "PCMU", False),
    "rtpengine-g711": Variant("rtpengine-g711", ("PCMU",), "PCMU", False),
}
SCENARIOS = {f"{variant}-{mode}": Scenario(VARIANTS[variant], mode)
             for variant in VARIANTS for mode in MODES}
NUMBERS = {name: f"+1555020{index:04d}" for index, name in enumerate(SCENARIOS, 1)}
DEFAULT_LEVELS = (10, 50, 100)
PER_CALL_MIN_CALLS = 10
TONE = {"action": "ivr",  # as the direct path's tone route (lab/media/freeswitch_call.py)
        "destination": f"playback tone_stream://%(1000,0,{FREESWITCH_TONE_HZ:g});loops=-1"}


def skip_reason() -> str:
    """Why the rtpengine path cannot run here ("" when it can; FreeSWITCH is checked before)."""
    if shutil.which("rtpengine") is None:
        return "no rtpengine installed (Debian's rtpengine-daemon; make lab installs it)"
    return ""


def bundle_overrides(g711: tuple[str, int], levels: list[int]) -> dict[str, Any]:
    """The bundle with rtpengine anchoring Meta's media: one number per scenario (the g711 ones
    with PCMU in additional_codecs), routes to FreeSWITCH's tone or to the PCMU leg, rtpengine's
    port range sized for the ramp (its deleted calls keep their ports 30 s), and Meta's bench
    connections from loopback trusted as a production edge trusts Meta's prefixes."""
    numbers, routes = [], []
    for index, (name, scenario) in enumerate(SCENARIOS.items(), 1):
        number = NUMBERS[name]
        numbers.append({"business_number": number, "phone_number_id": f"1000000002{index:05d}",
                        "srtp_mode": scenario.mode.upper(),
                        **({"additional_codecs": list(scenario.variant.meta_g711)}
                           if scenario.variant.meta_g711 else {})})
        target = (TONE if scenario.variant.business_codec == "opus" else {
            "action": "bridge",
            "destination": "{absolute_codec_string=PCMU,rtp_secure_media=false}"
                           f"sofia/wa-edge/sip:g711@{g711[0]}:{g711[1]}"})
        routes.append({"name": f"bench-{name}", "match": {"business_number": number},
                       "target": target})
    port_min, port_max = media_port_range(
        min(MAX_PORTS, PORTS_PER_CALL * (sum(levels) * len(SCENARIOS) + 10) + 40))
    return {
        "media": {"anchor": "rtpengine", "rtpengine": {"port_min": port_min, "port_max": port_max}},
        "security": {"allowed_sources": ["127.0.0.0/8"], "connections": {"per_source": 409}},
        "numbers": numbers,
        "esl": {"routes": routes, "linger_s": 5},
    }


def _count(event: Event, name: str) -> int:
    value = event.get(f"variable_rtp_audio_in_{name}") or "0"
    return int(value) if value.isdigit() else 0


class FreeswitchBusiness:
    """FreeSWITCH as bench-rtpengine's business side: its channels' hangup events give, per
    call from Meta (by Meta's Call-ID, which the edge relays unchanged), what FreeSWITCH
    received and the gaps it counted; `active` is its channels still up."""

    def __init__(self, events: EslConnection) -> None:
        self.events = events
        self.channels: set[str] = set()
        self._ended: dict[str, PlainReport] = {}
        events.on_event(self._on_event)

    @classmethod
    async def open(cls, bundle: BundleLab) -> FreeswitchBusiness:
        switch = bundle.freeswitch
        events = await connect_inbound(switch.esl_host, switch.esl_port, switch.password)
        business = cls(events)
        await events.command("event json CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE")
        return business

    def _on_event(self, event: Event) -> None:
        if event.name == "CHANNEL_CREATE":
            self.channels.add(event.unique_id)
            return
        if event.name != "CHANNEL_HANGUP_COMPLETE":
            return
        self.channels.discard(event.unique_id)
        call_id = event.get("variable_sip_call_id")
        if event.get("Call-Direction") != "inbound" or not call_id:
            return  # the PCMU leg: bench/media/g711_leg.py reports it
        received, gaps = _count(event, "media_packet_count"), _count(event, "flaw_total")
        self._ended[call_id] = PlainReport(packets_received=received,
                                           packets_expected=received + gaps, packets_lost=gaps)

    @property
    def active(self) -> int:
        return len(self.channels)

    def configure(self, *, codec: str = "opus", lean: bool = True, dtmf: str = "") -> None:
        """FreeSWITCH's side is its routes' (bundle_overrides): nothing to set per step."""

    def take_ended(self) -> dict[str, PlainReport]:
        ended, self._ended = self._ended, {}
        return ended

    async def close(self) -> None:
        await self.events.close()


@dataclass
class AnchoredStep(Step):
    """bench-rtpengine's step plus FreeSWITCH's CPU and the PCMU leg."""

    fs_cores: float = 0.0
    fs_idle_cores: float = 0.0
    bridged: bool = False
    g711_legs: int = 0
    g711_expected: int = 0
    g711_lost: int = 0
    g711_jitter_ms: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        answered = super().answered
        return min(answered, self.g711_legs) if self.bridged else answered

    @property
    def loss_pct(self) -> float:
        loss = super().loss_pct
        if self.bridged:
            loss = max(loss, 100.0 * self.g711_lost / self.g711_expected
                       if self.g711_expected else 100.0)
        return loss

    @property
    def jitter_ms(self) -> list[float]:
        """At Meta's peer and at the PCMU leg (FreeSWITCH's receive side counts no jitter)."""
        return [r.meta.jitter_ms for r in self.results if r.meta.packets_received] + list(
            self.g711_jitter_ms)

    @property
    def measured_elsewhere_cores(self) -> float:
        return self.fs_cores

    @property
    def fs_cpu_us_per_call(self) -> float:
        return max(0.0, self.fs_cores - self.fs_idle_cores) * 1e6 / self.calls

    @property
    def meta_codecs(self) -> str:
        return "+".join(sorted({r.meta.codec for r in self.results if r.meta.codec})) or "none"

    def line(self) -> str:
        text, verdict = super().line().rsplit(" -> ", 1)
        if self.bridged:
            text += f"; PCMU leg {self.g711_lost}/{self.g711_expected} lost"
        return (f"{text}; Meta's side on {self.meta_codecs}; FreeSWITCH "
                f"{self.fs_cores * 100:.0f} % of a core ({self.fs_cpu_us_per_call:.0f} us per "
                f"call-second) -> {verdict}")


class AnchoredBench(Bench):
    """Bench with FreeSWITCH's CPU sampled beside rtpengine's, and the PCMU leg's reports."""

    def __init__(self, bundle: BundleLab, business: FreeswitchBusiness, g711: G711Endpoint,
                 fs_pid: int, measure_s: float) -> None:
        super().__init__(bundle.edge, business, make_certificate(), measure_s)
        self.g711 = g711
        self.fs_pid = fs_pid
        self.fs_idle_cores = 0.0
        self._fs_before = 0.0

    async def idle(self, seconds: float = 2.0) -> float:
        fs_before, started = process_cpu_s(self.fs_pid), time.monotonic()
        idle = await super().idle(seconds)
        self.fs_idle_cores = (process_cpu_s(self.fs_pid) - fs_before) / (time.monotonic() - started)
        return idle

    def number_of(self, scenario: Scenario) -> str:
        return NUMBERS[scenario.name]

    def new_step(self, name: str, calls: int, up_s: float) -> Step:
        return AnchoredStep(name, calls, rtpengine_idle_cores=self.idle_cores, up_s=up_s,
                            fs_idle_cores=self.fs_idle_cores,
                            bridged=SCENARIOS[name].variant.business_codec != "opus")

    def window_opens(self) -> None:
        self._fs_before = process_cpu_s(self.fs_pid)

    def window_closes(self, step: Step, wall_s: float) -> None:
        assert isinstance(step, AnchoredStep)
        step.fs_cores = (process_cpu_s(self.fs_pid) - self._fs_before) / wall_s

    async def step(self, scenario: Scenario, calls: int) -> Step:
        step = await super().step(scenario, calls)
        assert isinstance(step, AnchoredStep)
        legs = self.g711.take_ended()
        step.g711_legs = len(legs)
        step.g711_expected = sum(leg.expected for leg in legs)
        step.g711_lost = sum(leg.lost for leg in legs)
        step.g711_jitter_ms = [leg.jitter_ms for leg in legs if leg.received]
        return step


def limit_of(step: AnchoredStep) -> str:
    cpu = step.cpu or CpuUse(0, 0, 0)
    others = others_cores(step)  # Kamailio, stunnel, wa-esl, other work
    shares = (f"FreeSWITCH {step.fs_cores * 100:.0f} % of a core, rtpengine "
              f"{step.rtpengine_cores * 100:.0f} %, bench process {cpu.own_cores * 100:.0f} %, "
              f"others {others * 100:.0f} %")
    expected, lost = step.to_business
    where = ("packets lost toward the business (FreeSWITCH's receive side)"
             if expected and 100.0 * lost / expected >= LOSS_LIMIT_PCT else "")
    shares = ", ".join(filter(None, [where, shares]))
    if cpu.own_cores >= 0.85:
        return f"the bench process ({shares})"
    if cpu.machine_busy >= 0.9:
        return f"both cores busy ({shares})"
    return f"FreeSWITCH or rtpengine ({shares}, cores not saturated)"


def anchored_summary(steps: dict[str, list[AnchoredStep]], direct_sdes_us: float | None
                     ) -> dict[str, str]:
    """bench-rtpengine's keys for these scenarios plus FreeSWITCH's CPU per call, the codec
    Meta's side ran, and each scenario's CPU per call against the direct path's sdes one."""
    scenarios = [SCENARIOS[name] for name in steps]
    as_steps: dict[str, list[Step]] = {name: list(ss) for name, ss in steps.items()}
    shared = summary(scenarios, as_steps, [], AnchoredStep("reference", 1), time.monotonic())
    result = {key: value for key, value in shared.items()
              if not key.endswith("_vs_opus") and key not in ("ref_one_call_rtpengine_cpu_us",
                                                               "elapsed_s")}
    for name, ss in steps.items():
        key = SCENARIOS[name].key
        passed = [s for s in ss if s.passed]
        big = [s for s in passed if s.calls >= PER_CALL_MIN_CALLS] or passed
        fs_us = statistics.median(s.fs_cpu_us_per_call for s in big) if big else None
        rtp_us = statistics.median(s.cpu_us_per_call for s in big) if big else None
        result[f"fs_cpu_us_per_call_{key}"] = "none" if fs_us is None else f"{fs_us:.0f}"
        result[f"{key}_meta_codec"] = passed[-1].meta_codecs if passed else "none"
        failed = [s for s in ss if not s.passed]
        result[f"{key}_limit"] = (limit_of(failed[0]).split(" (")[0].replace(" ", "_")
                                  if failed else "not_reached")
        if direct_sdes_us and fs_us is not None and rtp_us is not None:
            result[f"{key}_fs_vs_direct_sdes"] = f"{fs_us / direct_sdes_us:.2f}"
            result[f"{key}_total_vs_direct_sdes"] = f"{(fs_us + rtp_us) / direct_sdes_us:.2f}"
    return result


async def run_anchored(names: list[str], levels: list[int], budget_s: float, measure_s: float,
                       folder: Path, direct_sdes_us: float | None,
                       fs_pid_of: Any) -> dict[str, str]:
    """The rtpengine-path ramps (`names` of SCENARIOS); `fs_pid_of(FreeswitchLab)` its pid."""
    g711 = await G711Endpoint().open()
    bundle = BundleLab(folder / "anchored", overrides=bundle_overrides(("127.0.0.1", g711.port),
                                                                      levels))
    try:
        await asyncio.to_thread(bundle.start)
    except LabError:
        await asyncio.to_thread(bundle.stop)
        g711.close()
        raise
    try:
        business = await FreeswitchBusiness.open(bundle)
        try:
            bench = AnchoredBench(bundle, business, g711, fs_pid_of(bundle.freeswitch), measure_s)
            await bench.idle(min(2.0, measure_s))
            print(f"rtpengine path in {bundle.folder}: [media] anchor = \"rtpengine\", rtpengine on "
                  f"{bundle.config.media.rtpengine.ng_listen}, FreeSWITCH on plain RTP; idle "
                  f"rtpengine {bench.idle_cores * 100:.2f} %, FreeSWITCH "
                  f"{bench.fs_idle_cores * 100:.1f} % of a core", flush=True)

            async def measure(name: str, calls: int) -> AnchoredStep:
                step = await bench.step(SCENARIOS[name], calls)
                assert isinstance(step, AnchoredStep)
                return step

            steps = await ramp(names, levels, budget_s, measure, limit_of)
        finally:
            await business.close()
    finally:
        await asyncio.to_thread(bundle.stop)
        g711.close()
    if any(s.results and not s.passed for ss in steps.values() for s in ss):
        print(f"rtpengine path: a step failed (loss >= {LOSS_LIMIT_PCT} % or a call not "
              "answered); logs were in the bundle's folder", flush=True)
    return anchored_summary(steps, direct_sdes_us)

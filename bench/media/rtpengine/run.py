"""Concurrent WhatsApp calls with rtpengine anchoring Meta's media: how many, at what CPU.

`make bench-rtpengine` runs on registry parts only (no FreeSWITCH): one real edge (Debian's
Kamailio, [media] anchor = "rtpengine", lab/rtpengine_section.py's configuration) and Debian's
rtpengine started from the rendered file, and ramps concurrent user-initiated calls, one
scenario at a time. A scenario is a codec variant in one SRTP mode (sdes: Meta's SDES-SRTP;
dtls: ICE with rtpengine controlling against Meta's ICE-lite, then a DTLS-SRTP handshake per
call, rtpengine the DTLS client), toward a business on plain RTP/AVP:
- opus: Opus passed through (rtpengine does SRTP only), the business takes Opus;
- g711: G.711 end to end: Meta's offer carries PCMU after Opus (as it does for a number with
  `audio.additional_codecs`), the business takes PCMU only, rtpengine passes PCMU through;
- pcmu-transcode: Meta offers Opus only, the business takes PCMU only, and rtpengine transcodes
  (ng `codec: {transcode: [PCMU], mask: [opus]}` toward the business). The edge never asks for
  this (bench/README.md says why), so these calls skip Kamailio: the same rtpengine gets the
  edge's own flags per leg plus the codec options over ng (bench/media/rtpengine/ng.py).
Meta's side of each call is lab/media's strict peer in lean mode (pre-encoded frames, nothing
decoded) behind its own TLS connection and digest through the edge (lab/meta_uac.py); the
business side a lean plain-RTP party per call at a FreeSWITCH node's address
(bench/media/rtpengine/business.py). Before each ramp one check call, not lean: each side names
the tone it heard, Meta's side counts the telephone-event/8000 in the answer it got (Meta needs
exactly one), and DTMF goes both ways as RFC 4733 events when the answer has one.
Per step: rtpengine's CPU (all its threads, /proc) over a window once every call's media flows,
its idle use taken off; loss from RTP sequence gaps and RFC 3550 jitter at both receive sides
(business -> Meta, Meta -> business); DTLS handshake and first business packet after ACK per call
(p50/p95); how busy this process and the machine were. A step passes with every call answered
(200, media both ways) and loss < 0.5 % both ways; each ramp stops at its first failed step
(bench/media/ramp.py). Reference in the same run: one opus-sdes call alone, and each variant's
CPU per call against opus in the same mode (`*_vs_opus`): the machine is shared, so ratios
measured side by side travel better than absolute figures.
Last line: RESULT opus_sdes_calls=<n> ... rtpengine_cpu_us_per_call_<variant>_<mode>=<x> ...
(rtpengine CPU microseconds per second of one call, median over the passed steps of >= 10 calls;
<scenario>_loss_pct (the worse direction), _loss_to_meta_pct, _loss_to_business_pct,
_jitter_ms_max: the highest passed step's.)
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
from typing import Protocol

from kemi.media_flags import NumberMedia, toward_freeswitch, toward_meta_answer
from lab.edge import LAB_PASSWORD, META_USER, EdgeLab, merge
from lab.media.dtls import DtlsCertificate, make_certificate
from lab.media.peer import MediaPeer, MediaReport, MediaTimeouts
from lab.media.plain_peer import PlainReport, PlainRtpPeer
from lab.media.sdp import SdpError, SrtpMode
from lab.meta_uac import MetaUac
from lab.processes import LabError
from lab.rtpengine import media_port_range
from lab.rtpengine_section import (
    BUSINESS_TONE_HZ,
    META_TONE_HZ,
    NUMBERS,
    PASSWORDS,
    TONE_TOLERANCE_HZ,
    rtpengine_overrides,
)
from provisioning.rtpengine_ng import NgError
from siteconfig.listen_address import parse_listen_address

from ..cpu import CpuSample, CpuUse, process_cpu_s
from ..ramp import ramp
from .business import BusinessParty
from .ng import Ng, ng_options

LOSS_LIMIT_PCT = 0.5
START_GAP_S = 1 / 30  # 30 new calls a second while a step ramps up (TLS + digest each)
SETUP_SLACK_S = 5.0  # how much longer than the ramp every call's media may take to flow
SETTLE_S = 1.0  # once every call's media flows, before the CPU window
MODES = {"sdes": SrtpMode.SDES, "dtls": SrtpMode.DTLS}
DEFAULT_LEVELS = (10, 50, 100, 200)
PER_CALL_MIN_CALLS = 10  # the per-call CPU figure: median over passed steps of this many calls
PORTS_PER_CALL = 4  # rtpengine: an RTP + RTCP port per leg (rtcp-mux toward Meta still takes 2)
MAX_PORTS = 16000  # fits below the kernel's ephemeral range (32768 up) from 10000, with room
TIMEOUTS = MediaTimeouts(start_s=10, mid_call_s=10)  # Meta's rule, shortened for a failed call
CHECK_HOLD_S = 3.0  # the check call: media both ways, DTMF half a second in (a delayed digit: ~1 s)
CHECK_DIGITS = "159#"
TRANSCODE = {"codec": {"transcode": ["PCMU"], "mask": ["opus"]}}  # ng, toward the business


@dataclass(frozen=True)
class Variant:
    """What each side offers or takes, and whether rtpengine is asked to transcode."""

    name: str
    meta_g711: tuple[str, ...]  # G.711 Meta's offer carries after Opus (audio.additional_codecs)
    business_codec: str  # "opus" or "PCMU": all the business side takes
    transcode: bool  # rtpengine transcodes (over ng, not through the edge)


VARIANTS = {
    "opus": Variant("opus", (), "opus", False),
    "pcmu-transcode": Variant("pcmu-transcode", (), "PCMU", True),
    "g711": Variant("g711", ("PCMU",), "PCMU", False),
}


@dataclass(frozen=True)
class Scenario:
    variant: Variant
    mode: str  # "sdes" or "dtls"

    @property
    def name(self) -> str:
        return f"{self.variant.name}-{self.mode}"

    @property
    def key(self) -> str:
        """The RESULT line's spelling."""
        return self.name.replace("-", "_")


@dataclass
class CallResult:
    status: int
    meta: MediaReport
    call_id: str
    business: PlainReport | None = None
    error: str = ""
    telephone_events_to_meta: int = 0  # telephone-event/8000 payload types in Meta's answer

    @property
    def answered(self) -> bool:
        """200 and media both ways: the business's reached Meta, Meta's reached the business."""
        return (self.status == 200 and self.meta.packets_received > 0
                and self.business is not None and self.business.packets_received > 0)


def telephone_events_8000(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines()
               if line.lower().startswith("a=rtpmap:") and "telephone-event/8000" in line.lower())


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ms(value: float | None) -> str:
    return "none" if value is None else f"{value:.0f}"


def heard(hz: float | None, wanted: float) -> bool:
    return hz is not None and abs(hz - wanted) <= TONE_TOLERANCE_HZ


@dataclass
class Check:
    """The one non-lean call before a scenario's ramp: tones, the answer's DTMF, DTMF events."""

    scenario: str
    result: CallResult

    @property
    def tones(self) -> bool:
        business = self.result.business
        return (self.result.answered and heard(self.result.meta.heard_hz, BUSINESS_TONE_HZ)
                and business is not None and heard(business.heard_hz, META_TONE_HZ))

    @property
    def dtmf_to_business(self) -> str:
        return self.result.business.dtmf_received if self.result.business else ""

    @property
    def dtmf_to_meta(self) -> str:
        return "".join(e.digit for e in self.result.meta.dtmf_received if e.ended)

    @property
    def dtmf(self) -> bool:
        return (self.result.telephone_events_to_meta == 1
                and self.dtmf_to_business == CHECK_DIGITS and self.dtmf_to_meta == CHECK_DIGITS)

    def line(self) -> str:
        meta, business = self.result.meta, self.result.business
        silent = "" if self.result.telephone_events_to_meta else " (not negotiated: Meta sends none)"
        problem = f"; {self.result.error}" if self.result.error else ""
        return (f"check {self.scenario}: SIP {self.result.status}, Meta's side on {meta.codec}, "
                f"heard {hz(meta.heard_hz)} at Meta, "
                f"{hz(business.heard_hz if business else None)} at the business; "
                f"telephone-event/8000 toward Meta: {self.result.telephone_events_to_meta}; "
                f"DTMF {CHECK_DIGITS!r} -> business {self.dtmf_to_business!r}, -> Meta "
                f"{self.dtmf_to_meta!r}{silent}{problem} -> tones "
                f"{'both ways' if self.tones else 'NOT both ways'}, DTMF "
                f"{'both ways' if self.dtmf else 'NOT both ways'}")


def hz(value: float | None) -> str:
    return "nothing" if value is None else f"{value:.0f} Hz"


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

    @property
    def measured_elsewhere_cores(self) -> float:
        """Cores a subclass measures itself (FreeSWITCH's, bench/media/anchored.py), so
        `others_cores` leaves them out."""
        return 0.0

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
        text = (f"{self.scenario:19} {self.calls:4} calls: {self.answered} answered (all up in "
                f"{self.up_s:.1f} s), loss {self.loss_pct:.2f} % (to Meta {meta_lost}/"
                f"{meta_expected}, to the business {business_lost}/{business_expected}), jitter "
                f"median {statistics.median(jitter) if jitter else 0:.2f} ms max "
                f"{max(jitter, default=0):.2f} ms")
        if self.scenario.endswith("dtls"):
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
    return max(0.0, cpu.machine_busy * (os.cpu_count() or 1) - step.rtpengine_cores - cpu.own_cores
               - step.measured_elsewhere_cores)


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


def bench_overrides(levels: list[int], scenarios: int) -> dict[str, object]:
    """lab/rtpengine_section.py's edge, with room for the ramp's calls: rtpengine's port range
    (PORTS_PER_CALL each, for every call of a ramp: rtpengine keeps a deleted call's ports for
    its delete-delay, 30 s by default, so one step's ports are still held when the next starts),
    and Meta's connections from one address (every bench call has its own
    TLS connection from loopback; Meta keeps a few per proxy) with Meta's address trusted as a
    production edge trusts Meta's prefixes (security.allowed_sources: pike is not in play)."""
    port_min, port_max = media_port_range(
        min(MAX_PORTS, PORTS_PER_CALL * (sum(levels) + scenarios + 1) + 40))
    base = rtpengine_overrides()
    return merge(base, {
        "media": {"rtpengine": {"port_min": port_min, "port_max": port_max}},
        "security": {"allowed_sources": ["127.0.0.0/8"],
                     "connections": {"per_source": 409}},
    })


class Business(Protocol):
    """The business side of a step's calls: BusinessParty here, FreeSWITCH in bench-media's
    rtpengine-path scenarios (bench/media/anchored.py)."""

    @property
    def active(self) -> int: ...

    def configure(self, *, codec: str = "opus", lean: bool = True, dtmf: str = "") -> None: ...

    def take_ended(self) -> dict[str, PlainReport]: ...


class Bench:
    """One edge with its rtpengine, and the business party, shared by every step."""

    def __init__(self, edge: EdgeLab, business: Business, certificate: DtlsCertificate,
                 measure_s: float) -> None:
        self.edge = edge
        self.business = business
        self.certificate = certificate
        self.measure_s = measure_s
        assert edge.rtpengine is not None and edge.rtpengine.pid is not None
        self.pid = edge.rtpengine.pid
        self.ng = Ng(*parse_listen_address(edge.config.media.rtpengine.ng_listen))
        self.idle_cores = 0.0
        self.hang_up = asyncio.Event()
        self.up = 0
        self._serial = 0

    async def idle(self, seconds: float = 2.0) -> float:
        """rtpengine's CPU with no call (its timers), taken off the per-call figures."""
        before, started = process_cpu_s(self.pid), time.monotonic()
        await asyncio.sleep(seconds)
        self.idle_cores = (process_cpu_s(self.pid) - before) / (time.monotonic() - started)
        return self.idle_cores

    def _meta_peer(self, scenario: Scenario, lean: bool) -> MediaPeer:
        return MediaPeer(MODES[scenario.mode], tone_hz=META_TONE_HZ, timeouts=TIMEOUTS,
                         lean=lean, certificate=self.certificate, g711=scenario.variant.meta_g711)

    async def _media_up(self, meta: MediaPeer, dtmf: str) -> None:
        """After the ACK: Meta's peer waits for the business's first packet, then DTMF if asked."""
        meta.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(meta.first_packet.wait(), TIMEOUTS.start_s)
        if meta.first_packet.is_set():
            self.up += 1
            if dtmf:
                await asyncio.sleep(0.5)
                meta.send_dtmf(dtmf)

    async def call(self, scenario: Scenario, delay_s: float, *, lean: bool = True,
                   dtmf: str = "") -> CallResult:
        """One user-initiated call: TLS + digest through the edge, media until `hang_up`."""
        await asyncio.sleep(delay_s)
        if scenario.variant.transcode:
            return await self.transcoded_call(scenario, lean=lean, dtmf=dtmf)
        number = self.number_of(scenario)
        ports = self.edge.ports
        self._serial += 1
        wacid = f"wacid.bench{scenario.key}{self._serial}"
        meta = await self._meta_peer(scenario, lean).open()
        uac = MetaUac(ports.meta_client, self.edge.config.site.sip_domain, META_USER,
                      f"<sip:127.0.0.1:{ports.tls};transport=tls;r2=on;lr>,"
                      f"<sip:127.0.0.1:{ports.internal};r2=on;lr>")
        status, error, events, started = 0, "", 0, time.monotonic()
        try:
            await uac.open()
            response = await uac.invite(number, number[1:], LAB_PASSWORD, wacid,
                                        "bench-rtpengine", meta.offer())
            status = response.status or 0
            if status == 200:
                events = telephone_events_8000(response.body)
                meta.accept_answer(response.body)
                await self._media_up(meta, dtmf if events else "")
                await self.hang_up.wait()
                await uac.bye(wacid, round(time.monotonic() - started))
        except (OSError, TimeoutError, SdpError, asyncio.IncompleteReadError) as problem:
            error = f"{type(problem).__name__} {problem}".strip()
        finally:
            report = await meta.close()
            await uac.close()
        return CallResult(status, report, uac.call_id, error=error, telephone_events_to_meta=events)

    async def transcoded_call(self, scenario: Scenario, *, lean: bool, dtmf: str) -> CallResult:
        """The same call's media with rtpengine transcoding, set up over ng (no Kamailio): the
        edge's flags for each leg (kemi/media_flags.py) plus TRANSCODE toward the business."""
        self._serial += 1
        call_id = f"bench-transcode-{self._serial}-{os.urandom(4).hex()}"
        tags = {"call-id": call_id, "from-tag": "meta"}
        meta = await self._meta_peer(scenario, lean).open()
        business = await PlainRtpPeer(tone_hz=BUSINESS_TONE_HZ, lean=lean, codec="PCMU").open()
        status, error, events, report = 0, "", 0, None
        try:
            offer = await self.ng.sdp({"command": "offer", **tags, "sdp": meta.offer(),
                                       **ng_options(toward_freeswitch("RTP")), **TRANSCODE})
            answer = business.answer(offer)
            flags = toward_meta_answer(NumberMedia(MODES[scenario.mode].value))
            toward_meta = await self.ng.sdp({"command": "answer", **tags, "to-tag": "business",
                                             "sdp": answer, **ng_options(flags)})
            status = 200
            events = telephone_events_8000(toward_meta)
            meta.accept_answer(toward_meta)
            business.start()
            if dtmf:
                asyncio.get_running_loop().call_later(0.5, business.send_dtmf, dtmf)
            await self._media_up(meta, dtmf if events else "")
            await self.hang_up.wait()
        except (OSError, TimeoutError, SdpError, NgError) as problem:
            error = f"{type(problem).__name__} {problem}".strip()
        finally:
            meta_report = await meta.close()
            report = await business.close()
            with contextlib.suppress(NgError, OSError):
                await self.ng({"command": "delete", **tags, "delete-delay": 0})
        return CallResult(status, meta_report, call_id, business=report, error=error,
                          telephone_events_to_meta=events)

    async def check(self, scenario: Scenario) -> Check:
        """One call with everything decoded, and DTMF both ways."""
        self.hang_up.clear()
        self.business.configure(codec=scenario.variant.business_codec, lean=False,
                                dtmf=CHECK_DIGITS)
        task = asyncio.create_task(self.call(scenario, 0, lean=False, dtmf=CHECK_DIGITS))
        await asyncio.sleep(CHECK_HOLD_S)
        self.hang_up.set()
        result = await task
        await self.wait_quiet()
        if result.business is None:
            result.business = self.business.take_ended().get(result.call_id)
        return Check(scenario.name, result)

    async def step(self, scenario: Scenario, calls: int) -> Step:
        self.hang_up.clear()
        self.business.configure(codec=scenario.variant.business_codec)
        self.up = 0
        ramp_s = calls * START_GAP_S
        started = time.monotonic()
        tasks = [asyncio.create_task(self.call(scenario, i * START_GAP_S)) for i in range(calls)]
        deadline = started + ramp_s + SETUP_SLACK_S
        while self.up < calls and time.monotonic() < deadline and not all(t.done() for t in tasks):
            await asyncio.sleep(0.05)
        step = self.new_step(scenario.name, calls, time.monotonic() - started)
        await asyncio.sleep(SETTLE_S)
        before, rtpengine_before = CpuSample.take(self.pid), process_cpu_s(self.pid)
        self.window_opens()
        window_started = time.monotonic()
        await asyncio.sleep(self.measure_s)
        wall_s = time.monotonic() - window_started
        step.cpu = CpuUse.between(before, CpuSample.take(self.pid), wall_s)
        step.rtpengine_cores = (process_cpu_s(self.pid) - rtpengine_before) / wall_s
        self.window_closes(step, wall_s)
        self.hang_up.set()
        results = await asyncio.gather(*tasks)
        await self.wait_quiet()
        ended = self.business.take_ended()
        for result in results:
            if result.business is None:
                result.business = ended.get(result.call_id)
        step.results = results
        return step

    # ---- what bench-media's rtpengine-path scenarios (a FreeSWITCH business) change --------

    def number_of(self, scenario: Scenario) -> str:
        """The business number Meta calls in `scenario`."""
        return NUMBERS[MODES[scenario.mode]]

    def new_step(self, name: str, calls: int, up_s: float) -> Step:
        return Step(name, calls, rtpengine_idle_cores=self.idle_cores, up_s=up_s)

    def window_opens(self) -> None:
        """The CPU window of a step starts (rtpengine's and the machine's are sampled)."""

    def window_closes(self, step: Step, wall_s: float) -> None:
        """The CPU window of `step` ended after `wall_s`."""

    async def wait_quiet(self, limit_s: float = 10.0) -> None:
        """Until the business party holds no call (the edge relayed every BYE, rtpengine's
        sessions deleted with them)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.business.active:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)


def summary(scenarios: list[Scenario], steps: dict[str, list[Step]], checks: list[Check],
            reference: Step, started: float) -> dict[str, str]:
    """The RESULT line's keys."""
    result: dict[str, str] = {}
    per_call: dict[str, float] = {}
    for scenario in scenarios:
        key, ss = scenario.key, steps.get(scenario.name, [])
        passed = [s for s in ss if s.passed]
        best = passed[-1] if passed else None
        result[f"{key}_calls"] = str(best.calls if best else 0)
        figures = [s.cpu_us_per_call for s in passed if s.calls >= PER_CALL_MIN_CALLS] or [
            s.cpu_us_per_call for s in passed]
        if figures:
            per_call[scenario.name] = statistics.median(figures)
        result[f"rtpengine_cpu_us_per_call_{key}"] = (f"{per_call[scenario.name]:.0f}"
                                                      if figures else "none")
        opus = per_call.get(Scenario(VARIANTS["opus"], scenario.mode).name)
        if scenario.variant.name != "opus":
            result[f"{key}_vs_opus"] = (f"{per_call[scenario.name] / opus:.2f}"
                                        if figures and opus else "none")
        result[f"{key}_loss_pct"] = f"{best.loss_pct:.2f}" if best else "none"
        for direction in ("to_meta", "to_business"):
            expected, lost = getattr(best, direction) if best else (0, 0)
            result[f"{key}_loss_{direction}_pct"] = (f"{100.0 * lost / expected:.2f}"
                                                     if expected else "none")
        result[f"{key}_jitter_ms_max"] = f"{max(best.jitter_ms, default=0):.2f}" if best else "none"
        if scenario.mode == "dtls":
            result[f"{key}_handshake_ms_p50"], result[f"{key}_handshake_ms_p95"] = (
                map(ms, best.times("dtls_handshake_ms")) if best else ("none", "none"))
        p50, p95 = best.times("first_packet_after_ack_ms") if best else (None, None)
        result[f"{key}_first_packet_ms_p50"], result[f"{key}_first_packet_ms_p95"] = ms(p50), ms(p95)
        failed = [s for s in ss if not s.passed]
        result[f"{key}_limit"] = (limit_of(failed[0]).split(" (")[0].replace(" ", "_")
                                  if failed else "not_reached")
    for check in checks:
        key = check.scenario.replace("-", "_")
        result[f"{key}_tones"] = "both_ways" if check.tones else "not_both_ways"
        result[f"{key}_telephone_events_to_meta"] = str(check.result.telephone_events_to_meta)
        result[f"{key}_dtmf"] = "both_ways" if check.dtmf else (
            f"to_business:{check.dtmf_to_business or 'none'},to_meta:{check.dtmf_to_meta or 'none'}")
    result["ref_one_call_rtpengine_cpu_us"] = f"{reference.cpu_us_per_call:.0f}"
    opus_sdes = per_call.get("opus-sdes")
    if opus_sdes:
        result["opus_sdes_calls_per_rtpengine_core"] = f"{1e6 / opus_sdes:.0f}"
    result["elapsed_s"] = f"{time.monotonic() - started:.0f}"
    return result


async def run(args: argparse.Namespace, edge: EdgeLab, scenarios: list[Scenario]) -> dict[str, str]:
    started = time.monotonic()
    business = await BusinessParty(("127.0.0.1", edge.ports.freeswitch[0]), BUSINESS_TONE_HZ).open()
    by_name = {scenario.name: scenario for scenario in scenarios}
    try:
        bench = Bench(edge, business, make_certificate(), args.measure)
        idle = await bench.idle(min(2.0, args.measure))
        print(f"rtpengine idle: {idle * 100:.2f} % of a core", flush=True)
        checks = []
        for scenario in scenarios:
            checks.append(await bench.check(scenario))
            print(checks[-1].line(), flush=True)
        reference = await bench.step(Scenario(VARIANTS["opus"], "sdes"), 1)
        print(f"reference {reference.line()}", flush=True)
        steps = await ramp(list(by_name), args.levels, args.budget,
                           lambda name, calls: bench.step(by_name[name], calls), limit_of)
        if business.refused:
            print(f"business refused {len(business.refused)} offers: {business.refused[0]}")
    finally:
        await business.close()
    return summary(scenarios, steps, checks, reference, started)


def names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=lambda text: [int(v) for v in text.split(",")],
                        default=list(DEFAULT_LEVELS), help="concurrent calls per step, e.g. 10,50")
    parser.add_argument("--variants", type=names, default=list(VARIANTS),
                        help=f"codec variants ({', '.join(VARIANTS)})")
    parser.add_argument("--modes", type=names, default=list(MODES), help="sdes, dtls")
    parser.add_argument("--measure", type=float, default=4.0, help="CPU window per step (s)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for all ramps")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the edge's folder (logs, rendered config) here")
    args = parser.parse_args(argv)
    unknown = (set(args.variants) - set(VARIANTS)) | (set(args.modes) - set(MODES))
    if unknown:
        parser.error(f"unknown variant(s) or mode(s): {', '.join(sorted(unknown))}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels: positive numbers of calls")
    scenarios = [Scenario(VARIANTS[v], m) for v in args.variants for m in args.modes]
    if shutil.which("rtpengine") is None:
        print("bench-rtpengine: no rtpengine installed (Debian's rtpengine-daemon; make lab "
              "installs it)", file=sys.stderr)
        sys.exit(2)
    with contextlib.ExitStack() as stack:
        folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="bench-rtpengine-")))
        try:
            edge = stack.enter_context(EdgeLab(folder / "edge",
                                               bench_overrides(args.levels, len(scenarios)),
                                               passwords=PASSWORDS))
        except LabError as error:
            print(f"bench-rtpengine: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"edge in {folder} with rtpengine {edge.config.media.rtpengine.port_min}-"
              f"{edge.config.media.rtpengine.port_max} on {edge.config.media.rtpengine.ng_listen}; "
              f"scenarios {', '.join(s.name for s in scenarios)}; levels "
              f"{','.join(map(str, args.levels))}, {1 / START_GAP_S:.0f} new calls/s, "
              f"{args.measure:g} s CPU window", flush=True)
        result = asyncio.run(run(args, edge, scenarios))
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""SIPp load for one step: Meta's UAC at a fixed rate, FreeSWITCH's UAS, and what SIPp counted.

Both sides play sipp-scenarios/uic-answered/, the flow the lab checks call by call: INVITE, 407,
ACK, INVITE with Proxy-Authorization, 180/200 from the FreeSWITCH UAS (which checks the edge's
X-WA-* headers and the Record-Route set), ACK, 0.3 s of call, BYE, 200. Meta's side reports its
response time 1 (`rtd` on the 200 OK: from the first INVITE to the 200, so it includes the 407
round trip and the FreeSWITCH leg) to a -trace_rtt file, and its call counts to -trace_stat.
SIPp 3.6 starts that timer only where a message says `start_rtd`, which meta.xml (shared with
the lab tests) does not: the bench plays a copy with `start_rtd="true"` on the first INVITE and
nothing else changed.
With two UDP workers, FreeSWITCH's 180 and 200 may be relayed to Meta in the other order (as on
a real edge; a UA drops a late 180): Meta's side runs with `-default_behaviors all,-abortunexp`
so a late 180 does not abort an answered call. A wrong or missing answer still fails the call
(its receive times out).
Every run is bounded: a call count (-m), a global timeout (-timeout), a per-receive timeout
(-recv_timeout) and a wall-clock limit on the process.
"""

from __future__ import annotations

import csv
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lab.processes import LabError, ManagedProcess
from lab.sipp import read_trace, scenario

from .site import BENCH_PASSWORD, META_USER, BenchSite

FLOW = "uic-answered"
CALL_HOLD_S = 0.3  # the scenario's pause between ACK and BYE
RECV_TIMEOUT_MS = 8000


@dataclass(frozen=True)
class Step:
    """How many calls at what rate, and where Meta's side connects."""

    rate: int
    calls: int
    meta_port: int  # the bench listener, or stunnel's plain side for the TLS run
    meta_transport: str  # "tcp" or "tls": only the Route set the scenario sends differs
    trace_messages: bool = False  # microsecond setup times from -trace_msg (fixed-rate runs)
    max_p99_ms: float = 200.0  # a step whose p99 setup time is over this is overloaded

    @property
    def planned_s(self) -> float:
        return self.calls / self.rate


@dataclass
class StepResult:
    rate: int
    calls: int
    successful: int = 0
    failed: int = 0  # Meta-side failed or unfinished calls, plus FreeSWITCH-side failures
    elapsed_s: float = 0.0
    kept_pace: bool = True
    latency_ok: bool = True
    response_ms: list[float] = field(default_factory=list)  # SIPp rtd: whole ms, 4 ms clock
    setup_ms: list[float] = field(default_factory=list)  # from -trace_msg timestamps (us)
    cpu_s: float = 0.0
    stunnel_cpu_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (self.failed == 0 and self.kept_pace and self.latency_ok
                and self.successful == self.calls)

    @property
    def verdict(self) -> str:
        if self.failed or self.successful != self.calls:
            return "FAILED"
        return "ok" if self.kept_pace and self.latency_ok else "OVERLOADED"

    @property
    def cpu_us_per_call(self) -> float:
        return 1e6 * self.cpu_s / self.successful if self.successful else 0.0


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def read_stat_counts(path: Path) -> dict[str, int]:
    """Cumulative counters from the last row of a SIPp -trace_stat file (';'-separated)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    counts: dict[str, int] = {}
    for name in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)", "CurrentCall"):
        if name in header and header.index(name) < len(last):
            try:
                counts[name] = int(last[header.index(name)])
            except ValueError:
                continue
    return counts


def read_rtt(folder: Path) -> list[float]:
    """Response time 1 of each call, in ms, from SIPp's -trace_rtt files in `folder`."""
    values: list[float] = []
    for path in sorted(folder.glob("*_rtt.csv")):
        for row in csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"):
            if len(row) >= 3 and row[2].strip() == "1":
                try:
                    values.append(float(row[1]))
                except ValueError:
                    continue
    return values


def timed_meta_scenario(folder: Path) -> Path:
    """sipp-scenarios/uic-answered/meta.xml with response time 1 started at the first INVITE."""
    text = scenario(FLOW, "meta").read_text(encoding="ISO-8859-1")
    if text.count("<send>") < 1 or "start_rtd" in text:
        raise LabError(f"{scenario(FLOW, 'meta')}: cannot add start_rtd to its first <send>")
    copy = folder / "meta-timed.xml"
    copy.write_text(text.replace("<send>", '<send start_rtd="true">', 1), encoding="ISO-8859-1")
    return copy


def _seconds(clock: str) -> float:
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def setup_times_ms(trace: Path) -> list[float]:
    """INVITE-to-200 time of each call from Meta's message trace, at microsecond resolution.

    SIPp's own response times come from a coarse clock (whole ms, in steps of the kernel tick:
    4 ms here), too coarse for a 2 ms goal; its message trace stamps each message with
    gettimeofday. Start: the first INVITE sent (CSeq 1); end: the 200 OK to CSeq 2 INVITE.
    """
    started: dict[str, float] = {}
    times: list[float] = []
    for message in read_trace(trace):
        head = message.text.split("\r\n\r\n", 1)[0]
        call_id = cseq = ""
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("call-id", "i"):
                call_id = value.strip()
            elif name.strip().lower() == "cseq":
                cseq = value.strip()
        if message.sent and cseq == "1 INVITE" and message.first_line.startswith("INVITE"):
            started.setdefault(call_id, _seconds(message.time))
        elif (not message.sent and cseq == "2 INVITE"
              and message.first_line.startswith("SIP/2.0 200") and call_id in started):
            elapsed = _seconds(message.time) - started.pop(call_id)
            if elapsed >= 0:  # a call across midnight is left out
                times.append(1000 * elapsed)
    return times


def _common(xml: Path, port: int, transport: str, calls: int, timeout_s: int, stat: Path,
            max_log_bytes: int = 2_000_000) -> list[str]:
    return ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(port), "-t", transport,
            "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
            "-recv_timeout", str(RECV_TIMEOUT_MS), "-trace_stat", "-stf", str(stat), "-fd", "1",
            "-trace_err", "-error_file", str(stat.with_suffix(".errors")),
            "-max_log_size", str(max_log_bytes)]  # SIPp truncates each log past this size


def freeswitch_uas(site: BenchSite, folder: Path, calls: int, timeout_s: int) -> ManagedProcess:
    """FreeSWITCH's side (UDP UAS) for exactly `calls` calls."""
    argv = _common(scenario(FLOW, "freeswitch"), site.ports.freeswitch, "u1", calls, timeout_s,
                   folder / "freeswitch-stat.csv")
    argv += ["-key", "business_number", site.business_number]
    return ManagedProcess("sipp freeswitch", argv, folder / "freeswitch.log", cwd=folder).start()


def meta_argv(site: BenchSite, step: Step, folder: Path, timeout_s: int) -> list[str]:
    ports = site.ports
    edge_hop = (f"<sip:{site.host}:{ports.plain};transport=tcp;r2=on;lr>"
                if step.meta_transport == "tcp"
                else f"<sip:{site.host}:{ports.tls};transport=tls;r2=on;lr>")
    keys = {
        "ruri_user": site.ruri_user,
        "business_number": site.business_number,
        "sip_domain": site.config.site.sip_domain,
        "meta_user": META_USER,
        "edge_route": f"{edge_hop},<sip:{site.host}:{ports.internal};r2=on;lr>",
    }
    argv = _common(timed_meta_scenario(folder), ports.meta_sipp, "t1", step.calls, timeout_s,
                   folder / "meta-stat.csv",
                   # the message trace needs ~6 KB a call, and all of it
                   max_log_bytes=max(2_000_000, 8_000 * step.calls if step.trace_messages else 0))
    argv += ["-r", str(step.rate), "-rp", "1000", "-l", str(step.rate * 4 + 50),
             "-trace_rtt", "-rtt_freq", "1", "-default_behaviors", "all,-abortunexp",
             "-cid_str", "outgoing:wacid.%u-%p@wa.meta.vc",
             "-au", site.business_number.removeprefix("+"), "-ap", BENCH_PASSWORD,
             # digest uri = the request URI, as Meta sends it (the edge refuses another)
             "-auth_uri", f"{site.ruri_user}@{site.config.site.sip_domain};transport=tls"]
    for key, value in keys.items():
        argv += ["-key", key, value]
    if step.trace_messages:
        argv += ["-trace_msg", "-message_file", str(folder / "meta.messages")]
    return [*argv, f"{site.host}:{step.meta_port}"]


def run_step(site: BenchSite, step: Step, folder: Path, with_freeswitch: bool) -> StepResult:
    """Run one step to its end (bounded) and count what both SIPp sides saw."""
    return run_split_step([(site, step)], folder, with_freeswitch)


def split_step(step: Step, edges: Sequence[BenchSite]) -> list[tuple[BenchSite, Step]]:
    """A site's step spread evenly over its edges (bench-edge-site), as Meta spreads its calls
    over the addresses of the one name: each edge gets its share of the rate and the calls on
    its own connection (its bench listener; Meta keeps one connection per address)."""
    count = len(edges)
    return [(edge, replace(step, rate=step.rate // count + (index < step.rate % count),
                           calls=step.calls // count + (index < step.calls % count),
                           meta_port=edge.ports.plain))
            for index, edge in enumerate(edges)]


def run_split_step(legs: Sequence[tuple[BenchSite, Step]], folder: Path,
                   with_freeswitch: bool, stagger_s: float = 0.0) -> StepResult:
    """One step whose Meta side is one SIPp per edge (`legs`: the edge and its share), against
    one FreeSWITCH-side UAS (the first edge's, which every edge dispatches to), each SIPp
    started `stagger_s` after the one before. One leg keeps its files in `folder`, several in
    folder/meta-1, meta-2, ...

    Why a stagger: SIPp never seeds rand(), so every SIPp draws the same cnonce for its n-th
    call, and edges sharing the nonce secret issue the same nonce within one second; two
    SIPps whose n-th calls fall in the same second then present the same nonce, cnonce and nc
    to two edges, and the site's replay check (wa_nonce over DMQ) rightly refuses the second
    as a replay (407 stale). Meta's cnonces are random; 1 s or more between the SIPps' starts
    keeps their n-th calls in different seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    calls = sum(step.calls for _, step in legs)
    planned_s = max(step.planned_s for _, step in legs) + stagger_s * (len(legs) - 1)
    timeout_s = int(planned_s + CALL_HOLD_S + RECV_TIMEOUT_MS / 1000 + 5)
    result = StepResult(sum(step.rate for _, step in legs), calls)
    folders = [folder] if len(legs) == 1 else [folder / f"meta-{n}" for n in range(1, len(legs) + 1)]
    uas = freeswitch_uas(legs[0][0], folder, calls, timeout_s + 5) if with_freeswitch else None
    codes: list[int | None] = []
    try:
        time.sleep(0.2)  # the UAS binds its UDP port
        started = time.monotonic()
        metas: list[subprocess.Popen[bytes]] = []
        try:
            for index, ((site, step), meta_folder) in enumerate(zip(legs, folders, strict=True)):
                meta_folder.mkdir(parents=True, exist_ok=True)
                if index:
                    time.sleep(stagger_s)
                with (meta_folder / "meta.log").open("wb") as log:
                    metas.append(subprocess.Popen(meta_argv(site, step, meta_folder, timeout_s),
                                                  cwd=meta_folder, stdout=log,
                                                  stderr=subprocess.STDOUT))
            deadline = started + timeout_s + 20
            for meta in metas:
                codes.append(meta.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            raise LabError(f"sipp meta did not finish within {timeout_s + 20} s in {folder}") from None
        finally:
            for meta in metas:
                if meta.poll() is None:
                    meta.kill()
                    meta.wait(5)
        result.elapsed_s = time.monotonic() - started
        if uas is not None:
            try:
                uas.wait(5)
            except LabError:
                result.notes.append("FreeSWITCH UAS still waiting for calls")
    finally:
        if uas is not None:
            uas.stop()
    created = 0
    for (_, step), meta_folder, code in zip(legs, folders, codes, strict=True):
        counts = read_stat_counts(meta_folder / "meta-stat.csv")
        created += counts.get("TotalCallCreated", 0)
        successful = counts.get("SuccessfulCall(C)", 0)
        result.successful += successful
        failed = max(step.calls - successful, counts.get("FailedCall(C)", 0))
        result.failed += failed
        if not counts:
            result.notes.append(f"no SIPp statistics; see {meta_folder / 'meta.log'}")
        result.response_ms += read_rtt(meta_folder)
        if step.trace_messages:
            result.setup_ms += setup_times_ms(meta_folder / "meta.messages")
        if code != 0 and failed == 0:
            result.notes.append(f"sipp meta exit code {code}")
    if created < calls:
        result.notes.append(f"only {created} of {calls} calls created")
    if with_freeswitch:
        fs = read_stat_counts(folder / "freeswitch-stat.csv")
        fs_failed = fs.get("FailedCall(C)", 0)
        if fs_failed:
            result.failed += fs_failed
            result.notes.append(f"FreeSWITCH side: {fs_failed} failed calls")
    # SIPp paces by -r; a step that took much longer than planned did not get its rate.
    result.kept_pace = result.elapsed_s <= planned_s * 1.25 + CALL_HOLD_S + 2.0
    if not result.kept_pace:
        result.notes.append(f"took {result.elapsed_s:.1f} s for a {planned_s:.1f} s step")
    p99 = percentile(result.response_ms, 0.99)
    max_p99_ms = legs[0][1].max_p99_ms
    if p99 > max_p99_ms:
        result.latency_ok = False
        result.notes.append(f"p99 {p99:.0f} ms over {max_p99_ms:.0f} ms: queues grow")
    return result

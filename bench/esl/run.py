"""Bench: UIC call setups per second through the controller, and event-to-command latency.

Two phases in one run, each against a fresh controller and stand-in:
- capacity: closed loop, ``--concurrency`` setups in flight, as fast as they complete; its
  setups/s is the ``setups_per_s`` of the RESULT line;
- latency: open loop at ``--rate`` calls per second (default 500, the issue's target load), so
  latency is measured at a stated load rather than at saturation, where any queue grows without
  bound; its event-to-command p99 is the ``p99_ms`` of the RESULT line.

Two processes so the two cores are both used, as in production (FreeSWITCH and the controller
are separate processes):
- the child runs the FreeSWITCH stand-in and places user-initiated calls at the controller
  (bounded: ``--calls`` in total, ``--concurrency`` at once, ``--seconds`` at most);
- the parent runs the controller (outbound socket server + inbound connection, SQLite CDRs).

A setup is counted when the call is answered and the stand-in holds every command of the
setup (SRTP/codec variables, answer, silence playback, route); the controller pipelines them.
Event-to-command time is measured on the stand-in's side, as FreeSWITCH would see it: from
writing the CHANNEL_DATA reply to reading the first ``sendmsg`` that answers it. Both queues
(the stand-in's loop and the controller's) are in it; the controller's own share is printed
as "controller-internal".
Then the same controller against the real FreeSWITCH (bench/esl/real_switch.py: SIPp as the
edge, the rendered profile and dialplan, no Kamailio): UIC setups/s at ``--fs-concurrency``
calls in flight, and CHANNEL_DATA-to-answer p50/p99 at ``--fs-rate`` calls/s, printed beside the
stand-in's figure for the same span (measured the same way, in the controller).
The last line printed is ``RESULT setups_per_s=<x> p99_ms=<x> rate=<x> failed=<n>
answer_p99_ms=<x> fs_setups_per_s=<x> fs_answer_p99_ms=<x> fs_rate=<x> fs_failed=<n>`` (the
``fs_`` figures from the real switch; ``fs_skipped=1`` instead where none is installed); the
exit code is 1 when a call failed or was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esl.controller import Controller
from esl.gctune import tune_gc
from lab.esl_standin import FreeSwitchStandin, UicCall, UicHandle
from siteconfig.controller import ControllerSettings

from .real_switch import AnswerClock, run_real_switch

ROOT = Path(__file__).resolve().parents[2]

PASSWORD = "bench-password"
BUSINESS_NUMBER = "+15550100001"
ROUTED_SENDMSGS = 3
"""multiset, answer, silence playback; a park route sends nothing more (the async socket
already holds the call parked; FreeSWITCH refuses a second park)."""
TALK_S = 0.2  # calls stay up a while after setup, as real calls do


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# ---------------------------------------------------------------------- child: the stand-in
async def run_load(
    calls: int, concurrency: int, seconds: float, warmup: int, rate: float
) -> None:
    standin = FreeSwitchStandin(password=PASSWORD)
    await standin.start("127.0.0.1", 0)
    print(f"PORT {standin.port}", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    controller_port = int(line.strip())
    address = ("127.0.0.1", controller_port)
    latencies: list[float] = []
    setups: list[float] = []
    failures = 0
    semaphore = asyncio.Semaphore(concurrency)

    last_setup = 0.0
    began_at = [time.monotonic()]

    def sendmsg_times(handle: UicHandle) -> list[float]:
        return [t for t, c in handle.listener.commands if c.startswith("sendmsg")]

    async def set_up(measured: bool) -> UicHandle | None:
        """Place one call; the concurrency limit covers setups, not talking calls."""
        nonlocal failures, last_setup
        async with semaphore:
            started = time.monotonic()
            try:
                handle = await standin.place_uic(
                    UicCall(business_number=BUSINESS_NUMBER, talk_s=TALK_S), address
                )
                await asyncio.wait_for(handle.runtime.answered.wait(), 5)
                for _ in range(2000):  # the route command may trail the answer by a moment
                    if len(sendmsg_times(handle)) >= ROUTED_SENDMSGS or handle.runtime.down.is_set():
                        break
                    await asyncio.sleep(0.0005)
            except (TimeoutError, OSError):
                failures += 1
                return None
            done = time.monotonic()
        sendmsgs = sendmsg_times(handle)
        sent = handle.listener.channel_data_sent_at
        if len(sendmsgs) < ROUTED_SENDMSGS or sent is None:
            failures += 1
            return handle
        if measured:
            if os.environ.get("BENCH_DEBUG") and sendmsgs[0] - sent > 0.005:
                print(f"slow {sendmsgs[0] - sent:.4f} at {sent - began_at[0]:.3f}", file=sys.stderr)
            latencies.append(sendmsgs[0] - sent)
            setups.append(done - started)
            last_setup = max(last_setup, done)
        return handle

    async def one_call(measured: bool) -> None:
        nonlocal failures
        handle = await set_up(measured)
        if handle is not None:
            try:
                await handle.finished(10)
            except TimeoutError:
                failures += 1

    await asyncio.gather(*(one_call(False) for _ in range(warmup)))
    deadline = time.monotonic() + seconds
    began = began_at[0] = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    interval = 1.0 / rate if rate > 0 else 0.0
    for index in range(calls):
        if time.monotonic() > deadline:
            break
        if interval:  # open loop: offer calls at a steady rate, whatever the answers do
            delay = began + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        else:  # closed loop: at most `concurrency` setups in progress at once
            await semaphore.acquire()
            semaphore.release()
        tasks.append(asyncio.create_task(one_call(True)))
    await asyncio.gather(*tasks)
    elapsed = max(last_setup - began, 1e-9)
    print(
        "STATS "
        + json.dumps(
            {
                "calls": len(tasks),
                "completed": len(setups),
                "failures": failures,
                "elapsed_s": elapsed,
                "setups_per_s": len(setups) / elapsed if elapsed else 0.0,
                "p50_ms": percentile(latencies, 0.50) * 1000,
                "p99_ms": percentile(latencies, 0.99) * 1000,
                "max_ms": max(latencies, default=0.0) * 1000,
                "setup_p50_ms": percentile(setups, 0.50) * 1000,
                "setup_p99_ms": percentile(setups, 0.99) * 1000,
            }
        ),
        flush=True,
    )
    await standin.stop()


# ---------------------------------------------------------------------- parent: the controller
async def run_phase(args: argparse.Namespace, rate: float) -> dict[str, float] | None:
    """One run of the stand-in against a fresh controller; its figures, or None on failure."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.esl.run",
            "--role",
            "standin",
            "--calls",
            str(args.calls),
            "--concurrency",
            str(args.concurrency),
            "--seconds",
            str(args.seconds),
            "--warmup",
            str(args.warmup),
            "--rate",
            str(rate),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    loop = asyncio.get_running_loop()
    try:
        first = await asyncio.wait_for(loop.run_in_executor(None, child.stdout.readline), 20)
        if not first.startswith("PORT "):
            print(f"stand-in did not start: {first!r}", file=sys.stderr)
            return None
        with tempfile.TemporaryDirectory() as tmp:
            settings = ControllerSettings.model_validate(
                {
                    "freeswitch": {"port": int(first.split()[1]), "password": PASSWORD},
                    "listen": {"port": 0},
                    "numbers": [{"business_number": BUSINESS_NUMBER, "srtp_mode": "SDES"}],
                    "routes": [{"name": "park", "target": {"action": "park"}}],
                    "cdr_db": os.environ.get("BENCH_DB") or str(Path(tmp) / "bench-cdr.sqlite3"),
                }
            )
            controller = Controller(settings)
            clock = AnswerClock()  # CHANNEL_DATA to answer, as in the real-switch phases
            controller.uic = clock.wrap(controller.uic)  # type: ignore[assignment]
            await controller.start()
            await asyncio.wait_for(controller.inbound_ready.wait(), 10)
            child.stdin.write(f"{controller.listen_port}\n")
            child.stdin.flush()
            line = await asyncio.wait_for(
                loop.run_in_executor(None, child.stdout.readline), args.seconds + 60
            )
            await controller.stop()
            recorded = len(controller.store.recent(limit=10**9))
            controller.store.close()
    finally:
        if child.poll() is None:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    if not line.startswith("STATS "):
        print(f"stand-in gave no result: {line!r}", file=sys.stderr)
        return None
    stats: dict[str, float] = json.loads(line[len("STATS ") :])
    stats["cdr_rows"] = recorded
    stats["controller_p99_ms"] = controller.latency.percentile(0.99) * 1000
    stats["answer_p50_ms"] = percentile(clock.samples, 0.50) * 1000
    stats["answer_p99_ms"] = percentile(clock.samples, 0.99) * 1000
    label = f"rate={rate:.0f}/s" if rate > 0 else f"closed loop, {args.concurrency} in flight"
    print(
        f"[{label}] calls={stats['calls']:.0f} completed={stats['completed']:.0f} "
        f"failures={stats['failures']:.0f} elapsed_s={stats['elapsed_s']:.2f} cdr_rows={recorded}"
    )
    print(
        f"[{label}] setups_per_s={stats['setups_per_s']:.1f} "
        f"event_to_command_ms p50={stats['p50_ms']:.3f} p99={stats['p99_ms']:.3f} "
        f"max={stats['max_ms']:.3f} (controller-internal p99={stats['controller_p99_ms']:.3f}) "
        f"setup_ms p50={stats['setup_p50_ms']:.2f} p99={stats['setup_p99_ms']:.2f} "
        f"channel_data_to_answer_ms p50={stats['answer_p50_ms']:.3f} "
        f"p99={stats['answer_p99_ms']:.3f}",
        flush=True,
    )
    return stats


async def run_controller(args: argparse.Namespace) -> int:
    """Capacity first (closed loop), then latency at the stated rate (open loop)."""
    capacity = await run_phase(args, 0.0)
    latency = await run_phase(args, args.rate)
    if capacity is None or latency is None:
        return 1
    failed = capacity["failures"] + latency["failures"]
    lost = (capacity["calls"] - capacity["completed"]) + (latency["calls"] - latency["completed"])
    real = await run_real_switch(args.fs_calls, args.fs_rate, args.fs_concurrency)
    result = (
        f"RESULT setups_per_s={capacity['setups_per_s']:.1f} p99_ms={latency['p99_ms']:.3f} "
        f"rate={args.rate:.0f} failed={failed + lost:.0f} "
        f"answer_p99_ms={latency['answer_p99_ms']:.3f}"
    )
    if isinstance(real, str):
        print(f"[real FreeSWITCH] not run: {real}")
        print(f"{result} fs_skipped=1")
        return 0 if failed + lost == 0 else 1
    fs_capacity, fs_latency = real
    standin_labels = (f"stand-in, {args.concurrency} in flight", f"stand-in at {args.rate:.0f}/s")
    for phase, standin, standin_label in zip((fs_capacity, fs_latency), (capacity, latency),
                                             standin_labels, strict=True):
        print(
            f"[real FreeSWITCH, {phase.label}] calls={phase.offered} answered={phase.answered} "
            f"failed={phase.sipp_failed} setups_per_s={phase.setups_per_s:.1f} "
            f"channel_data_to_answer_ms p50={phase.p50_ms:.2f} p99={phase.p99_ms:.2f} "
            f"({standin_label}: setups_per_s={standin['setups_per_s']:.1f} "
            f"p99={standin['answer_p99_ms']:.3f})"
        )
    fs_failed = sum(p.sipp_failed + (p.offered - p.answered) for p in real)
    print(
        f"{result} fs_setups_per_s={fs_capacity.setups_per_s:.1f} "
        f"fs_answer_p99_ms={fs_latency.p99_ms:.2f} fs_rate={args.fs_rate:.0f} "
        f"fs_failed={fs_failed}"
    )
    return 0 if failed + lost + fs_failed == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["controller", "standin"], default="controller")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--rate", type=float, default=500.0,
        help="calls offered per second in the latency phase (the capacity phase is closed loop)"
    )
    parser.add_argument("--fs-calls", type=int, default=600,
                        help="calls per real-FreeSWITCH phase (capacity, then latency)")
    parser.add_argument("--fs-concurrency", type=int, default=32,
                        help="calls in flight in the real-FreeSWITCH capacity phase")
    parser.add_argument("--fs-rate", type=float, default=50.0,
                        help="calls offered per second in the real-FreeSWITCH latency phase")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if os.environ.get("BENCH_DEBUG"):
        import gc

        started: list[float] = [0.0]

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            elif time.perf_counter() - started[0] > 0.003:
                took = time.perf_counter() - started[0]
                print(f"gc {args.role} gen{info['generation']} {took:.4f}", file=sys.stderr)

        gc.callbacks.append(watch)
    if not os.environ.get("BENCH_DEFAULT_GC"):
        tune_gc()  # as ``wa-esl run`` does
    profile = os.environ.get("BENCH_PROFILE") == args.role
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if args.role == "standin":
        asyncio.run(run_load(args.calls, args.concurrency, args.seconds, args.warmup, args.rate))
        code = 0
    else:
        code = asyncio.run(run_controller(args))
    if profile:
        profiler.disable()
        profiler.dump_stats(f"/tmp/bench-esl-{args.role}.prof")
    return code


if __name__ == "__main__":
    sys.exit(main())

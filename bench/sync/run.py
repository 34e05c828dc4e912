"""Bench: `provision sync` of 10,000 numbers against the rate-limited Graph stand-in.

Two processes, so the two cores are both used as they would be with Graph on the far side: the
child runs the Graph stand-in (`python -m lab.graph_standin`) on loopback with a
per-app token bucket (`--rate` requests/s, `--burst`), which answers HTTP 429 / Graph code
130429 with Retry-After when the client goes faster; the parent runs the same sync engine the
command uses (GraphClient with retries + SQLite store in batches) over `--numbers` numbers.

A number counts as lost when its outcome is not `updated`/`unchanged` or the store does not hold
its credential afterwards. The last line printed is
`RESULT numbers=<n> wall_s=<s> lost=<n> retries=<n>`; the exit code is 1 when a number was lost
or the run took longer than `--goal-s`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from graphapi.client import GraphClient, RetryPolicy  # noqa: E402
from lab.graph_standin.seed import seeded_number  # noqa: E402
from provisioning.credential_store import open_store  # noqa: E402
from provisioning.sync import SyncOptions, SyncOutcome, sync_numbers  # noqa: E402
from siteconfig.model import Number  # noqa: E402

APP_ID = "700000000000001"
TOKEN = "bench-token-not-a-secret"
SIP_DOMAIN = "sip.example.com"
READY_TIMEOUT_S = 30.0


def start_standin(folder: Path, numbers: int, rate: float, burst: int) -> tuple[subprocess.Popen[str], str]:
    token_file = folder / "token"
    token_file.write_text(TOKEN)
    os.chmod(token_file, 0o600)
    child = subprocess.Popen(
        [sys.executable, "-m", "lab.graph_standin", "--numbers", str(numbers),
         "--app-id", APP_ID, "--token-file", str(token_file), "--hostname", SIP_DOMAIN,
         "--rate", str(rate), "--burst", str(burst), "--retry-after", "1", "--max-seconds", "300"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if line.startswith("READY "):
            return child, line.split()[1]
        if not line and child.poll() is not None:
            break
    child.kill()
    raise SystemExit("bench: the Graph stand-in did not start")


def stop_standin(child: subprocess.Popen[str]) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    try:
        rest = child.stdout.read()
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        rest = ""
    return next((line for line in rest.splitlines() if line.startswith("STATS")), "STATS ?")


async def run_sync(base_url: str, numbers: list[Number], store_path: Path, concurrency: int,
                   batch_size: int) -> tuple[list[SyncOutcome], GraphClient]:
    store = open_store(store_path)
    try:
        client = GraphClient(base_url, "v21.0", TOKEN, concurrency=concurrency, timeout_s=10.0,
                             retry=RetryPolicy(max_attempts=10))
        async with client:
            results = await sync_numbers(client, store, SIP_DOMAIN, APP_ID, numbers,
                                         SyncOptions(batch_size=batch_size, workers=2 * concurrency))
        return [r.outcome for r in results], client
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=800.0, help="stand-in limit, requests/s per app")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--goal-s", type=float, default=30.0)
    args = parser.parse_args()
    numbers = [Number(business_number=b, phone_number_id=p)
               for b, p in (seeded_number(i) for i in range(args.numbers))]
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as scratch:
        folder = Path(scratch)
        child, base_url = start_standin(folder, args.numbers, args.rate, args.burst)
        try:
            started = time.monotonic()
            outcomes, client = asyncio.run(run_sync(base_url, numbers, folder / "credentials.sqlite",
                                                    args.concurrency, args.batch_size))
            wall = time.monotonic() - started
        finally:
            standin_stats = stop_standin(child)
        store = open_store(folder / "credentials.sqlite")
        try:
            stored = sum(1 for n in numbers if store.get(n.business_number) is not None)
        finally:
            store.close()
    ok = sum(1 for o in outcomes if o in (SyncOutcome.UPDATED, SyncOutcome.UNCHANGED))
    lost = args.numbers - min(ok, stored)
    stats = client.stats
    print(f"numbers:        {args.numbers} (stand-in limit {args.rate:.0f} req/s, burst {args.burst}; "
          f"client concurrency {args.concurrency})")
    print(f"wall time:      {wall:.2f} s")
    print(f"requests:       {stats.requests} ({stats.requests / wall:.0f} requests/s), "
          f"numbers/s {args.numbers / wall:.0f}")
    print(f"retries:        {stats.retries} (rate-limited answers {stats.rate_limited}, "
          f"by status {dict(sorted(stats.by_status.items()))})")
    own = resource.getrusage(resource.RUSAGE_SELF)
    child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"stand-in:       {standin_stats}")
    print(f"CPU:            sync {own.ru_utime + own.ru_stime:.1f} s, "
          f"stand-in {child_usage.ru_utime + child_usage.ru_stime:.1f} s")
    print(f"in store:       {stored}; outcomes ok {ok}")
    print(f"RESULT numbers={args.numbers} wall_s={wall:.2f} lost={lost} retries={stats.retries}")
    return 1 if lost or wall > args.goal_s else 0


if __name__ == "__main__":
    sys.exit(main())

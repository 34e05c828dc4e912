"""Run the Graph stand-in in its own process: `python -m lab.graph_standin --numbers 100`.

The benchmark uses this so that the stand-in and the client do not share one interpreter's
lock. It seeds `--numbers` numbers (ids FIRST_ID.., business numbers +1555..), each with a
server for `--app-id`, prints `READY <base url>` and serves until stdin closes, SIGTERM, or
`--max-seconds` pass. `--granted-users N` gives the first N seeded users (seed.seeded_user) a
call permission toward every number; `--rate-code 613 --rate-status 400` makes the rate limiter
answer as Graph does on call_permissions (the default, 429/130429, is the messaging limit).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from lab.graph_standin.faults import RateLimiter
from lab.graph_standin.seed import grant_users, seed_numbers
from lab.graph_standin.server import GraphStandin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.graph_standin")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--numbers", type=int, default=10)
    parser.add_argument("--app-id", default="700000000000001")
    parser.add_argument("--token-file", required=True, help="file holding the access token")
    parser.add_argument("--hostname", default="sip.example.com")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s per app; 0 = no limit")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--rate-code", type=int, default=130429, help="Graph error code past it")
    parser.add_argument("--rate-status", type=int, default=429, help="HTTP status past it")
    parser.add_argument("--granted-users", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    with open(args.token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    limiter = (RateLimiter(args.rate, args.burst, args.retry_after, code=args.rate_code,
                           status=args.rate_status) if args.rate > 0 else None)
    standin = GraphStandin({token: args.app_id}, rate_limiter=limiter, port=args.port)
    seeded = seed_numbers(standin.state, args.numbers, args.app_id, args.hostname)
    grant_users(standin.permissions, [pnid for _, pnid in seeded], args.granted_users)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def wait_for_stdin_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_close, daemon=True).start()
    with standin:
        print(f"READY {standin.base_url}", flush=True)
        done.wait(args.max_seconds)
        stats = standin.stats
        with contextlib.suppress(BrokenPipeError):  # nobody reading any more: stats are optional
            print(f"STATS requests={stats.requests} rate_limited={stats.rate_limited}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

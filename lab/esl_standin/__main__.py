"""Run the Event Socket stand-in on loopback: `python -m lab.esl_standin --port 8021`.

For rehearsing `wa-esl` without a FreeSWITCH (the tests and `make bench-esl` start it in
process). It listens on 127.0.0.1 only, prints `READY <host>:<port>` once it accepts
connections and serves until SIGINT, SIGTERM or `--max-seconds` pass, so a forgotten one does
not outlive the rehearsal by days.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from lab.esl_standin.server import FreeSwitchStandin


async def serve(port: int, password: str, max_seconds: float) -> None:
    """Serve until a stop signal or the time bound; the stand-in is stopped either way."""
    server = FreeSwitchStandin(password=password)
    await server.start("127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        print(f"READY {server.host}:{server.port}", flush=True)
        with contextlib.suppress(TimeoutError):  # the time bound: a normal end
            await asyncio.wait_for(stop.wait(), max_seconds)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.esl_standin",
        description="The FreeSWITCH Event Socket stand-in (mod_event_socket, inbound and outbound).",
    )
    parser.add_argument("--port", type=int, default=8021, help="0 picks a free port (default 8021)")
    parser.add_argument("--password", default="ClueCon", help="Event Socket password")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop by itself after this long (default 3600)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: not a TCP port")
    if args.max_seconds <= 0:
        parser.error("--max-seconds must be positive")
    try:
        asyncio.run(serve(args.port, args.password, args.max_seconds))
    except OSError as exc:
        print(f"esl stand-in: cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

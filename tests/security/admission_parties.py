"""The parties of the admission tests, each run inside its own network namespace
(`ip netns exec NS python -m tests.security.admission_parties ROLE ...`).

- `listener`: stands where Kamailio (or a TLS front) listens on the TLS port and, like it, caps
  the total of connections it holds: past `--cap` it closes a new connection at once. It answers
  `PING` with `PONG`. What is tested is admission in front of it, not SIP.
- `flood`: opens `--per-source` connections from each of many source addresses at once, holds
  them, prints one JSON line of counts and holds until its stdin closes.
- `probe`: Meta's side: connects from one address, sends PING, prints connect/answer times.
Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import resource
import selectors
import socket
import sys
import time


async def _listen(port: int, cap: int) -> None:
    held: set[asyncio.StreamWriter] = set()
    refused = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal refused
        if len(held) >= cap:
            refused += 1
            writer.close()
            return
        held.add(writer)
        try:
            while line := await reader.readline():
                if line.strip() == b"PING":
                    writer.write(b"PONG\n")
                    await writer.drain()
        except OSError:
            pass
        finally:
            held.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "0.0.0.0", port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def _raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect_many(sources: list[str], per_source: int, target: str, port: int,
                 timeout: float) -> tuple[dict[str, int], list[socket.socket]]:
    """Open per_source connections from each source at once; count what became of them."""
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, str] = {}
    connected: list[socket.socket] = []
    attempted = refused = 0
    for source in sources:
        for _ in range(per_source):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((source, 0))
            attempted += 1
            code = sock.connect_ex((target, port))
            if code not in (0, errno.EINPROGRESS):
                refused += 1
                sock.close()
                continue
            pending[sock] = source
            selector.register(sock, selectors.EVENT_WRITE, sock)
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            sock = key.data
            selector.unregister(sock)
            del pending[sock]
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                connected.append(sock)
            else:
                refused += 1
                sock.close()
    timed_out = len(pending)
    for sock in pending:  # closed in SYN_SENT: no retransmission after the timeout
        selector.unregister(sock)
        sock.close()
    selector.close()
    time.sleep(0.3)  # let the listener close what it refuses past its own cap
    held = 0
    for sock in connected:
        try:
            held += sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
        except BlockingIOError:
            held += 1
        except OSError:
            pass
    return ({"attempted": attempted, "connected": len(connected), "held": held,
             "timed_out": timed_out, "refused": refused + timed_out}, connected)


def _probe(source: str, target: str, port: int, timeout: float) -> dict[str, object]:
    started = time.monotonic()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    try:
        sock.connect((target, port))
        connect_ms = (time.monotonic() - started) * 1000
        sock.sendall(b"PING\n")
        answer = sock.recv(16)
        answer_ms = (time.monotonic() - started) * 1000
    except OSError as error:
        return {"connected": False, "answered": False, "error": str(error) or type(error).__name__}
    finally:
        sock.close()
    return {"connected": True, "answered": answer == b"PONG\n", "connect_ms": round(connect_ms, 2),
            "answer_ms": round(answer_ms, 2), "error": "" if answer else "closed without an answer"}


def main() -> None:
    parser = argparse.ArgumentParser()
    roles = parser.add_subparsers(dest="role", required=True)
    listen = roles.add_parser("listener")
    listen.add_argument("--port", type=int, required=True)
    listen.add_argument("--cap", type=int, required=True)
    flood = roles.add_parser("flood")
    flood.add_argument("--sources", nargs="+", required=True)
    flood.add_argument("--per-source", type=int, required=True)
    flood.add_argument("--target", required=True)
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument("--timeout", type=float, default=0.8)
    probe = roles.add_parser("probe")
    probe.add_argument("--source", required=True)
    probe.add_argument("--target", required=True)
    probe.add_argument("--port", type=int, required=True)
    probe.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    _raise_file_limit()
    if args.role == "listener":
        asyncio.run(_listen(args.port, args.cap))
    elif args.role == "flood":
        counts, held = connect_many(args.sources, args.per_source, args.target, args.port, args.timeout)
        print(json.dumps(counts), flush=True)
        sys.stdin.read()  # hold the connections until the test closes our stdin
        for sock in held:
            sock.close()
    else:
        print(json.dumps(_probe(args.source, args.target, args.port, args.timeout)), flush=True)


if __name__ == "__main__":
    main()

"""The parties of the admission tests, each run inside its own network namespace
(`ip netns exec NS python -m tests.security.admission_parties ROLE ...`).

- `listener`: stands where Kamailio (or a TLS front) listens on the TLS port and, like it, caps
  the total of connections it holds: past `--cap` it closes a new connection at once. It answers
  `PING` with `PONG`. What is tested is admission in front of it, not SIP. For each `status`
  line on its stdin it prints one JSON line of counts (see `ListenerCounts`); it ends when its
  stdin closes.
- `flood`: opens `--per-source` connections from each of many source addresses at once, holds
  them, prints one JSON line of counts and holds until its stdin closes. How many of them the
  listener holds is the listener's to say: a connection the kernel completed may still wait in
  the listener's accept queue, or be refused and not yet closed, for as long as the listener
  takes to get through them (over a second for 1600 on a busy machine).
- `probe`: Meta's side: connects from one address, sends PING, prints connect/answer times.
Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import resource
import selectors
import socket
import struct
import sys
import time
from typing import TypedDict


class ListenerCounts(TypedDict):
    """What the listener has done, as one `status` line reports it."""

    accepted: int  # connections handed to the listener since it started, held or refused
    held: int      # held now (at most the cap)
    refused: int   # closed at once past the cap, the close done
    closing: int   # refused, the close not done yet
    queued: int    # completed by the kernel, waiting in the accept queue


def _accept_queue_length(listening: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue: for a socket in LISTEN, Linux
    reports them in tcp_info's tcpi_unacked (offset 24, after eight u8 and four u32 fields)."""
    info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 24)[0])


async def _listen(port: int, cap: int) -> None:
    held: set[asyncio.StreamWriter] = set()
    accepted = refused = closing = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, refused, closing
        accepted += 1
        if len(held) >= cap:
            closing += 1
            writer.close()
            with contextlib.suppress(OSError):  # done once asyncio has closed the socket
                await writer.wait_closed()
            closing -= 1
            refused += 1
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
    listening = server.sockets[0]
    control = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(control), sys.stdin)
    print("listening", flush=True)
    async with server:
        while line := await control.readline():
            if line.strip() == b"status":
                counts: ListenerCounts = {
                    "accepted": accepted, "held": len(held), "refused": refused, "closing": closing,
                    "queued": _accept_queue_length(listening)}
                print(json.dumps(counts), flush=True)


def _raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect_many(sources: list[str], per_source: int, target: str, port: int,
                 timeout: float) -> tuple[dict[str, int], list[socket.socket]]:
    """Open per_source connections from each source at once; count how their handshakes ended
    (connected, or refused: reset, or no answer within `timeout`)."""
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
    return ({"attempted": attempted, "connected": len(connected), "timed_out": timed_out,
             "refused": refused + timed_out}, connected)


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

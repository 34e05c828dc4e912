"""Two questions to the Redis that rtpengine replicates calls into ([media.rtpengine] redis):
does it answer, and does it publish the keyspace notifications a standby rtpengine lives on?

rtpengine's `subscribe-keyspace` reads Redis's keyspace events of string and generic commands
(SET and DEL of a call's record) but never turns them on: a Redis left at its default
(`notify-keyspace-events ""`) takes every record and tells no standby, so the other edges hold
no copies and a lost edge's calls lose their media as without replication. Stdlib only (RESP
over one TCP connection); the password, if any, from RTPENGINE_REDIS_AUTH_PW as rtpengine reads it.
"""

from __future__ import annotations

import os
import socket

TIMEOUT_S = 2.0


class RedisProbeError(Exception):
    pass


def _request(*words: str) -> bytes:
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RedisProbeError("Redis closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RedisProbeError("Redis closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data

    def reply(self) -> object:
        line = self.line()
        kind, rest = line[:1], line[1:].decode(errors="replace")
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisProbeError(rest)
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return None if rest == "-1" else self.exact(int(rest)).decode(errors="replace")
        if kind == b"*":
            return None if rest == "-1" else [self.reply() for _ in range(int(rest))]
        raise RedisProbeError(f"not a Redis reply: {line[:40]!r}")


def keyspace_events(host: str, port: int, timeout_s: float = TIMEOUT_S) -> str:
    """Redis's `notify-keyspace-events` (after PING, and AUTH when the variable is set)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            reader = _Reader(sock)
            password = os.environ.get("RTPENGINE_REDIS_AUTH_PW")
            if password:
                sock.sendall(_request("AUTH", password))
                reader.reply()
            sock.sendall(_request("PING"))
            if reader.reply() != "PONG":
                raise RedisProbeError("Redis did not answer PING with PONG")
            sock.sendall(_request("CONFIG", "GET", "notify-keyspace-events"))
            answer = reader.reply()
    except OSError as error:
        raise RedisProbeError(f"{host}:{port}: {error.strerror or error}") from None
    if not isinstance(answer, list) or len(answer) != 2:
        raise RedisProbeError(f"CONFIG GET notify-keyspace-events answered {answer!r}")
    return str(answer[1])


def standby_ready(events: str) -> bool:
    """Keyspace events (K) of string ($) and generic (g) commands, or all of them (A)."""
    return "K" in events and ("A" in events or ("$" in events and "g" in events))

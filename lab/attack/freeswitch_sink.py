"""A fake FreeSWITCH that only listens: every request reaching it was relayed by the edge.

It binds UDP ports on the FreeSWITCH host that no legitimate call uses (a second dispatcher
node, spare ports an attacker's Route may name) and records each distinct request (method,
Call-ID, CSeq), retransmissions counted once. It never answers, so nothing it receives can
look like a completed call. An attack run passes when it recorded nothing.
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
from dataclasses import dataclass, field

_CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)")
_CSEQ = re.compile(rb"(?im)^cseq[ \t]*:[ \t]*([^\r\n]*)")
_AUTH = re.compile(rb"(?im)^x-wa-auth[ \t]*:[ \t]*([^\r\n]*)")


@dataclass(frozen=True)
class RelayedRequest:
    port: int
    first_line: str
    call_id: str
    cseq: str
    wa_auth: str


@dataclass
class FreeswitchSink:
    """Listens on `ports` of `host` in a background thread until `stop()` (or `with`)."""

    ports: tuple[int, ...]
    host: str = "127.0.0.1"
    requests: list[RelayedRequest] = field(default_factory=list)
    datagrams: int = 0

    def __post_init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._sockets: list[socket.socket] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="freeswitch-sink", daemon=True)

    def __enter__(self) -> FreeswitchSink:
        for port in self.ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.host, port))
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, port)
            self._sockets.append(sock)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self._sockets:
            self._selector.unregister(sock)
            sock.close()
        self._sockets.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except OSError:
                    continue
                self._record(int(key.data), data)

    def _record(self, port: int, data: bytes) -> None:
        with self._lock:
            self.datagrams += 1
            if data.startswith(b"SIP/2.0 ") or not data.strip():
                return
            first_line = data.split(b"\r\n", 1)[0].decode(errors="backslashreplace")
            call_id = _first(_CALL_ID, data)
            cseq = _first(_CSEQ, data)
            key = (first_line.split(" ", 1)[0], call_id, cseq)
            if key in self._seen:
                return
            self._seen.add(key)
            self.requests.append(RelayedRequest(port, first_line[:200], call_id, cseq,
                                                _first(_AUTH, data)))

    def relayed(self) -> list[RelayedRequest]:
        with self._lock:
            return list(self.requests)


def _first(pattern: re.Pattern[bytes], data: bytes) -> str:
    match = pattern.search(data)
    return match[1].decode(errors="backslashreplace").strip() if match else ""

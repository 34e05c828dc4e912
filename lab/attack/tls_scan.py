"""A TLS scanner as the Internet runs them against port 5061, bounded and loopback only.

The mix that crashed Kamailio 5.6.3's tls module three times out of three (issue 10, item 7):
TLS 1.0/1.1/1.2 ClientHellos offering one cipher each, SSLv2-format hellos, plain HTTP and
garbage on the TLS port, resets in the middle of a handshake (SO_LINGER 0), renegotiation and
key-update requests, client certificates, idle and half-open connections; several clients in
parallel. Hellos are built byte by byte so the local OpenSSL policy cannot refuse to send them;
renegotiation uses `openssl s_client` (stdlib ssl has no renegotiation call) when installed.

    python -m lab.attack.tls_scan --port 5061 --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.attack.targets import Target, attacker_sources, connect, loopback_target
from lab.attack.tls_hold import scanner_context

TLS10, TLS11, TLS12 = 0x0301, 0x0302, 0x0303
# One cipher per attempt, old and current: NULL, EXPORT, RC4, 3DES, CBC, GCM, ChaCha20 and the
# TLS 1.3 suites (offered in a 1.2 hello: the server must refuse them cleanly).
CIPHERS = (0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x000A, 0x002F, 0x0033, 0x0035, 0x009C,
           0x009D, 0xC006, 0xC007, 0xC008, 0xC009, 0xC013, 0xC014, 0xC02B, 0xC02F, 0xC030,
           0xCCA8, 0xCCA9, 0x1301, 0x1302, 0x1303, 0x00FF, 0x5600)
# NULL, EXPORT, RC4 and 3DES: an edge that negotiates one of these is broken whatever else holds.
WEAK_CIPHERS = frozenset((0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x000A, 0xC006, 0xC007,
                          0xC008))
SSL2_CIPHER_SPECS = bytes.fromhex("010080 020080 030080 040080 050080 060040 0700c0".replace(" ", ""))
HTTP_GET = b"GET / HTTP/1.1\r\nHost: scan\r\nUser-Agent: scanner\r\nConnection: close\r\n\r\n"
OPTIONS = (b"OPTIONS sip:scan@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5061;"
           b"branch=z9hG4bK-scan\r\nFrom: <sip:scan@scan.invalid>;tag=scan\r\n"
           b"To: <sip:scan@127.0.0.1>\r\nCall-ID: scan-%d\r\nCSeq: 1 OPTIONS\r\n"
           b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(version: int, ciphers: list[int], server_name: str = "scan.invalid",
                 record_version: int = TLS10, rng: random.Random | None = None) -> bytes:
    """A complete TLS record holding one ClientHello (the way scanners write them)."""
    rng = rng or random.Random()
    name = server_name.encode()
    extensions = b"".join([
        _extension(0x0000, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),
        _extension(0x000A, struct.pack("!HHH", 4, 0x001D, 0x0017)),  # x25519, secp256r1
        _extension(0x000B, b"\x01\x00"),  # uncompressed points
        _extension(0x000D, struct.pack("!HHHHH", 8, 0x0403, 0x0804, 0x0401, 0x0201)),
        _extension(0xFF01, b"\x00"),  # renegotiation_info, empty: a fresh handshake
    ])
    suites = b"".join(struct.pack("!H", c) for c in ciphers)
    body = (struct.pack("!H", version) + rng.randbytes(32) + b"\x00"
            + struct.pack("!H", len(suites)) + suites + b"\x01\x00"
            + struct.pack("!H", len(extensions)) + extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + struct.pack("!HH", record_version, len(handshake)) + handshake


def sslv2_hello(version: int, rng: random.Random) -> bytes:
    """An SSLv2-format CLIENT-HELLO (2-byte header with the high bit set)."""
    challenge = rng.randbytes(16)
    body = (b"\x01" + struct.pack("!HHHH", version, len(SSL2_CIPHER_SPECS), 0, len(challenge))
            + SSL2_CIPHER_SPECS + challenge)
    return struct.pack("!H", 0x8000 | len(body)) + body


def read_answer(sock: socket.socket, timeout: float) -> str:
    """What the edge answered: 'alert', 'server-hello', 'sip', 'other', 'closed', 'reset'
    or 'silent' (nothing within `timeout`)."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "silent"
    except OSError:
        return "closed"
    if not data:
        return "closed"
    if data[0] == 0x15:
        return "alert"
    if data[0] == 0x16:
        return "server-hello"
    if data.startswith(b"SIP/2.0"):
        return "sip"
    return "other"


def reset_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, 0 s), as a scanner that gives up does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class ScanSettings:
    target: Target
    client_cert: Path | None = None
    client_key: Path | None = None
    hold_s: float = 0.5
    io_timeout_s: float = 1.0


Probe = Callable[[ScanSettings, str, random.Random], str]


def probe_old_version_hello(settings: ScanSettings, source: str, rng: random.Random) -> str:
    version = rng.choice((TLS10, TLS11))
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        sock.sendall(client_hello(version, [rng.choice(CIPHERS)], rng=rng))
        return read_answer(sock, settings.io_timeout_s)


def probe_one_cipher(settings: ScanSettings, source: str, rng: random.Random) -> str:
    """A TLS 1.2 hello offering one cipher; a ServerHello for a weak one is 'server-hello-weak'."""
    cipher = rng.choice(CIPHERS)
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        sock.sendall(client_hello(TLS12, [cipher], rng=rng))
        outcome = read_answer(sock, settings.io_timeout_s)
    return outcome + "-weak" if outcome == "server-hello" and cipher in WEAK_CIPHERS else outcome


def probe_sslv2_hello(settings: ScanSettings, source: str, rng: random.Random) -> str:
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        sock.sendall(sslv2_hello(rng.choice((0x0002, TLS10, TLS12)), rng))
        return read_answer(sock, settings.io_timeout_s)


def probe_http(settings: ScanSettings, source: str, rng: random.Random) -> str:
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        sock.sendall(HTTP_GET)
        return read_answer(sock, settings.io_timeout_s)


def probe_garbage(settings: ScanSettings, source: str, rng: random.Random) -> str:
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        # sometimes a record header claiming a handshake, then noise
        head = b"\x16\x03\x01" + rng.randbytes(2) if rng.random() < 0.5 else b""
        sock.sendall(head + rng.randbytes(rng.randint(1, 2048)))
        return read_answer(sock, settings.io_timeout_s)


def probe_reset_mid_handshake(settings: ScanSettings, source: str, rng: random.Random) -> str:
    sock = connect(settings.target, source, settings.io_timeout_s)
    try:
        sock.sendall(client_hello(TLS12, [0xC02F, 0xC030, 0xC02B], rng=rng))
        if rng.random() < 0.5:
            sock.settimeout(settings.io_timeout_s)
            sock.recv(rng.randint(1, 200))  # part of the server's flight, then RST
        return "reset-sent"
    except OSError:
        return "closed"
    finally:
        reset_close(sock)


def probe_truncated_hello(settings: ScanSettings, source: str, rng: random.Random) -> str:
    """Half a ClientHello, then hold (half-open handshake), then RST or FIN."""
    sock = connect(settings.target, source, settings.io_timeout_s)
    try:
        hello = client_hello(TLS12, list(CIPHERS), rng=rng)
        sock.sendall(hello[:rng.randint(1, len(hello) - 1)])
        if rng.random() < 0.5:
            sock.shutdown(socket.SHUT_WR)
        return read_answer(sock, settings.hold_s)
    finally:
        reset_close(sock) if rng.random() < 0.5 else sock.close()


def probe_idle(settings: ScanSettings, source: str, rng: random.Random) -> str:
    with connect(settings.target, source, settings.io_timeout_s) as sock:
        return read_answer(sock, settings.hold_s)


def _tls(settings: ScanSettings, source: str, with_cert: bool,
         version: ssl.TLSVersion | None = None) -> ssl.SSLSocket:
    context = scanner_context()
    if version is not None:
        context.maximum_version = version
    if with_cert and settings.client_cert and settings.client_key:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    raw = connect(settings.target, source, settings.io_timeout_s)
    try:
        return context.wrap_socket(raw, server_hostname="scan.invalid")
    except (OSError, ssl.SSLError):
        raw.close()
        raise


def probe_client_certificate(settings: ScanSettings, source: str, rng: random.Random) -> str:
    """A full handshake presenting a client certificate, an OPTIONS, then an abrupt close."""
    try:
        tls = _tls(settings, source, with_cert=True,
                   version=rng.choice((ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)))
    except (OSError, ssl.SSLError):
        return "handshake-refused"
    try:
        tls.sendall(OPTIONS % rng.randint(1, 1 << 30))
        outcome = read_answer(tls, settings.io_timeout_s)
    except (OSError, ssl.SSLError):
        outcome = "closed"
    if rng.random() < 0.5:
        reset_close(tls)
    else:
        tls.close()
    return outcome


def probe_garbage_after_handshake(settings: ScanSettings, source: str, rng: random.Random) -> str:
    try:
        tls = _tls(settings, source, with_cert=False)
    except (OSError, ssl.SSLError):
        return "handshake-refused"
    with tls:
        try:
            tls.sendall(rng.choice((HTTP_GET, rng.randbytes(rng.randint(1, 4096)))))
            return read_answer(tls, settings.io_timeout_s)
        except (OSError, ssl.SSLError):
            return "closed"


def probe_renegotiation(settings: ScanSettings, source: str, rng: random.Random) -> str:
    """TLS 1.2 renegotiation ('R') or TLS 1.3 key update ('K') through `openssl s_client`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return probe_one_cipher(settings, source, rng)
    tls13 = rng.random() < 0.3
    # command letters work only without -ign_eof/-quiet; EOF on stdin then ends the session
    argv = [openssl, "s_client", "-connect", f"{settings.target.host}:{settings.target.port}",
            "-bind", f"{source}:0", "-servername", "scan.invalid",
            "-tls1_3" if tls13 else "-tls1_2"]
    commands = b"K\nK\n" if tls13 else b"R\nR\nR\n"
    try:
        done = subprocess.run(argv, input=commands, capture_output=True,
                              timeout=settings.io_timeout_s + 3, check=False)
    except subprocess.TimeoutExpired:
        return "silent"
    text = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    if "RENEGOTIATING" in text or "KEYUPDATE" in text:
        return "renegotiation-refused" if done.returncode else "renegotiation-sent"
    return "handshake-refused" if done.returncode else "closed"


# Probe -> weight: the quick hello/garbage probes that crashed 5.6.3 run most often; the ones
# that hold a connection open or start a process run less.
PROBES: dict[str, tuple[Probe, int]] = {
    "old-version-hello": (probe_old_version_hello, 4),
    "one-cipher": (probe_one_cipher, 6),
    "sslv2-hello": (probe_sslv2_hello, 3),
    "http": (probe_http, 3),
    "garbage": (probe_garbage, 3),
    "rst-mid-handshake": (probe_reset_mid_handshake, 4),
    "truncated-hello": (probe_truncated_hello, 1),
    "idle": (probe_idle, 1),
    "client-certificate": (probe_client_certificate, 2),
    "garbage-after-handshake": (probe_garbage_after_handshake, 1),
    "renegotiation": (probe_renegotiation, 1),
}


@dataclass
class ScanReport:
    """How many attempts of each probe ended how: (probe, outcome) -> count."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def attempts(self) -> int:
        return sum(self.outcomes.values())

    def by_probe(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (probe, _), count in self.outcomes.items():
            counts[probe] += count
        return counts

    def count(self, probe: str, outcome: str) -> int:
        return self.outcomes[(probe, outcome)]

    def summary(self) -> str:
        lines = [f"{self.attempts} attempts in {self.seconds:.1f} s"]
        for (probe, outcome), count in sorted(self.outcomes.items()):
            lines.append(f"  {probe:24} {outcome:22} {count}")
        return "\n".join(lines)


def scan(settings: ScanSettings, clients: int = 8, seconds: float = 20.0,
         max_attempts: int = 50000, seed: int = 10, sources: list[str] | None = None,
         progress: Callable[[ScanReport], None] | None = None,
         stop: threading.Event | None = None) -> ScanReport:
    """Run `clients` scanner threads until `seconds` pass, `max_attempts` are made or `stop`
    is set. Each thread draws probes by weight, from its own source address (one per client
    unless `sources` says otherwise)."""
    sources = sources or attacker_sources(clients, first=100)
    report = ScanReport()
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()
    started = time.monotonic()

    names = list(PROBES)
    weights = [PROBES[name][1] for name in names]

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        source = sources[index % len(sources)]
        while not stop.is_set() and time.monotonic() < deadline:
            with report.lock:
                if report.attempts >= max_attempts:
                    return
            name = rng.choices(names, weights)[0]
            try:
                outcome = PROBES[name][0](settings, source, rng)
            except ConnectionRefusedError:
                outcome = "connect-refused"
            except (OSError, ssl.SSLError) as error:
                outcome = type(error).__name__
            with report.lock:
                report.outcomes[(name, outcome)] += 1

    threads = [threading.Thread(target=client, args=(i,), name=f"scan-{i}", daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=1.0)
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-attempts", type=int, default=50000)
    parser.add_argument("--client-cert", type=Path)
    parser.add_argument("--client-key", type=Path)
    args = parser.parse_args(argv)
    settings = ScanSettings(loopback_target(args.host, args.port), args.client_cert,
                            args.client_key)
    report = scan(settings, args.clients, min(args.seconds, 600.0), args.max_attempts,
                  seed=os.getpid())
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Running SIPp scenarios from sipp-scenarios/ and reading what they exchanged."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lab.processes import LabError, ManagedProcess

SCENARIOS = Path(__file__).resolve().parent.parent / "sipp-scenarios"


@dataclass(frozen=True)
class TracedMessage:
    """One message from a SIPp -trace_msg file: when, which way, and the message itself."""

    time: str
    sent: bool
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]


@dataclass
class SippResult:
    name: str
    exit_code: int
    trace: list[TracedMessage] = field(default_factory=list)
    errors: str = ""

    @property
    def messages(self) -> list[str]:
        return [m.text for m in self.trace]

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def first_lines(self) -> list[str]:
        return [m.first_line for m in self.trace]


def scenario(flow: str, role: str) -> Path:
    path = SCENARIOS / flow / f"{role}.xml"
    if not path.exists():
        raise LabError(f"no SIPp scenario {path}")
    return path


def _argv(xml: Path, remote: str | None, local_port: int, transport: str, keys: dict[str, str],
          folder: Path, tag: str, calls: int, timeout_s: int, extra: list[str]) -> list[str]:
    argv = ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(local_port), "-t", transport,
            "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
            "-trace_msg", "-message_file", str(folder / f"{tag}.messages"),
            "-trace_err", "-error_file", str(folder / f"{tag}.errors"),
            "-cid_str", "outgoing:wacid.%u-%p@wa.meta.vc", "-max_recv_loops", "1000"]
    for key, value in keys.items():
        argv += ["-key", key, value]
    argv += extra
    if remote:
        argv.append(remote)
    return argv


class SippServer(ManagedProcess):
    """A SIPp UAS running in the background; `trace()` reads what it exchanged so far."""

    def __init__(self, tag: str, argv: list[str], folder: Path) -> None:
        super().__init__(f"sipp {tag}", argv, folder / f"{tag}.log")
        self.trace_file = folder / f"{tag}.messages"

    def trace(self) -> list[TracedMessage]:
        return read_trace(self.trace_file)


def start_sipp_server(flow: str, role: str, folder: Path, port: int, calls: int = 1,
                      keys: dict[str, str] | None = None, timeout_s: int = 30) -> SippServer:
    """A SIPp UAS (standing in for FreeSWITCH) on UDP 127.0.0.1:port, in the background."""
    tag = f"{flow}-{role}-{port}"
    argv = _argv(scenario(flow, role), None, port, "u1", keys or {}, folder, tag, calls,
                 timeout_s, [])
    server = SippServer(tag, argv, folder)
    server.start()
    return server


_TRACE_HEADER = re.compile(
    r"^-{10,} (?P<time>[0-9-]+ [0-9:.]+)\n(?:UDP|TCP|TLS) message (?P<way>sent|received)[^\n]*\n",
    re.MULTILINE)


def read_trace(path: Path) -> list[TracedMessage]:
    """The messages of a SIPp -trace_msg file, in order, each with CRLF line ends."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    heads = list(_TRACE_HEADER.finditer(text))
    trace = []
    for index, head in enumerate(heads):
        end = heads[index + 1].start() if index + 1 < len(heads) else len(text)
        body = text[head.end():end].strip("\n").replace("\r\n", "\n").replace("\n", "\r\n")
        trace.append(TracedMessage(head["time"].split(" ")[1], head["way"] == "sent", body))
    return trace


def read_messages(path: Path) -> list[str]:
    return [m.text for m in read_trace(path)]


def run_sipp_client(flow: str, role: str, folder: Path, remote_port: int, local_port: int,
                    keys: dict[str, str] | None = None, calls: int = 1, timeout_s: int = 20,
                    extra: list[str] | None = None, transport: str = "t1") -> SippResult:
    """Run a SIPp UAC to completion (bounded by `timeout_s`) and collect its messages."""
    tag = f"{flow}-{role}-{local_port}"
    argv = _argv(scenario(flow, role), f"127.0.0.1:{remote_port}", local_port, transport,
                 keys or {}, folder, tag, calls, timeout_s, extra or [])
    try:
        done = subprocess.run(argv, cwd=folder, capture_output=True, timeout=timeout_s + 15,
                              check=False)
    except FileNotFoundError:
        raise LabError("sipp is not installed (Debian package sip-tester)") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"sipp {tag} did not finish within {timeout_s + 15} s") from None
    (folder / f"{tag}.log").write_bytes(done.stdout + done.stderr)
    errors_path = folder / f"{tag}.errors"
    errors = errors_path.read_text(errors="replace") if errors_path.exists() else ""
    return SippResult(tag, done.returncode, read_trace(folder / f"{tag}.messages"), errors)

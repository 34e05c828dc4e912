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
    peer: str = ""  # HOST:PORT of the other side, where the trace says (FreeSWITCH's does)

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0]


@dataclass
class SippResult:
    name: str
    exit_code: int
    trace: list[TracedMessage] = field(default_factory=list)
    errors: str = ""
    unexpected: list[str] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [m.text for m in self.trace]

    @property
    def passed(self) -> bool:
        """SIPp succeeded and nothing arrived out of script except a late provisional reply."""
        return self.exit_code == 0 and not self.out_of_script()

    def out_of_script(self) -> list[str]:
        """First lines of unexpected messages that are not a late provisional reply."""
        return [line for line in self.unexpected if not _LATE_PROVISIONAL.match(line)]

    def first_lines(self) -> list[str]:
        return [m.first_line for m in self.trace]


def scenario(flow: str, role: str) -> Path:
    path = SCENARIOS / flow / f"{role}.xml"
    if not path.exists():
        raise LabError(f"no SIPp scenario {path}")
    return path


# SIPp aborts a call on any message its scenario does not expect at that step. A proxy with
# several workers may relay a 180 after the 200 of the same INVITE (Kamailio's tm decides under
# the transaction's reply lock but sends after releasing it; UDP reorders too), and RFC 3261
# lets a UAC ignore a provisional reply that comes after the final one. So SIPp runs without
# `abortunexp` and read_trace() collects what arrived out of script: a late 1xx is tolerated,
# anything else fails the result (see SippResult.passed). Scenario recv steps stay mandatory.
_TOLERATE_UNEXPECTED = ["-default_behaviors", "all,-abortunexp"]
_LATE_PROVISIONAL = re.compile(r"^SIP/2\.0 1[0-9][0-9] ")


def _argv(xml: Path, remote: str | None, local_port: int, transport: str, keys: dict[str, str],
          folder: Path, tag: str, calls: int, timeout_s: int, extra: list[str]) -> list[str]:
    argv = ["sipp", "-sf", str(xml), "-i", "127.0.0.1", "-p", str(local_port), "-t", transport,
            "-m", str(calls), "-timeout", f"{timeout_s}s", "-timeout_error", "-nostdin",
            "-trace_msg", "-message_file", str(folder / f"{tag}.messages"),
            "-trace_err", "-error_file", str(folder / f"{tag}.errors"),
            "-cid_str", "outgoing:wacid.%u-%p@wa.meta.vc", "-max_recv_loops", "1000",
            *_TOLERATE_UNEXPECTED]
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

    def wait(self, timeout: float) -> int:
        """SIPp's exit code, or 1 when something other than a late 1xx arrived out of script."""
        code = super().wait(timeout)
        late_ok = all(_LATE_PROVISIONAL.match(line) for line in read_unexpected(self.trace_file))
        return code if code != 0 or late_ok else 1


def start_sipp_server(flow: str, role: str, folder: Path, port: int, calls: int = 1,
                      keys: dict[str, str] | None = None, timeout_s: int = 30) -> SippServer:
    """A SIPp UAS (standing in for FreeSWITCH) on UDP 127.0.0.1:port, in the background."""
    tag = f"{flow}-{role}-{port}"
    argv = _argv(scenario(flow, role), None, port, "u1", keys or {}, folder, tag, calls,
                 timeout_s, [])
    server = SippServer(tag, argv, folder)
    server.start()
    return server


# Each entry of a -trace_msg file starts with a line of dashes (with a time stamp for the
# messages of the script, without one for "Unexpected ... message received:").
_ENTRY = re.compile(r"^-{10,}(?: (?P<time>[0-9-]+ [0-9:.]+))?\n", re.MULTILINE)
_SCRIPTED = re.compile(r"^(?:UDP|TCP|TLS) message (?P<way>sent|received)[^\n]*\n")
_UNEXPECTED = re.compile(r"^Unexpected (?:UDP|TCP|TLS) message received:\n")


def _entries(path: Path) -> list[tuple[str | None, str]]:
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    heads = list(_ENTRY.finditer(text))
    return [(head["time"], text[head.end():heads[i + 1].start() if i + 1 < len(heads) else None])
            for i, head in enumerate(heads)]


def _crlf(body: str) -> str:
    return body.strip("\n").replace("\r\n", "\n").replace("\n", "\r\n")


def read_trace(path: Path) -> list[TracedMessage]:
    """The messages of a SIPp -trace_msg file, in order, each with CRLF line ends."""
    trace = []
    for time, entry in _entries(path):
        scripted = _SCRIPTED.match(entry)
        if time and scripted:
            trace.append(TracedMessage(time.split(" ")[1], scripted["way"] == "sent",
                                       _crlf(entry[scripted.end():])))
    return trace


def read_unexpected(path: Path) -> list[str]:
    """First lines of the messages SIPp received out of script (see _TOLERATE_UNEXPECTED)."""
    found = []
    for _, entry in _entries(path):
        unexpected = _UNEXPECTED.match(entry)
        if unexpected:
            found.append(_crlf(entry[unexpected.end():]).split("\r\n", 1)[0])
    return found


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
    trace_file = folder / f"{tag}.messages"
    return SippResult(tag, done.returncode, read_trace(trace_file), errors,
                      read_unexpected(trace_file))

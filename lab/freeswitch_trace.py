"""FreeSWITCH's own view of its SIP legs: sofia's siptrace, read back from freeswitch.log.

The lab turns it on at run time over the Event Socket (`sofia tracelevel info`, then
`sofia profile wa-edge siptrace on`), so nothing in the rendered configuration changes: sofia
then logs every message it sends or receives at INFO, which the rendered logfile keeps, as

    send 1571 bytes to udp/[127.0.0.1]:53457 at 09:49:15.108052:
    ------------------------------------------------------------------------
    SIP/2.0 200 OK
    ...

The message follows with its line ends shortened to LF; the byte count says where it ends
(each line counted with its CRLF), since other log lines may follow it directly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from lab.sipp import TracedMessage

_HEAD = re.compile(r"^(?P<way>send|recv) (?P<size>\d+) bytes (?:to|from) (?P<peer>\S+) at "
                   r"(?P<time>\d\d:\d\d:\d\d\.\d+):$")
_PEER = re.compile(r"^\w+/\[(?P<host>[^\]]+)\]:(?P<port>\d+)$")  # udp/[127.0.0.1]:53457
_RULE = re.compile(r"^-{20,}$")
TRACE_COMMANDS = ("sofia tracelevel info", "sofia profile wa-edge siptrace on")
"""Event Socket API commands that make FreeSWITCH log its SIP messages (lab only)."""


def read_freeswitch_trace(log: Path, start: int = 0) -> list[TracedMessage]:
    """Every SIP message in `log` from byte offset `start`, as FreeSWITCH sent or received it."""
    try:
        with log.open("rb") as handle:
            handle.seek(start)
            lines = handle.read().decode(errors="replace").split("\n")
    except OSError:
        return []
    found: list[TracedMessage] = []
    index = 0
    while index < len(lines):
        head = _HEAD.match(lines[index])
        index += 1
        if head is None or index >= len(lines) or not _RULE.match(lines[index]):
            continue
        index += 1
        size, taken, body = int(head["size"]), 0, []
        while index < len(lines) and taken < size:
            body.append(lines[index])
            taken += len(lines[index].encode()) + 2
            index += 1
        peer = _PEER.match(head["peer"])
        found.append(TracedMessage(head["time"], head["way"] == "send", "\r\n".join(body),
                                   f"{peer['host']}:{peer['port']}" if peer else head["peer"]))
    return found


def header(message: TracedMessage, name: str) -> str:
    """The first `name` header's value in a traced message ("" when it has none)."""
    found = re.search(rf"^{re.escape(name)}: *([^\r\n]*)", message.text,
                      re.MULTILINE | re.IGNORECASE)
    return found[1].strip() if found else ""


def call_id(message: TracedMessage) -> str:
    found = re.search(r"^(?:Call-ID|i): *(\S+)", message.text, re.MULTILINE | re.IGNORECASE)
    return found[1] if found else ""


def messages_of_call(messages: list[TracedMessage], wanted: str) -> list[TracedMessage]:
    return [m for m in messages if call_id(m) == wanted]


def _cseq_method(message: TracedMessage) -> str:
    found = re.search(r"^CSeq: *\d+ +(\S+)", message.text, re.MULTILINE | re.IGNORECASE)
    return found[1].upper() if found else ""


def dialog_over(messages: list[TracedMessage]) -> bool:
    """A 200 to a BYE was sent or received, or FreeSWITCH ACKed a final refusal."""
    refused = any(re.match(r"SIP/2\.0 [3-6]\d\d ", m.first_line) and _cseq_method(m) == "INVITE"
                  for m in messages)
    return any((m.first_line.startswith("SIP/2.0 200") and _cseq_method(m) == "BYE")
               or (refused and m.sent and m.first_line.startswith("ACK")) for m in messages)


def wait_for_call(log: Path, start: int, wanted: str, timeout: float = 10.0) -> list[TracedMessage]:
    """The call's messages once its dialog is over in the log (FreeSWITCH writes its log from a
    queue, a moment after the messages went out), or what is there after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        messages = messages_of_call(read_freeswitch_trace(log, start), wanted)
        if dialog_over(messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def executed(log: Path, start: int, call_uuid: str) -> list[str]:
    """The applications FreeSWITCH ran on one channel (`<uuid> EXECUTE [depth=N] <channel>
    app(args)` lines of its log), from the dialplan's `socket` on: what wa-esl made it do."""
    pattern = re.compile(rf"^{re.escape(call_uuid)} EXECUTE \[depth=\d+\] \S+ (\w+)\((.*)\)$")
    try:
        with log.open("rb") as handle:
            handle.seek(start)
            lines = handle.read().decode(errors="replace").split("\n")
    except OSError:
        return []
    apps = [f"{found[1]}({found[2]})" for line in lines if (found := pattern.match(line))]
    socket_at = next((i for i, app in enumerate(apps) if app.startswith("socket(")), -1)
    return apps[socket_at + 1:]

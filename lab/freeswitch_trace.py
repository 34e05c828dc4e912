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
from pathlib import Path

from lab.sipp import TracedMessage

_HEAD = re.compile(r"^(?P<way>send|recv) (?P<size>\d+) bytes (?:to|from) \S+ at "
                   r"(?P<time>\d\d:\d\d:\d\d\.\d+):$")
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
        found.append(TracedMessage(head["time"], head["way"] == "send", "\r\n".join(body)))
    return found


def call_id(message: TracedMessage) -> str:
    found = re.search(r"^(?:Call-ID|i): *(\S+)", message.text, re.MULTILINE | re.IGNORECASE)
    return found[1] if found else ""


def messages_of_call(messages: list[TracedMessage], wanted: str) -> list[TracedMessage]:
    return [m for m in messages if call_id(m) == wanted]

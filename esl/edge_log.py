"""Read the edge's per-call log lines (kemi/call_log.py) back from Kamailio's log file.

The edge writes one `wa-edge: call key=value ...` line when an INVITE enters (who, from where,
authenticated how, sent where) and one when the setup ends other than answered (refused and
why, cancelled) or a business-initiated call is answered. Whatever prefix the logger adds
(syslog time and host, Kamailio's `{mt:.. id:..}`) is ignored: everything needed is in the
key=value part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MARKER = "wa-edge: call "
_PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|\S+)')
MAX_LINE = 8192  # longer lines are not ours (ours stay well below 2 KB)


class EdgeLogError(Exception):
    """The edge log cannot be read (missing, unreadable): the message says which file."""


@dataclass(frozen=True)
class EdgeEvent:
    """One parsed line: `event` (invite, final), `direction` (uic, bic) and the other keys."""

    fields: dict[str, str]

    @property
    def event(self) -> str:
        return self.fields.get("event", "")

    @property
    def call_id(self) -> str:
        return self.fields.get("call_id", "")

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


def parse_line(line: str) -> EdgeEvent | None:
    """The event of one log line, or None when the line is not a call line."""
    start = line.find(MARKER)
    if start < 0 or len(line) > MAX_LINE:
        return None
    fields: dict[str, str] = {}
    for key, raw in _PAIR.findall(line[start + len(MARKER):]):
        if raw.startswith('"'):
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(value, str):
                continue
        else:
            value = raw
        fields.setdefault(key, value)
    if "event" not in fields or "call_id" not in fields:
        return None
    return EdgeEvent(fields)


def read_events(lines: Iterable[str]) -> Iterator[EdgeEvent]:
    for line in lines:
        if MARKER in line:
            event = parse_line(line)
            if event is not None:
                yield event


def events_for(paths: Iterable[Path], ids: Iterable[str]) -> list[EdgeEvent]:
    """Every call line whose call_id or wacid is one of `ids`, in file order, read as a stream.

    A wacid found on a line also pulls in the later lines of its Call-ID (the final answer
    line carries only the Call-ID), so asking by wacid finds the whole setup.
    """
    wanted = {i for i in ids if i}
    found: list[EdgeEvent] = []
    for path in paths:
        try:
            with path.open(encoding="utf-8", errors="replace") as handle:
                for event in read_events(handle):
                    if event.call_id in wanted or event.get("wacid") in wanted:
                        wanted.add(event.call_id)
                        found.append(event)
        except FileNotFoundError as exc:
            raise EdgeLogError(f"no edge log at {path}") from exc
        except OSError as exc:
            raise EdgeLogError(f"cannot read the edge log {path}: {exc.strerror or exc}") from exc
    return found

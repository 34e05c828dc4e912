"""The edge's one-line-per-event call log: `wa-edge: call key=value ...`, stable and parseable.

`wa-esl call show` reads these lines back (esl/edge_log.py) to say when an INVITE reached the
edge and what was answered: `event=invite` when the edge takes it, `event=final` when its setup
ends other than answered (refused, cancelled) or a business-initiated call is answered (an
answered user-initiated call has its answer in FreeSWITCH's CDR; no line per call is spent on
it). Keys are fixed words; values that are not plain tokens are
written as JSON strings, so a header value from the network (a wacid, a payload) can never add
a key, break the line, or put a control character into the log.
"""

from __future__ import annotations

import json
import re
import time

PREFIX = "wa-edge: call "
MAX_VALUE = 160
_TOKEN = re.compile(r"^[A-Za-z0-9+._:@/,;=-]{1,160}$")


def _value(value: object) -> str:
    text = str(value)
    if _TOKEN.match(text) and "=" not in text:
        return text
    return json.dumps(text[:MAX_VALUE], ensure_ascii=True)


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def utc_now() -> str:
    """The moment, as ISO 8601 UTC with milliseconds (the log line's `at`); the seconds'
    text is formatted once a second (strftime was most of a call line's cost)."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second[1]}.{int(now % 1 * 1000):03d}Z"


def call_line(event: str, direction: str, call_id: str, **fields: object) -> str:
    """`wa-edge: call event=... direction=... at=... call_id=... k=v ...` with a newline.

    Fields whose value is None are left out; the order is as given (stable for readers).
    """
    parts = [f"event={_value(event)}", f"direction={_value(direction)}", f"at={utc_now()}",
             f"call_id={_value(call_id)}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items() if value is not None]
    return PREFIX + " ".join(parts) + "\n"

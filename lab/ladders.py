"""Call ladders as `make lab` prints them: who sent what to whom, with times, each leg as its
own party saw it (SIPp traces, FreeSWITCH's siptrace, the Meta stand-in's events)."""

from __future__ import annotations

from lab.meta_standin import StandinEvent
from lab.sipp import TracedMessage


def _rows(messages: list[TracedMessage], left: str, right: str, left_sends: bool) -> list[tuple[str, str]]:
    """`left ──▶ right` for messages `left` sent (seen from the side whose trace this is)."""
    rows = []
    for m in messages:
        outgoing = m.sent == left_sends
        rows.append((m.time, f"{left:<11} {'──▶' if outgoing else '◀──'} {right:<11} {m.first_line}"))
    return rows


def uic_ladder(meta: list[TracedMessage], freeswitch: list[TracedMessage],
               business: str = "FreeSWITCH") -> list[str]:
    """Meta's leg (its SIPp trace) and the business side's leg (FreeSWITCH's siptrace, or the
    trace of the SIPp playing it: `business` names it), in time order."""
    rows = _rows(meta, "Meta", "edge", True) + _rows(freeswitch, "edge", business, False)
    return [f"  {time}  {text}" for time, text in sorted(rows)]


def bic_ladder(freeswitch: list[TracedMessage], meta: list[StandinEvent],
               whatsapp: list[TracedMessage], business: str = "FreeSWITCH") -> list[str]:
    """The three legs of a business-initiated call, in time order."""
    rows = _rows(freeswitch, business, "edge", True)
    rows += [(e.time, f"edge        {'──▶' if e.way == 'recv' else '◀──'} Meta        "
                      f"{e.first_line}  [{e.detail.rsplit(' call=', 1)[0]}]")
             for e in meta if "side=user" not in e.detail and e.way != "auth"]
    rows += _rows(whatsapp, "Meta", "WhatsApp", False)
    return [f"  {time}  {text}" for time, text in sorted(rows)]

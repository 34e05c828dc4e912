"""Dialplan applications the stand-in can run for ``sendmsg execute``.

Each run fires CHANNEL_EXECUTE, does the application's effect, then CHANNEL_EXECUTE_COMPLETE;
both carry ``Application``, ``Application-Data`` and, when the command had an ``Event-UUID``,
that value as ``Application-UUID`` (how a controller knows *its* command finished).
Applications that hold the call (park, bridge, ivr, ...) complete when the channel hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lab.esl_standin.switch import CallRuntime, QueuedApp, Switch

HOLDING_APPS = frozenset({"park", "ivr", "lua", "javascript", "conference", "fifo", "socket"})
KNOWN_APPS = frozenset(
    {
        "answer",
        "pre_answer",
        "set",
        "export",
        "multiset",
        "unset",
        "playback",
        "sleep",
        "hangup",
        "bridge",
        "log",
        "info",
        "ring_ready",
    }
) | HOLDING_APPS
PLAYBACK_CAP_S = 0.05
"""Stand-in playbacks last at most this long: tests and the bench must not wait for audio."""


def parse_assignments(app: str, arg: str) -> dict[str, str]:
    """``set a=b``; ``multiset a=1 b=2`` or ``multiset ^^<d>a=1<d>b=2`` (custom delimiter)."""
    if app != "multiset":
        name, _, value = arg.partition("=")
        return {name: value} if name else {}
    custom_delimiter = arg.startswith("^^") and len(arg) > 2
    items = arg[3:].split(arg[2]) if custom_delimiter else arg.split(" ")
    result: dict[str, str] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name:
            result[name] = value
    return result


async def run_application(switch: Switch, runtime: CallRuntime, queued: QueuedApp) -> None:
    channel = runtime.channel
    app, arg = queued.app, queued.arg
    if app not in KNOWN_APPS:
        # switch_core_session_execute_application: "Invalid Application", call torn down
        await switch.hangup(runtime, "DESTINATION_OUT_OF_ORDER", disposition="send_bye")
        return
    tags = {"Application": app, "Application-Data": arg}
    if queued.event_uuid:
        tags["Application-UUID"] = queued.event_uuid
    switch.fire_channel(channel, "CHANNEL_EXECUTE", tags)
    response = "_none_"
    if app in ("set", "export", "multiset"):
        channel.variables.update(parse_assignments(app, arg))
    elif app == "unset":
        channel.variables.pop(arg, None)
    elif app == "answer":
        switch.answer(runtime)
    elif app == "pre_answer":
        channel.answer_state = "early"
        switch.fire_channel(channel, "CHANNEL_PROGRESS_MEDIA")
    elif app == "playback":
        if runtime.first_media_at is None:
            runtime.first_media_at = time.monotonic()
        response = "FILE PLAYED"
        await _hold(runtime, PLAYBACK_CAP_S)
    elif app == "sleep":
        await _hold(runtime, min(int(arg or "0") / 1000, PLAYBACK_CAP_S))
    elif app == "hangup":
        await switch.hangup(runtime, arg or "NORMAL_CLEARING", disposition="send_bye")
    elif app == "bridge":
        response = await _bridge(switch, runtime, arg)
    elif app == "park" and runtime.controlled:
        # switch_ivr_park: "Cannot park channels that are under control already." The app
        # returns at once; the call stays parked by the socket application.
        pass
    elif app in HOLDING_APPS:
        if app == "park":
            channel.state = "CS_PARK"
            switch.fire_channel(channel, "CHANNEL_PARK")
        await runtime.down.wait()
    tags["Application-Response"] = response
    switch.fire_channel(channel, "CHANNEL_EXECUTE_COMPLETE", tags)


async def _hold(runtime: CallRuntime, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runtime.down.wait(), seconds)


async def _bridge(switch: Switch, runtime: CallRuntime, dialstring: str) -> str:
    """Bridge succeeds unless the target is ``error/<CAUSE>``, as FreeSWITCH's error endpoint."""
    channel = runtime.channel
    if dialstring.startswith("error/"):
        cause = dialstring.removeprefix("error/") or "NORMAL_UNSPECIFIED"
        channel.variables["originate_disposition"] = cause
        channel.variables["bridge_hangup_cause"] = cause
        return cause
    channel.variables["bridge_to"] = dialstring
    switch.fire_channel(
        channel,
        "CHANNEL_BRIDGE",
        {"Bridge-A-Unique-ID": channel.uuid, "Other-Leg-Destination-Number": dialstring},
    )
    await runtime.down.wait()
    return "_none_"

"""The stand-in's switch core: channels, the event bus, answer and hangup sequences.

It does what the tests need FreeSWITCH to do, in FreeSWITCH's order: every event carries the
common headers (``switch_event_prep_for_delivery``), a hangup goes CHANNEL_HANGUP -> the running
application completes -> CHANNEL_HANGUP_COMPLETE -> CHANNEL_DESTROY, and queued ``sendmsg``
applications run one after another per channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Protocol

from esl.event import Event
from lab.esl_standin.apps import run_application
from lab.esl_standin.channel import Channel, now_us


class EventSink(Protocol):
    """A listener as the event bus sees it."""

    def wants(self, event_name: str, preview: dict[str, str]) -> bool:
        """Cheap pre-check, so events nobody listens to are never built."""
        ...

    def offer(self, event: Event, cache: dict[str, bytes]) -> None:
        """Deliver if subscribed; ``cache`` holds one serialization per format."""
        ...


@dataclass
class QueuedApp:
    """One ``sendmsg execute`` waiting for the channel's application thread."""

    app: str
    arg: str
    event_uuid: str | None
    received_at: float


@dataclass
class CallRuntime:
    """A channel plus what the stand-in needs to drive it."""

    channel: Channel
    apps: asyncio.Queue[QueuedApp] = field(default_factory=asyncio.Queue)
    down: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    executed: list[QueuedApp] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    first_media_at: float | None = None
    busy: bool = False
    current_app: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    controlled: bool = False
    """Held by an outbound socket in async mode (CF_CONTROLLED): the socket app parked it."""


class Switch:
    """Channels and listeners of one stand-in FreeSWITCH."""

    def __init__(self, *, hostname: str = "fs-standin", ipv4: str = "127.0.0.1") -> None:
        self.hostname = hostname
        self.ipv4 = ipv4
        self.core_uuid = str(uuid.uuid4())
        self._sequence = itertools.count(1)
        self.calls: dict[str, CallRuntime] = {}
        self.sinks: set[EventSink] = set()
        self.session_sinks: dict[str, set[EventSink]] = {}
        self.history: list[Event] | None = None  # set to [] to record every fired event
        self.background: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- events
    def common_headers(self, event_name: str, function: str = "switch_channel_perform") -> dict[
        str, str
    ]:
        now = time.time()
        return {
            "Event-Name": event_name,
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": self.hostname,
            "FreeSWITCH-Switchname": self.hostname,
            "FreeSWITCH-IPv4": self.ipv4,
            "FreeSWITCH-IPv6": "::1",
            "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            "Event-Date-GMT": formatdate(now, usegmt=True),
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Calling-File": "switch_channel.c",
            "Event-Calling-Function": function,
            "Event-Calling-Line-Number": "1",
            "Event-Sequence": str(next(self._sequence)),
        }

    def channel_event(
        self, channel: Channel, event_name: str, extra: dict[str, str] | None = None
    ) -> Event:
        headers = self.common_headers(event_name)
        headers.update(channel.headers())
        if extra:
            headers.update(extra)
        return Event(headers)

    def fire(self, event: Event) -> None:
        if self.history is not None:
            self.history.append(event)
        cache: dict[str, bytes] = {}
        for sink in list(self.sinks):
            sink.offer(event, cache)
        own = self.session_sinks.get(event.unique_id)
        if own:
            for sink in list(own):
                sink.offer(event, cache)

    def interested(self, event_name: str, call_uuid: str, extra: dict[str, str] | None) -> bool:
        if self.history is not None:
            return True
        preview = {"Event-Name": event_name, "Unique-ID": call_uuid, **(extra or {})}
        if any(sink.wants(event_name, preview) for sink in self.sinks):
            return True
        own = self.session_sinks.get(call_uuid, ())
        return any(sink.wants(event_name, preview) for sink in own)

    def subscribe(self, sink: EventSink, session_uuid: str | None = None) -> None:
        """Global sinks see every event; a session's sink only that channel's (cheaper)."""
        if session_uuid is None:
            self.sinks.add(sink)
        else:
            self.session_sinks.setdefault(session_uuid, set()).add(sink)

    def unsubscribe(self, sink: EventSink, session_uuid: str | None = None) -> None:
        self.sinks.discard(sink)
        own = self.session_sinks.get(session_uuid or "")
        if own is not None:
            own.discard(sink)
            if not own:
                del self.session_sinks[session_uuid or ""]

    def fire_channel(
        self, channel: Channel, event_name: str, extra: dict[str, str] | None = None
    ) -> None:
        if not self.interested(event_name, channel.uuid, extra):
            return  # FreeSWITCH builds it anyway; nobody could tell the difference
        self.fire(self.channel_event(channel, event_name, extra))

    # ----------------------------------------------------------------- channels
    def add_call(self, channel: Channel) -> CallRuntime:
        runtime = CallRuntime(channel)
        self.calls[channel.uuid] = runtime
        channel.state = "CS_INIT"
        self.fire_channel(channel, "CHANNEL_CREATE")
        channel.state = "CS_EXECUTE"
        return runtime

    def start_worker(self, runtime: CallRuntime) -> None:
        """Run queued applications one at a time, as the session thread does."""
        if runtime.worker is None:
            runtime.worker = asyncio.get_running_loop().create_task(self._run_apps(runtime))

    async def _run_apps(self, runtime: CallRuntime) -> None:
        while not runtime.down.is_set():
            queued = await runtime.apps.get()
            if runtime.down.is_set():
                break
            runtime.executed.append(queued)
            runtime.busy = True
            runtime.current_app = queued.app
            try:
                await run_application(self, runtime, queued)
            finally:
                runtime.busy = False
                runtime.current_app = None

    def socket_closed(self, runtime: CallRuntime) -> None:
        """The controlling socket went away: a parked call falls out of park and ends.

        (``switch_ivr_park`` returns once CF_CONTROLLED is cleared; the dialplan has nothing
        after ``socket``.) A bridged call or a running IVR carries on without the socket.
        """
        if not runtime.channel.is_up or runtime.current_app not in (None, "park"):
            return
        task = asyncio.get_running_loop().create_task(
            self.hangup(runtime, "NORMAL_CLEARING", disposition="send_bye")
        )
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def answer(self, runtime: CallRuntime) -> None:
        channel = runtime.channel
        if channel.answered_us or not channel.is_up:
            return
        channel.answered_us = now_us()
        channel.answer_state = "answered"
        channel.call_state = "ACTIVE"
        channel.variables["answer_epoch"] = str(channel.answered_us // 1_000_000)
        self.fire_channel(channel, "CHANNEL_ANSWER")
        runtime.answered.set()

    async def hangup(
        self,
        runtime: CallRuntime,
        cause: str,
        *,
        sip_status: int | None = None,
        sip_phrase: str = "",
        disposition: str = "recv_bye",
        bye_headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> None:
        """CHANNEL_HANGUP, let the running app finish, HANGUP_COMPLETE, DESTROY.

        ``response_headers``: X- headers of the final response to our INVITE, which sofia
        keeps as ``sip_rh_<Name>`` (status > 199).
        """
        channel = runtime.channel
        if not channel.is_up:
            return
        channel.hangup_cause = cause
        channel.hangup_us = now_us()
        channel.state = "CS_HANGUP"
        channel.call_state = "HANGUP"
        channel.answer_state = "hangup"
        variables = channel.variables
        variables["hangup_cause"] = cause
        variables["sip_hangup_disposition"] = disposition
        if sip_status is not None:
            variables["sip_term_status"] = str(sip_status)
            if sip_status >= 300:
                variables["sip_invite_failure_status"] = str(sip_status)
                variables["sip_invite_failure_phrase"] = sip_phrase
        for name, value in (bye_headers or {}).items():
            variables["sip_bye_h_" + name] = value
        for name, value in (response_headers or {}).items():
            variables["sip_rh_" + name] = value
        self.fire_channel(channel, "CHANNEL_HANGUP")
        runtime.down.set()
        if runtime.worker is not None and runtime.busy:
            # the parked/bridged application sees the hangup and completes first
            try:
                await asyncio.wait_for(asyncio.shield(runtime.worker), 1.0)
            except TimeoutError:
                runtime.worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runtime.worker
        if runtime.worker is not None and not runtime.worker.done():
            runtime.worker.cancel()
        duration_us = channel.hangup_us - channel.created_us
        billsec_us = channel.hangup_us - channel.answered_us if channel.answered_us else 0
        variables["duration"] = str(duration_us // 1_000_000)
        variables["billsec"] = str(billsec_us // 1_000_000)
        variables["billmsec"] = str(billsec_us // 1000)
        variables["start_epoch"] = str(channel.created_us // 1_000_000)
        variables["end_epoch"] = str(channel.hangup_us // 1_000_000)
        channel.state = "CS_REPORTING"
        self.fire_channel(channel, "CHANNEL_HANGUP_COMPLETE")
        channel.state = "CS_DESTROY"
        self.fire_channel(channel, "CHANNEL_DESTROY")
        self.calls.pop(channel.uuid, None)
        runtime.done.set()

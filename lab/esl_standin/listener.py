"""One mod_event_socket listener: an inbound client or an outbound (call-controlling) socket.

Follows ``parse_command()`` in mod_event_socket.c, in its order: ``exit``; the auth gate;
``filter``; ``resume``; session commands (``connect``, ``getvar``, ``myevents``);
``divert_events``; ``sendmsg``; then the gate that answers every other command on a non-``full``
outbound socket with ``-ERR command not found``; then ``api``, ``bgapi``, ``log``, ``linger``,
``nolinger``, ``nolog``, ``event``, ``nixevent``, ``noevents``. Commands match by
case-insensitive prefix, as ``strncasecmp`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from xml.sax.saxutils import escape

from esl import wire
from esl.errors import EslError
from esl.event import Event, serialize_json, serialize_plain
from lab.esl_standin.switch import CallRuntime, QueuedApp, Switch

AUTH_TIMEOUT_S = 25.0
ApiHandler = Callable[[str, str, "Listener"], Awaitable[str]]

# mod_event_socket: ``myevents`` subscribes to exactly these event types.
MYEVENTS = frozenset(
    {
        "CHANNEL_ANSWER",
        "CHANNEL_APPLICATION",
        "CHANNEL_BRIDGE",
        "CHANNEL_CREATE",
        "CHANNEL_DATA",
        "CHANNEL_DESTROY",
        "CHANNEL_EXECUTE",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_ORIGINATE",
        "CHANNEL_UUID",
        "CHANNEL_OUTGOING",
        "CHANNEL_PARK",
        "CHANNEL_PROGRESS",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_STATE",
        "CHANNEL_UNBRIDGE",
        "CHANNEL_UNPARK",
        "DETECTED_SPEECH",
        "DTMF",
        "NOTALK",
        "TALK",
    }
)


def serialize_xml(event: Event) -> bytes:
    """``switch_event_xmlize`` shape: headers as elements, values XML-escaped."""
    lines = ["<event>", "  <headers>"]
    for name, value in event.headers.items():
        lines.append(f"    <{name}>{escape(value)}</{name}>")
    lines.append("  </headers>")
    if event.body:
        lines.append(f"  <body>{escape(event.body)}</body>")
    lines.append("</event>")
    return "\n".join(lines).encode("utf-8")


_SERIALIZERS = {"plain": serialize_plain, "json": serialize_json, "xml": serialize_xml}


class Listener:
    """State and command handling of one ESL connection on the stand-in."""

    def __init__(
        self,
        switch: Switch,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        password: str,
        api: ApiHandler,
        session: CallRuntime | None = None,
        full: bool = False,
        async_mode: bool = True,
    ) -> None:
        self.switch = switch
        self.reader = reader
        self.writer = writer
        self.password = password
        self.api_handler = api
        self.session = session
        self.outbound = session is not None
        self.full = full
        self.async_mode = async_mode
        self.authed = self.outbound
        self.running = True
        self.format = "plain"
        self.events_on = False
        self.event_names: set[str] = set()
        self.nixed: set[str] = set()
        self.all_events = False
        self.myevents_uuid: str | None = None
        self.filters: list[tuple[str, str]] = []
        self.linger: int | None = None  # seconds; -1 = until the client leaves
        self.commands: list[tuple[float, str]] = []  # (monotonic time, command line)
        self.channel_data_sent_at: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    # ----------------------------------------------------------------- output
    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)

    def wants(self, event_name: str, preview: dict[str, str]) -> bool:
        """Would this listener send an event with these headers? True when unsure.

        ``preview`` holds the headers known before the event is built (name, Unique-ID,
        Application...); filters on other headers cannot be decided and count as a yes.
        """
        if event_name == "CHANNEL_HANGUP" and self.linger is not None:
            return True  # the linger notice follows it
        if not self.events_on or event_name in self.nixed:
            return False
        if not (self.all_events or event_name in self.event_names):
            return False
        if not self.filters:
            return True
        known = {name.lower(): value for name, value in preview.items()}
        if any(header.lower() not in known for header, _ in self.filters):
            return True
        return self._passes_filters(lambda header: known.get(header.lower()))

    def offer(self, event: Event, cache: dict[str, bytes]) -> None:
        """Deliver an event if this listener subscribed to it (event_handler())."""
        if self.events_on and self._subscribed(event):
            payload = cache.get(self.format)
            if payload is None:
                payload = cache[self.format] = _SERIALIZERS[self.format](event)
            self.write(wire.event_frame(payload, self.format))
        if (
            self.session is not None
            and self.linger is not None
            and event.name == "CHANNEL_HANGUP"
            and event.unique_id == self.session.channel.uuid
        ):
            # the listener notices the channel went down right after its hangup event
            channel = self.session.channel
            self.write(wire.linger_notice(channel.uuid, channel.name, self.linger))

    def _subscribed(self, event: Event) -> bool:
        name = event.name
        if name in self.nixed or (not self.all_events and name not in self.event_names):
            return False
        if self.myevents_uuid is not None and event.unique_id != self.myevents_uuid:
            return False
        return not self.filters or self._passes_filters(event.get)

    def _passes_filters(self, lookup: Callable[[str], str | None]) -> bool:
        """Filters: any positive match sends, a ``-`` match vetoes; ``/`` means a regex."""
        send = False
        for header, wanted in self.filters:
            value = lookup(header)
            if value is None:
                continue
            positive = not wanted.startswith("-")
            pattern = wanted.lstrip("+- ")
            if send and positive:
                continue
            if pattern.startswith("/"):
                matched = re.search(pattern[1:], value) is not None
            else:
                matched = value.lower() == pattern.lower()
            if matched:
                if not positive:
                    return False
                send = True
        return send

    # ----------------------------------------------------------------- main loop
    async def run(self) -> None:
        """Serve commands until exit, a wrong password, hangup without linger, or EOF."""
        session_uuid = self.session.channel.uuid if self.session is not None else None
        self.switch.subscribe(self, session_uuid)
        serving = asyncio.get_running_loop().create_task(self._serve())
        watcher = None
        if self.session is not None:
            watcher = asyncio.get_running_loop().create_task(
                self._watch_hangup(self.session, serving)
            )
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        finally:
            self.switch.unsubscribe(self, session_uuid)
            if watcher is not None:
                watcher.cancel()
            for task in list(self.tasks):
                task.cancel()
            session_uuid = self.session.channel.uuid if self.session is not None else None
            self.write(wire.disconnect_notice(session_uuid))
            if self.session is not None:
                self.switch.socket_closed(self.session)
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()
            self.writer.close()

    async def _serve(self) -> None:
        try:
            if not self.outbound:
                self.write(wire.auth_request())
            while self.running:
                waiting_for_first = not self.authed or (
                    self.outbound and self.channel_data_sent_at is None
                )
                timeout = AUTH_TIMEOUT_S if waiting_for_first else None
                command = await asyncio.wait_for(wire.read_command(self.reader), timeout)
                self.commands.append((time.monotonic(), command.line))
                reply = await self.handle(command)
                if reply is not None:
                    self.write(wire.command_reply(reply))
        except (EslError, TimeoutError, ConnectionError, OSError):
            pass

    async def _watch_hangup(self, runtime: CallRuntime, serving: asyncio.Task[None]) -> None:
        """Outbound: on hangup close at once, or after the linger time (notice: :meth:`offer`)."""
        await runtime.down.wait()
        if self.linger is None:
            self.switch.unsubscribe(self, runtime.channel.uuid)
            serving.cancel()
            return
        if self.linger >= 0:
            # FreeSWITCH compares epoch seconds, so even "linger 0" outlives the hangup
            # sequence; wait for CHANNEL_DESTROY before closing.
            await asyncio.sleep(self.linger)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.done.wait(), 1.0)
            serving.cancel()

    # ----------------------------------------------------------------- commands
    async def handle(self, command: wire.Command) -> str | None:
        """Return the Reply-Text, or None when the reply was written another way."""
        line = command.line
        lower = line.lower()
        if lower.startswith(("exit", "...")):
            self.running = False
            return "+OK bye"
        if not self.authed:
            return self._auth(line)
        if lower.startswith("filter "):
            return self._filter(line[7:])
        if self.session is not None and lower.startswith("resume"):
            return "+OK"
        if self.session is not None:
            if lower.startswith("connect"):
                self._connect()
                return None
            if lower.startswith("getvar"):
                _, _, name = line.partition(" ")
                return self.session.channel.variables.get(name.strip(), "")
            if lower.startswith("myevents"):
                return self._myevents(lower)
        if lower.startswith("divert_events"):
            if self.session is None:
                return "-ERR not controlling a session."
            on = lower[13:].strip()
            if not on:
                return "-ERR missing value."
            return "+OK events diverted" if on == "on" else "+OK events not diverted"
        if lower.startswith("sendmsg"):
            return self._sendmsg(line[7:].strip(), command)
        if self.outbound and not self.full:
            return "-ERR command not found"
        return await self._full_command(line, lower, command)

    async def _full_command(self, line: str, lower: str, command: wire.Command) -> str | None:
        if lower.startswith("api "):
            name, _, args = line[4:].partition(" ")
            output = await self.api_handler(name, args, self)
            self.write(wire.api_response(output.encode("utf-8")))
            return None
        if lower.startswith("bgapi "):
            self._bgapi(line[6:], command)
            return None
        if lower.startswith("log"):
            level = line[4:].strip() or "debug"
            return f"+OK log level {level} [7]"
        if lower.startswith("linger"):
            return self._linger(line)
        if lower.startswith("nolinger"):
            if self.session is None:
                return "-ERR not controlling a session"
            self.linger = None
            return "+OK will not linger"
        if lower.startswith("nolog"):
            return "-ERR not loging"
        if lower.startswith("event"):
            return self._event(line)
        if lower.startswith("nixevent"):
            return self._nixevent(line)
        if lower.startswith("noevents"):
            if not self.events_on:
                return "-ERR not listening for events"
            self.events_on = False
            self.event_names.clear()
            self.all_events = False
            return "+OK no longer listening for events"
        return "-ERR command not found"

    def _auth(self, line: str) -> str:
        if line.lower().startswith("auth "):
            if line[5:] == self.password:
                self.authed = True
                return "+OK accepted"
            self.running = False
            return "-ERR invalid"
        return "-ERR command not found"

    def _filter(self, spec: str) -> str:
        header, _, value = spec.strip(" ").partition(" ")
        if header.lower() == "delete" and value:
            header, _, value = value.partition(" ")
            if header.lower() == "all":
                self.filters.clear()
            else:
                self.filters = [
                    (h, v)
                    for h, v in self.filters
                    if not (h.lower() == header.lower() and (not value or v == value))
                ]
            return f"+OK filter deleted. [{header}][{value}]"
        if value:
            if header.lower() == "add":
                header, _, value = value.partition(" ")
            self.filters.append((header, value))
            return f"+OK filter added. [{header}]=[{value}]"
        return "-ERR invalid syntax"

    def _connect(self) -> None:
        assert self.session is not None
        channel = self.session.channel
        headers = self.switch.common_headers("CHANNEL_DATA", "parse_command")
        headers.update(channel.profile_headers("Channel"))
        headers.update(channel.headers())
        headers["Content-Type"] = "command/reply"
        headers["Reply-Text"] = "+OK\n"
        headers["Socket-Mode"] = "async" if self.async_mode else "static"
        headers["Control"] = "full" if self.full else "single-channel"
        self.write(serialize_plain(Event(headers)))
        self.channel_data_sent_at = time.monotonic()

    def _myevents(self, lower: str) -> str:
        if self.myevents_uuid is not None:
            return "-ERR aready enabled."
        assert self.session is not None
        self.myevents_uuid = self.session.channel.uuid
        self.event_names |= MYEVENTS
        self.events_on = True
        if "json" in lower:
            self.format = "json"
        elif "xml" in lower:
            self.format = "xml"
        return "+OK Events Enabled"

    def _sendmsg(self, target: str, command: wire.Command) -> str:
        target = target or (command.header("session-id") or "")
        if self.session is not None and target == self.session.channel.uuid:
            target = ""
        runtime = self.session if not target else self.switch.calls.get(target)
        if runtime is None:
            return f"-ERR invalid session id [{target}]"
        call_command = (command.header("call-command") or "").lower()
        if call_command == "execute":
            arg = command.header("execute-app-arg") or ""
            if command.body is not None:
                arg = command.body.decode("utf-8", "replace")
            loops = int(command.header("loops") or "1")
            for _ in range(max(loops, 1)):
                runtime.apps.put_nowait(
                    QueuedApp(
                        app=(command.header("execute-app-name") or "").strip(),
                        arg=arg,
                        event_uuid=command.header("Event-UUID"),
                        received_at=time.monotonic(),
                    )
                )
            self.switch.start_worker(runtime)
        elif call_command == "hangup":
            cause = command.header("hangup-cause") or "NORMAL_CLEARING"
            self._spawn(self.switch.hangup(runtime, cause.upper(), disposition="send_bye"))
        return "+OK"

    def _spawn(self, work: Awaitable[None]) -> None:
        async def runner() -> None:
            await work

        task = asyncio.get_running_loop().create_task(runner())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _bgapi(self, text: str, command: wire.Command) -> None:
        """Acknowledge at once with the (client-chosen) Job-UUID; fire BACKGROUND_JOB later."""
        name, _, args = text.partition(" ")
        job_uuid = command.header("job-uuid") or str(uuid.uuid4())
        self.write(wire.bgapi_reply(job_uuid))

        async def job() -> None:
            output = await self.api_handler(name, args, self)
            headers = self.switch.common_headers("BACKGROUND_JOB", "api_exec")
            headers["Job-UUID"] = job_uuid
            if self.session is not None:
                headers["Job-Owner-UUID"] = self.session.channel.uuid
            headers["Job-Command"] = name
            if args:
                headers["Job-Command-Arg"] = args
            self.switch.fire(Event(headers, output or "Command returned no output!"))

        self._spawn(job())
        return None

    def _linger(self, line: str) -> str:
        if self.session is None:
            return "-ERR not controlling a session"
        rest = line[6:]
        if rest.startswith(" ") and rest[1:].strip():
            try:
                self.linger = int(rest[1:].strip())
            except ValueError:
                self.linger = 0
            return f"+OK will linger {self.linger} seconds"
        self.linger = -1
        return "+OK will linger"

    def _event(self, line: str) -> str:
        words = line.split(" ")[1:]
        keys = 0
        for index, word in enumerate(words):
            upper = word.upper()
            if index == 0 and word.lower() in _SERIALIZERS:
                self.format = word.lower()
                continue
            if upper == "ALL":
                self.all_events = True
                keys += 1
            elif upper and upper.replace("_", "").isalnum():
                self.event_names.add(upper)
                self.nixed.discard(upper)
                keys += 1
        if not keys:
            return "-ERR no keywords supplied"
        self.events_on = True
        if self.session is not None and self.myevents_uuid is None:
            # a full outbound socket may watch everything
            self.switch.unsubscribe(self, self.session.channel.uuid)
            self.switch.subscribe(self)
        return f"+OK event listener enabled {self.format}"

    def _nixevent(self, line: str) -> str:
        words = [w.upper() for w in line.split(" ")[1:] if w]
        if not words:
            return "-ERR no keywords supplied"
        for word in words:
            if word == "ALL":
                self.all_events = False
                self.event_names.clear()
            else:
                self.event_names.discard(word)
                self.nixed.add(word)
        self.events_on = True
        return "+OK events nixed"

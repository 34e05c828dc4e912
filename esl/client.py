"""Our asyncio Event Socket client: one class per connection, inbound or outbound.

Why our own (see ``esl/README.md``): the maintained asyncio library (genesis) pulls a web
stack and ignores ``-ERR`` during outbound setup; greenswitch needs gevent and decodes whole
frames; python-ESL is a blocking 2016 SWIG build. This client is the narrow interface the
controller uses: :class:`EslConnection` (commands, api, bgapi, sendmsg/execute, events),
:func:`connect_inbound` and :func:`serve_outbound`.

How replies are matched: mod_event_socket handles one command at a time per socket and answers
in order, so a FIFO of futures pairs every ``command/reply`` / ``api/response`` with its
command; events and log lines can arrive before the reply and are dispatched on their own.
Commands may be pipelined (several written before the first reply arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TypeVar

from esl.errors import AuthError, CommandError, ConnectionClosed, EslError, ProtocolError
from esl.event import Event, event_from_encoded, parse_json, parse_plain
from esl.wire import STREAM_LIMIT, Frame, encode_command, read_frame

log = logging.getLogger(__name__)

T = TypeVar("T")

EventHandler = Callable[[Event], None]
DEFAULT_TIMEOUT = 10.0


class EslConnection:
    """One ESL socket after the handshake: send commands, receive replies and events."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        self.peer = peer
        self._reader = reader
        self._writer = writer
        self._pending: deque[tuple[str, asyncio.Future[Frame]]] = deque()
        self._jobs: dict[str, asyncio.Future[Event]] = {}
        self._executions: dict[str, asyncio.Future[Event]] = {}
        self._handlers: list[EventHandler] = []
        self._task: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.linger_notice: Frame | None = None
        self.disconnect_notice: Frame | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the reader loop; events go to the handlers added with :meth:`on_event`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read_loop())

    def on_event(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    async def close(self) -> None:
        """Close the socket and fail whatever still waits for a reply."""
        if not self._writer.is_closing():
            self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._finish(ConnectionClosed(f"connection to {self.peer} closed"))

    # ----------------------------------------------------------------- sending
    def send_nowait(
        self,
        line: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: str | bytes | None = None,
    ) -> asyncio.Future[Frame]:
        """Write a command now; the future gets its reply frame. Lets callers pipeline."""
        if self.closed.done():
            raise ConnectionClosed(f"connection to {self.peer} is closed")
        data = encode_command(line, headers, body)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending.append((line.split(" ", 1)[0], future))
        self._writer.write(data)
        return future

    async def send(
        self,
        line: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: str | bytes | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Frame:
        """Send a command and wait for its reply frame (``-ERR`` is *not* raised here)."""
        future = self.send_nowait(line, headers, body)
        return await _wait(future, timeout, f"reply to {line.split(' ', 1)[0]!r}")

    async def command(
        self,
        line: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: str | bytes | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> str:
        """Send a command; return its Reply-Text, raise :class:`CommandError` on ``-ERR``."""
        frame = await self.send(line, headers, body, timeout=timeout)
        return check_reply(line, frame)

    async def api(self, command: str, *, timeout: float = DEFAULT_TIMEOUT) -> str:
        """``api`` (blocking on the FreeSWITCH side): the command's output text."""
        frame = await self.send(f"api {command}", timeout=timeout)
        if frame.content_type != "api/response":
            raise CommandError(f"api {command.split(' ', 1)[0]}", frame.reply_text)
        return frame.body.decode("utf-8", "replace")

    async def bgapi(
        self, command: str, *, job_uuid: str | None = None, timeout: float = 60.0
    ) -> Event:
        """``bgapi`` with a Job-UUID we choose; returns the BACKGROUND_JOB event (output in body).

        Choosing the UUID ourselves registers the waiter before the command is written, so a
        fast job can never complete before we listen for it. The caller must have subscribed to
        BACKGROUND_JOB events on this connection.
        """
        job = job_uuid or str(uuid.uuid4())
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._jobs[job] = future
        try:
            reply = await self.send(f"bgapi {command}", {"Job-UUID": job}, timeout=timeout)
            check_reply("bgapi " + command.split(" ", 1)[0], reply)
            return await _wait(future, timeout, f"BACKGROUND_JOB {job}")
        finally:
            self._jobs.pop(job, None)

    def sendmsg_nowait(
        self,
        app: str,
        arg: str = "",
        *,
        uuid_: str | None = None,
        event_uuid: str | None = None,
        event_lock: bool = False,
    ) -> asyncio.Future[Frame]:
        """Queue ``sendmsg`` ``execute``; a long or multi-line argument goes in the body."""
        headers: list[tuple[str, str]] = [
            ("call-command", "execute"),
            ("execute-app-name", app),
        ]
        body: str | None = None
        if "\n" in arg or "\r" in arg or len(arg) > 2048:
            headers.append(("content-type", "text/plain"))
            body = arg
        elif arg:
            headers.append(("execute-app-arg", arg))
        if event_lock:
            headers.append(("event-lock", "true"))
        if event_uuid:
            headers.append(("Event-UUID", event_uuid))
        line = f"sendmsg {uuid_}" if uuid_ else "sendmsg"
        return self.send_nowait(line, headers, body)

    async def execute(
        self,
        app: str,
        arg: str = "",
        *,
        uuid_: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Event:
        """Run an application and wait for its CHANNEL_EXECUTE_COMPLETE (matched by Event-UUID).

        Requires that this connection receives the channel's events (``myevents`` or ``event``).
        """
        event_uuid = str(uuid.uuid4())
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._executions[event_uuid] = future
        try:
            reply = await _wait(
                self.sendmsg_nowait(app, arg, uuid_=uuid_, event_uuid=event_uuid),
                timeout,
                f"reply to sendmsg {app}",
            )
            check_reply(f"sendmsg {app}", reply)
            return await _wait(future, timeout, f"completion of {app}")
        finally:
            self._executions.pop(event_uuid, None)

    def hangup_nowait(self, cause: str, *, uuid_: str | None = None) -> asyncio.Future[Frame]:
        line = f"sendmsg {uuid_}" if uuid_ else "sendmsg"
        return self.send_nowait(line, [("call-command", "hangup"), ("hangup-cause", cause)])

    # ----------------------------------------------------------------- receiving
    async def _read_loop(self) -> None:
        error: EslError = ConnectionClosed(f"{self.peer} closed the connection")
        try:
            while True:
                frame = await read_frame(self._reader)
                self._dispatch(frame)
        except EslError as exc:
            error = exc
        except (OSError, ConnectionError) as exc:
            error = ConnectionClosed(f"{self.peer}: {exc}")
        finally:
            self._finish(error)

    def _dispatch(self, frame: Frame) -> None:
        content_type = frame.content_type
        if content_type == "text/event-json":
            self._deliver(parse_json(frame.body))
        elif content_type == "text/event-plain":
            self._deliver(parse_plain(frame.body))
        elif content_type in ("command/reply", "api/response"):
            self._resolve_reply(frame)
        elif content_type == "text/disconnect-notice":
            if frame.header("Content-Disposition") == "linger":
                self.linger_notice = frame
            else:
                self.disconnect_notice = frame
        elif content_type == "text/rude-rejection":
            raise AuthError(f"{self.peer} refused this address (ACL)")
        elif content_type not in ("log/data", "auth/request"):
            log.debug("ignoring frame of type %r from %s", content_type, self.peer)

    def _resolve_reply(self, frame: Frame) -> None:
        if not self._pending:
            raise ProtocolError(f"{self.peer} sent a reply nobody asked for")
        _, future = self._pending.popleft()
        if not future.done():
            future.set_result(frame)

    def _deliver(self, event: Event) -> None:
        name = event.name
        if name == "BACKGROUND_JOB":
            job = self._jobs.get(event.get("Job-UUID") or "")
            if job is not None and not job.done():
                job.set_result(event)
        elif name == "CHANNEL_EXECUTE_COMPLETE":
            execution = self._executions.get(event.get("Application-UUID") or "")
            if execution is not None and not execution.done():
                execution.set_result(event)
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:  # one bad handler must not stop the connection
                log.exception("event handler failed on %s from %s", name, self.peer)

    def _finish(self, error: EslError) -> None:
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        for waiters in (self._jobs, self._executions):
            for waiter in waiters.values():
                if not waiter.done():
                    waiter.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(None)
        if not self._writer.is_closing():
            self._writer.close()


def check_reply(command: str, frame: Frame) -> str:
    """Return the Reply-Text, or raise :class:`CommandError` for ``-ERR``."""
    text = frame.reply_text
    if text.startswith("-ERR"):
        raise CommandError(command.split(" ", 1)[0], text)
    return text


async def _wait(future: asyncio.Future[T], timeout: float, what: str) -> T:
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout)
    except TimeoutError as exc:
        raise EslError(f"timed out after {timeout:g}s waiting for {what}") from exc


async def connect_inbound(
    host: str, port: int, password: str, *, timeout: float = 5.0
) -> EslConnection:
    """Open an inbound connection and authenticate. Errors never contain the password."""
    if "\n" in password or "\r" in password:
        raise AuthError("the ESL password contains a line break")
    peer = f"{host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=STREAM_LIMIT), timeout
        )
    except (OSError, TimeoutError) as exc:
        raise ConnectionClosed(f"cannot reach FreeSWITCH ESL at {peer}: {exc}") from exc
    try:
        greeting = await asyncio.wait_for(read_frame(reader), timeout)
        if greeting.content_type == "text/rude-rejection":
            raise AuthError(f"FreeSWITCH at {peer} refused this address (event_socket ACL)")
        if greeting.content_type != "auth/request":
            raise ProtocolError(f"{peer} greeted with {greeting.content_type!r}, not auth/request")
        writer.write(encode_command(f"auth {password}"))
        reply = await asyncio.wait_for(read_frame(reader), timeout)
        if reply.reply_text != "+OK accepted":
            raise AuthError(f"FreeSWITCH at {peer} refused the ESL password")
    except TimeoutError as exc:
        writer.close()
        raise ConnectionClosed(
            f"{peer} did not complete the ESL handshake in {timeout:g}s"
        ) from exc
    except EslError:
        writer.close()
        raise
    connection = EslConnection(reader, writer, peer)
    connection.start()
    return connection


class OutboundSession:
    """A call FreeSWITCH handed us with the ``socket`` application (outbound mode)."""

    def __init__(self, connection: EslConnection) -> None:
        self.connection = connection
        self.channel_data = Event()

    @property
    def uuid(self) -> str:
        return self.channel_data.unique_id

    @property
    def is_full(self) -> bool:
        """``full`` sockets may use api/bgapi/linger/event; the others get -ERR for those."""
        return self.channel_data.get("Control") == "full"

    @property
    def is_async(self) -> bool:
        return self.channel_data.get("Socket-Mode") == "async"

    async def connect(self, *, timeout: float = DEFAULT_TIMEOUT) -> Event:
        """Send ``connect``; the reply is the flat, URL-encoded CHANNEL_DATA block."""
        frame = await self.connection.send("connect", timeout=timeout)
        if frame.header("Event-Name") is None:
            raise ProtocolError(f"{self.connection.peer} answered connect without CHANNEL_DATA")
        self.channel_data = event_from_encoded(frame.headers)
        return self.channel_data


async def serve_outbound(
    handler: Callable[[OutboundSession], Awaitable[None]],
    host: str,
    port: int,
) -> asyncio.Server:
    """Listen for FreeSWITCH's outbound sockets; each call runs ``handler`` on its own.

    One failing call is logged and closed; it never stops the server or other calls.
    """

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_address = writer.get_extra_info("peername")
        peer = f"{peer_address[0]}:{peer_address[1]}" if peer_address else "freeswitch"
        connection = EslConnection(reader, writer, peer)
        connection.start()
        try:
            await handler(OutboundSession(connection))
        except EslError as exc:
            log.warning("call from %s ended with an ESL error: %s", peer, exc)
        except Exception:
            log.exception("call handler failed for %s", peer)
        finally:
            await connection.close()

    return await asyncio.start_server(on_connect, host, port, limit=STREAM_LIMIT)

"""The stand-in FreeSWITCH as one object: an inbound ESL server plus outbound call placement.

Used by the tests, the bench and (later) the lab. Bind port 0 and read :attr:`port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import deque
from dataclasses import dataclass

from esl import wire
from esl.wire import STREAM_LIMIT
from lab.esl_standin.api import StandinApi
from lab.esl_standin.listener import Listener
from lab.esl_standin.scenarios import MetaBehaviour, UicCall, play_uic
from lab.esl_standin.switch import CallRuntime, Switch


@dataclass
class UicHandle:
    """One placed user-initiated call: its channel, its socket listener, and when it ends."""

    runtime: CallRuntime
    listener: Listener
    listener_task: asyncio.Task[None]
    scenario_task: asyncio.Task[None]

    async def finished(self, timeout: float = 10.0) -> None:
        """Wait until the channel is destroyed and the socket closed."""
        await asyncio.wait_for(self.runtime.done.wait(), timeout)
        await asyncio.wait_for(asyncio.shield(self.listener_task), timeout)


class FreeSwitchStandin:
    """mod_event_socket look-alike backed by a small simulated switch core."""

    def __init__(
        self,
        *,
        password: str = "ClueCon",
        meta: MetaBehaviour | None = None,
        allowed_networks: list[str] | None = None,
    ) -> None:
        self.switch = Switch()
        self.meta = meta or MetaBehaviour()
        self.api = StandinApi(self.switch, self.meta)
        self._password = password
        self._allowed = [ipaddress.ip_network(n) for n in (allowed_networks or [])]
        self._server: asyncio.Server | None = None
        self.listeners: deque[Listener] = deque(maxlen=512)  # recent ones, for inspection
        self.active: set[Listener] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, host, port, limit=STREAM_LIMIT)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Shut down like a FreeSWITCH restart: every ESL connection drops."""
        if self._server is not None:
            self._server.close()
        for listener in list(self.active):
            listener.writer.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _admitted(self, writer: asyncio.StreamWriter) -> bool:
        if not self._allowed:
            return True
        peer = writer.get_extra_info("peername")
        address = ipaddress.ip_address(peer[0])
        return any(address in network for network in self._allowed)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admitted(writer):
            writer.write(wire.rude_rejection())
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        listener = Listener(
            self.switch, reader, writer, password=self._password, api=self.api
        )
        self.listeners.append(listener)
        task = asyncio.current_task()
        if task is not None:
            self._track(task)
        await self._run(listener)

    async def _run(self, listener: Listener) -> None:
        self.active.add(listener)
        try:
            await listener.run()
        finally:
            self.active.discard(listener)

    async def place_uic(
        self,
        call: UicCall,
        controller: tuple[str, int],
        *,
        full: bool = True,
        async_mode: bool = True,
    ) -> UicHandle:
        """A call arrives from the edge; the dialplan's ``socket`` app dials the controller."""
        runtime = self.switch.add_call(call.channel())
        try:
            reader, writer = await asyncio.open_connection(*controller, limit=STREAM_LIMIT)
        except OSError:
            # socket app failed: the dialplan falls through and the call is torn down
            await self.switch.hangup(runtime, "DESTINATION_OUT_OF_ORDER", disposition="send_bye")
            raise
        listener = Listener(
            self.switch,
            reader,
            writer,
            password="",
            api=self.api,
            session=runtime,
            full=full,
            async_mode=async_mode,
        )
        self.listeners.append(listener)
        runtime.controlled = async_mode  # mod_event_socket's socket app parks the channel itself
        self.switch.start_worker(runtime)
        loop = asyncio.get_running_loop()
        listener_task = self._track(loop.create_task(self._run(listener)))
        scenario_task = self._track(loop.create_task(play_uic(self.switch, runtime, call)))
        return UicHandle(runtime, listener, listener_task, scenario_task)

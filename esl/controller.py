"""The long-running controller: UIC socket server + inbound connection kept alive.

- Outbound server: FreeSWITCH's dialplan hands each WhatsApp call to us; :class:`UicHandler`
  runs it. Each call is its own task: one misbehaving call is logged and closed, nothing else.
- Inbound connection: subscribes to CHANNEL_HANGUP_COMPLETE and BACKGROUND_JOB, writes the CDR
  of every WhatsApp call (including those whose socket died), and carries BIC ``originate``.
  It reconnects with capped exponential backoff; the password never appears in logs.
- Heartbeat: every third of ``node_lost_after_s`` the controller writes its node's row in the
  CDR database (alive, and whether FreeSWITCH's ESL is connected); with a database shared by
  several media nodes it then closes the active calls of any other node whose heartbeat
  stopped (state ``lost``): a node that died whole cannot write its calls' end itself. A
  heartbeat the database took is the sign it answers again: the CDR writes spooled while it
  was unreachable are replayed then (esl/cdr_spool.py), at start too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3

from esl.backoff import Backoff
from esl.bic import BicRequest, BicResult, originate_command, place_bic, refused_result
from esl.cdr import CdrStore, is_whatsapp_call, record_from_hangup
from esl.cdr_spool import CdrSpool
from esl.client import EslConnection, connect_inbound, serve_outbound
from esl.database import DatabaseRefused, DatabaseUnreachable
from esl.errors import ConnectionClosed, EslError
from esl.event import Event
from esl.metrics import LatencySamples
from esl.preflight import Preflight
from esl.preflight_setup import preflight_for
from esl.prometheus import ControllerMetrics, MeteredCdrStore, MetricsEndpoint, metered_uic
from esl.uic import UicHandler
from siteconfig.controller import ControllerSettings
from siteconfig.database_url import PostgresUrl
from siteconfig.listen_address import parse_listen_address

log = logging.getLogger(__name__)

INBOUND_EVENTS = "event json CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
MISSED_DIAGNOSIS = (
    "controller-missed-hangup: the call ended while the controller was not connected to "
    "FreeSWITCH; end time and cause are in FreeSWITCH's own CDR"
)


class Controller:
    def __init__(self, settings: ControllerSettings, store: CdrStore | None = None) -> None:
        self.settings = settings
        self.metrics = ControllerMetrics()
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.store = store or self._open_store()
        if self.store.node is None:
            self.store.node = settings.node  # a store handed in: this node's records and calls
        self.metrics.count_permission_requests(settings.cdr_db)
        self.latency = LatencySamples()
        self.uic = UicHandler(settings, self.store, self.latency)
        self.inbound: EslConnection | None = None
        self.inbound_ready = asyncio.Event()
        self.inbound_connects = 0
        self._server: asyncio.Server | None = None
        self._inbound_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat_failing = False
        self._heartbeat_refused = False
        self._replay_refused = False
        self._reconcile_pending = False
        self._stopping = False
        self.listen_port = settings.listen.port
        self.preflight: Preflight | None = None
        self._exits = contextlib.AsyncExitStack()

    def _open_store(self) -> MeteredCdrStore:
        """This node's CDR store; with PostgreSQL, with the spool for its outages."""
        settings = self.settings
        if not isinstance(settings.cdr_db, PostgresUrl):
            return MeteredCdrStore(settings.cdr_db, self.metrics, node=settings.node)
        spool = CdrSpool(settings.cdr_spool, max_records=settings.cdr_spool_max_records)
        try:
            return MeteredCdrStore(settings.cdr_db, self.metrics, node=settings.node,
                                   spool=spool)
        except BaseException:
            spool.close()
            raise

    async def start(self, *, inbound: bool = True) -> None:
        listen = self.settings.listen
        self.preflight = await self._exits.enter_async_context(
            preflight_for(self.settings, self.store, on_verdict=self.metrics.preflight_verdict))
        self._server = await serve_outbound(metered_uic(self.uic, self.metrics), listen.host,
                                            listen.port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        log.info("listening for FreeSWITCH outbound sockets on %s:%s", listen.host,
                 self.listen_port)
        if self.settings.metrics_listen is not None:
            self.metrics_endpoint = self.metrics.serve(
                *parse_listen_address(self.settings.metrics_listen, any_port=True))
        if inbound:
            self._inbound_task = asyncio.get_running_loop().create_task(self._keep_inbound())
        self._heartbeat_task = asyncio.get_running_loop().create_task(self._keep_heartbeat())

    async def stop(self) -> None:
        self._stopping = True
        if self._heartbeat_task is not None:
            await cancel_for_sure(self._heartbeat_task)
        if self._inbound_task is not None:
            await cancel_for_sure(self._inbound_task)
        if self.inbound is not None:
            await self.inbound.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        await self._exits.aclose()
        self.preflight = None

    async def _keep_inbound(self) -> None:
        backoff = Backoff(self.settings.reconnect.initial_s, self.settings.reconnect.max_s)
        fs = self.settings.freeswitch
        while not self._stopping:
            try:
                connection = await connect_inbound(
                    fs.host, fs.port, fs.password.get_secret_value(),
                    timeout=fs.connect_timeout_s,
                )
                connection.on_event(self._on_inbound_event)
                await connection.command(INBOUND_EVENTS)
                await self._reconcile(connection)
                self.inbound = connection
                self.inbound_connects += 1
                self.inbound_ready.set()
                self.metrics.esl_up()
                self.heartbeat()
                backoff.reset()
                log.info("inbound ESL connection to %s:%s up", fs.host, fs.port)
                await connection.closed
                log.warning("inbound ESL connection to %s:%s lost", fs.host, fs.port)
            except EslError as exc:
                log.warning("inbound ESL connection to %s:%s: %s", fs.host, fs.port, exc)
                self.metrics.esl_connect_failures.inc()
            finally:
                self.inbound_ready.clear()
                self.metrics.esl_down()
                if not self._stopping:
                    self.heartbeat()
            await asyncio.sleep(backoff.next_delay())

    @property
    def heartbeat_interval_s(self) -> float:
        return self.settings.node_lost_after_s / 3

    async def _keep_heartbeat(self) -> None:
        while not self._stopping:
            self.heartbeat()
            if not self._heartbeat_failing:  # the database answers: what waited for it
                await self.replay_spool()
                if self._reconcile_pending and self.inbound is not None:
                    with contextlib.suppress(EslError):  # gone: its reconnect reconciles
                        await self._reconcile(self.inbound)
            if self.store.shared:
                self.close_lost_calls()
            await asyncio.sleep(self.heartbeat_interval_s)

    async def replay_spool(self) -> None:
        """Hand the CDR writes spooled while the database was unreachable to it, in order, a
        batch per transaction with the event loop free between (calls go on meanwhile; their
        writes join the spool's end until it is empty)."""
        while self.store.spooled:
            try:
                if not self.store.replay_spool():
                    return
            except DatabaseUnreachable:
                return  # gone again: the heartbeat says so, the next one tries again
            except sqlite3.Error as exc:  # refused, not unreachable: a bug; the write is kept
                if not self._replay_refused:
                    log.error("node %s: the CDR database refused a spooled CDR write (kept in "
                              "the spool, tried again each heartbeat): %s", self.settings.node,
                              exc)
                self._replay_refused = True
                return
            self._replay_refused = False
            await asyncio.sleep(0)

    def heartbeat(self) -> None:
        """Write this node's heartbeat; a database fault is logged (once until it recovers)."""
        try:
            self.store.heartbeat(esl_up=self.inbound_ready.is_set())
        except sqlite3.Error as exc:  # PostgreSQL faults too (esl.database.DatabaseError)
            self.metrics.heartbeat_failures.inc()
            refused = isinstance(exc, DatabaseRefused)
            if not self._heartbeat_failing or (refused and not self._heartbeat_refused):
                # refused: it answers, and not to this configuration; the calls go on (their
                # CDR writes kept in the spool) until the server or [esl] cdr_db is put right
                log.log(logging.ERROR if refused else logging.WARNING,
                        "node %s: cannot write the heartbeat to the CDR database %s: %s%s",
                        self.settings.node, self.settings.cdr_db, exc,
                        " (refused: CDR writes stay in the spool until the server or [esl] "
                        "cdr_db is put right; wa-esl restarted with it replays them)"
                        if refused else "")
            self._heartbeat_failing = True
            self._heartbeat_refused = refused
            return
        if self._heartbeat_failing:
            log.info("node %s: heartbeat written again", self.settings.node)
        self._heartbeat_failing = False
        self._heartbeat_refused = False

    def close_lost_calls(self) -> None:
        """Close the active calls of media nodes whose heartbeat stopped (state 'lost')."""
        try:
            closed = self.store.close_lost_calls(self.settings.node_lost_after_s)
        except sqlite3.Error as exc:
            log.warning("node %s: cannot look for lost nodes' calls: %s", self.settings.node, exc)
            return
        self.metrics.calls_closed_lost.inc(len(closed))
        for record in closed:
            log.warning("call %s (wacid %s) of media node %s closed as lost: %s",
                        record.call_uuid, record.wacid or "-", record.node, record.diagnosis)

    async def _reconcile(self, connection: EslConnection) -> None:
        """Close the CDRs of calls that ended while no connection of ours could see it.

        Runs after the subscription is in place, so a call that ends now is seen by the event
        and not marked: ``uuid_exists`` answers for the calls that were already gone.
        """
        missed = 0
        self._reconcile_pending = False
        try:
            for call_uuid in self.store.active_calls():
                reply = await connection.api(f"uuid_exists {call_uuid}")
                if reply.strip() == "false":
                    self.store.mark_missed(call_uuid, MISSED_DIAGNOSIS)
                    missed += 1
        except DatabaseUnreachable as exc:
            # the calls that ended while we were disconnected stay open until it answers
            self._reconcile_pending = True
            log.warning("node %s: cannot look for calls that ended while the controller was "
                        "disconnected (%s); looked for once the CDR database answers",
                        self.settings.node, exc)
        if missed:
            log.warning("%d call(s) ended while the controller was disconnected; their CDRs are "
                        "marked 'missed' (end time and cause: see FreeSWITCH's own CDRs)", missed)

    def _on_inbound_event(self, event: Event) -> None:
        if event.name == "CHANNEL_HANGUP_COMPLETE" and is_whatsapp_call(event):
            self.store.upsert(record_from_hangup(event))
            if event.variable("wa_direction") == "bic":
                self.metrics.bic_hangup(event)

    async def originate(self, request: BicRequest, *, ready_timeout: float = 10.0,
                        force: bool = False) -> BicResult:
        """Place a BIC over the inbound connection (waits briefly for it to be up).

        Pre-flight first (``force`` skips it): refused there, no connection is needed and
        nothing reaches FreeSWITCH.
        """
        originate_command(request, self.settings, "check")  # BicRequestError before anything
        preflight = None if force else self.preflight
        verdict = None
        if preflight is not None:
            verdict = await preflight.check(request.business_number, request.user)
            if not verdict.allowed:
                return refused_result(request, verdict, self.store)
        try:
            await asyncio.wait_for(self.inbound_ready.wait(), ready_timeout)
        except TimeoutError as exc:
            raise ConnectionClosed("no inbound ESL connection to FreeSWITCH") from exc
        assert self.inbound is not None
        result = await place_bic(self.inbound, request, self.settings, self.store,
                                 checked=verdict)
        self.metrics.bic_result(result.call_uuid, result.answered)
        return result


async def cancel_for_sure(task: asyncio.Task[None]) -> None:
    """Cancel `task` until it has ended.

    Python 3.11's asyncio.wait_for swallows a cancellation that arrives as its inner await
    completes (fixed in 3.12, gh-86296); under load the reconnect loop then carried on and
    stop() waited for it forever. One more cancel each half second ends it.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()

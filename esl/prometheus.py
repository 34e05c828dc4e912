"""The controller's Prometheus metrics, and the HTTP endpoint that serves them.

Not to be confused with esl/metrics.py (latency samples the benchmark reads). One registry per
controller, so two controllers in one process (tests) never share counters. Labels take values
from closed sets only: ``direction`` is ``uic`` or ``bic`` and ``outcome`` / ``diagnosis`` come
from esl/call_outcome.py. Never a number, a call id or a payload: each distinct label value is
a time series Prometheus keeps, and numbers are personal data.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from esl.call_outcome import ANSWERED, outcome_code
from esl.cdr import REPLAY_BATCH, CallRecord, CdrStore, WriteOutcome
from esl.cdr_spool import CdrSpool
from esl.client import OutboundSession
from esl.database import Location
from esl.event import Event
from esl.permission_requests import permission_counts
from esl.preflight import REASONS, Verdict

log = logging.getLogger(__name__)

SETUP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""CHANNEL_DATA to answer is a few milliseconds when healthy; Meta gives up after seconds."""
MEDIA_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PENDING_BIC_LIMIT = 10_000
"""BIC outcomes seen on the hangup event but not yet claimed by their originate (bounded)."""


class MetricsListenError(OSError):
    """The metrics address cannot be bound (taken, not local): the message names it."""


class ControllerMetrics:
    """Every metric ``wa-esl`` exports, with one method per thing that happens."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge(
            "wasip_esl_calls_active", "WhatsApp calls in progress on FreeSWITCH.",
            ["direction"], registry=r)
        self.calls = Counter(
            "wasip_esl_calls", "Finished call setups: answered, or the diagnosis code why not.",
            ["direction", "outcome"], registry=r)
        self.setup_latency = Histogram(
            "wasip_esl_uic_setup_seconds", "User-initiated calls: CHANNEL_DATA received to "
            "CHANNEL_ANSWER received.", registry=r, buckets=SETUP_BUCKETS)
        self.first_media = Histogram(
            "wasip_esl_first_media_seconds", "Answer to the first media FreeSWITCH sends "
            "(the silence playback Meta waits for).", ["direction"], registry=r,
            buckets=MEDIA_BUCKETS)
        self.media_timeouts = Counter(
            "wasip_esl_media_timeouts", "Calls FreeSWITCH ended for lack of media.",
            ["direction"], registry=r)
        self.originates = Counter(
            "wasip_esl_originate", "Business-initiated originate results by diagnosis code.",
            ["diagnosis"], registry=r)
        self.cdr_writes = Counter(
            "wasip_esl_cdr_writes", "CDR rows written (inserted or merged).", registry=r)
        self.cdr_write_failures = Counter(
            "wasip_esl_cdr_write_failures", "CDR writes the database did not take when made "
            "(then spooled, dropped, or an error raised).", registry=r)
        self.cdr_spooled = Counter(
            "wasip_esl_cdr_spooled", "CDR writes kept in the node's spool while the CDR "
            "database was unreachable ([esl] cdr_spool).", registry=r)
        self.cdr_replayed = Counter(
            "wasip_esl_cdr_replayed", "Spooled CDR writes the database took once it answered "
            "again (in order).", registry=r)
        self.cdr_spool_dropped = Counter(
            "wasip_esl_cdr_spool_dropped", "CDR writes lost: the database unreachable and the "
            "spool full (cdr_spool_max_records) or not writable.", registry=r)
        self.cdr_spool_records = Gauge(
            "wasip_esl_cdr_spool_records", "CDR writes waiting in the spool for the database.",
            registry=r)
        self.heartbeat_failures = Counter(
            "wasip_esl_heartbeat_failures", "Heartbeats of this node the CDR database did not "
            "take (other nodes close this node's calls as lost if it lasts).", registry=r)
        self.calls_closed_lost = Counter(
            "wasip_esl_calls_closed_lost", "Active calls of another media node this controller "
            "closed as 'lost' (that node's heartbeat stopped).", registry=r)
        self.esl_connected = Gauge(
            "wasip_esl_connected", "1 while the inbound Event Socket connection is up.",
            registry=r)
        self.esl_reconnects = Counter(
            "wasip_esl_reconnects", "Inbound Event Socket connections made after the first.",
            registry=r)
        self.esl_connect_failures = Counter(
            "wasip_esl_connect_failures", "Inbound Event Socket connection attempts that failed.",
            registry=r)
        self.preflight_checks = Counter(
            "wasip_esl_preflight_checks", "Call-permission pre-flight checks before a "
            "business-initiated call, by result (allowed, refused).", ["result"], registry=r)
        self.preflight_refusals = Counter(
            "wasip_esl_preflight_refusals", "Business-initiated calls refused in pre-flight "
            "(nothing sent to Meta), by reason.", ["reason"], registry=r)
        self.preflight_graph_lookups = Counter(
            "wasip_esl_preflight_graph_lookups", "Pre-flight checks decided on Graph's "
            "call_permissions answer (fresh or cached; the rest on a stored permission).",
            registry=r)
        for reason in REASONS:
            self.preflight_refusals.labels(reason)
        for result in ("allowed", "refused"):
            self.preflight_checks.labels(result)
        for direction in ("uic", "bic"):  # exported (as 0) from the start, not on first use
            self.calls_active.labels(direction)
            self.media_timeouts.labels(direction)
            self.first_media.labels(direction)
        self._connects = 0
        self._active_bic: set[str] = set()
        self._ended_bic: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # the HTTP thread only reads; this guards our own sets

    # ---- Event Socket -----------------------------------------------------------------

    def esl_up(self) -> None:
        self._connects += 1
        if self._connects > 1:
            self.esl_reconnects.inc()
        self.esl_connected.set(1)

    def esl_down(self) -> None:
        self.esl_connected.set(0)

    # ---- calls ------------------------------------------------------------------------

    def uic_ended(self, outcome: str, *, answered: bool) -> None:
        self.calls.labels("uic", outcome).inc()
        if answered:
            self.calls_active.labels("uic").dec()

    def bic_hangup(self, event: Event) -> None:
        """A BIC leg ended (seen on the inbound connection, whoever originated it: this
        controller or ``wa-esl originate``): counted with its outcome. An answered leg of ours
        leaves the active set; a refused one waits for its originate to claim the diagnosis
        (FreeSWITCH sends the hangup before the job's result)."""
        call_uuid = event.unique_id
        outcome = outcome_code(event)
        self.calls.labels("bic", outcome).inc()
        with self._lock:
            if call_uuid in self._active_bic:
                self._active_bic.discard(call_uuid)
                self.calls_active.labels("bic").dec()
                return
            self._ended_bic[call_uuid] = outcome
            while len(self._ended_bic) > PENDING_BIC_LIMIT:
                self._ended_bic.popitem(last=False)

    def bic_result(self, call_uuid: str, answered: bool) -> None:
        """This controller's originate finished: its result by diagnosis code."""
        with self._lock:
            ended = self._ended_bic.pop(call_uuid, None)
            if answered:
                outcome = ANSWERED
                if ended is None:
                    self._active_bic.add(call_uuid)
                    self.calls_active.labels("bic").inc()
            else:
                outcome = ended if ended not in (None, ANSWERED) else "not_answered"
        self.originates.labels(outcome).inc()

    def preflight_verdict(self, verdict: Verdict) -> None:
        """One pre-flight decision (the reason is from the closed set REASONS)."""
        self.preflight_checks.labels("allowed" if verdict.allowed else "refused").inc()
        if not verdict.allowed:
            self.preflight_refusals.labels(verdict.reason if verdict.reason in REASONS
                                           else "graph_unavailable").inc()
        if verdict.graph_asked:
            self.preflight_graph_lookups.inc()

    def count_permission_requests(self, database: Location) -> None:
        """Export the permission requests sent and Meta's replies stored in ``database``.

        Read at each scrape: ``provision permission request`` records what it sent there and
        the webhook receiver the replies, both other processes (esl/permission_requests.py).
        """
        self.registry.register(PermissionRequestCollector(database))

    def cdr_written(self, record: CallRecord, outcome: WriteOutcome, spooled: int) -> None:
        """One CDR write and what became of it; ``spooled``: writes in the spool now."""
        if outcome == "written":
            self.cdr_writes.inc()
        else:
            self.cdr_write_failures.inc()
            (self.cdr_spooled if outcome == "spooled" else self.cdr_spool_dropped).inc()
        self.cdr_spool_records.set(spooled)
        self._call_recorded(record)

    def cdr_replayed_writes(self, count: int, spooled: int) -> None:
        self.cdr_replayed.inc(count)
        self.cdr_writes.inc(count)
        self.cdr_spool_records.set(spooled)

    def _call_recorded(self, record: CallRecord) -> None:
        """The call's own metrics, the same whether its CDR reached the database now or not."""
        if record.state != "ended" or record.direction not in ("uic", "bic"):
            return
        if record.media_timeout:
            self.media_timeouts.labels(record.direction).inc()
        if record.first_media_ms is not None:
            self.first_media.labels(record.direction).observe(record.first_media_ms / 1000)

    # ---- the endpoint -----------------------------------------------------------------

    def serve(self, host: str, port: int) -> MetricsEndpoint:
        """Serve ``/metrics`` on host:port from a thread; MetricsListenError if it cannot."""
        return serve_registry(self.registry, host, port)


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
    """Serve one registry's ``/metrics`` on host:port from a thread (controller, webhook)."""
    try:
        server, thread = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise MetricsListenError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    endpoint = MetricsEndpoint(server, thread)
    log.info("Prometheus metrics on http://%s:%s/metrics", host, endpoint.port)
    return endpoint


class MetricsEndpoint:
    """The running HTTP endpoint (prometheus_client's WSGI server in a daemon thread)."""

    def __init__(self, server: Any, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class PermissionRequestCollector(Collector):
    """Counters read from the CDR database when Prometheus scrapes (totals since the file
    was made, so they survive restarts of every process that writes them)."""

    def __init__(self, database: Location) -> None:
        self.database = database
        self._warned = False

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            sent, replies = permission_counts(self.database)
        except sqlite3.Error as exc:  # absent this scrape (never a made-up 0); logged once
            if not self._warned:
                log.warning("metrics: cannot read permission requests from %s: %s",
                            self.database, exc)
                self._warned = True
            return
        requests = CounterMetricFamily(
            "wasip_esl_permission_requests_sent", "Call permission requests sent to users "
            "(provision permission request), as recorded in the CDR database.")
        requests.add_metric([], sent)
        answered = CounterMetricFamily(
            "wasip_esl_permission_replies_received", "Meta's call_permission_reply webhooks "
            "stored (each message once, retries not counted), from the CDR database.")
        answered.add_metric([], replies)
        yield requests
        yield answered


class MeteredCdrStore(CdrStore):
    """The CDR store, counting what it writes and what fails to be written."""

    def __init__(self, path: Location, metrics: ControllerMetrics, *,
                 node: str | None = None, spool: CdrSpool | None = None) -> None:
        super().__init__(path, node=node, spool=spool)
        self.metrics = metrics
        metrics.cdr_spool_records.set(self.spooled)

    def upsert(self, record: CallRecord) -> WriteOutcome:
        try:
            outcome = super().upsert(record)
        except Exception:
            self.metrics.cdr_write_failures.inc()
            raise
        self.metrics.cdr_written(record, outcome, self.spooled)
        return outcome

    def replay_spool(self, *, batch: int = REPLAY_BATCH) -> int:
        replayed = super().replay_spool(batch=batch)
        if replayed:
            self.metrics.cdr_replayed_writes(replayed, self.spooled)
        return replayed


class TimedOutboundSession(OutboundSession):
    """An outbound session that notes when CHANNEL_DATA arrived (the setup clock's start)."""

    channel_data_at: float | None = None

    async def connect(self, *, timeout: float = 5.0) -> Event:
        channel_data = await super().connect(timeout=timeout)
        self.channel_data_at = time.monotonic()
        return channel_data


def metered_uic(
    handler: Callable[[OutboundSession], Awaitable[None]], metrics: ControllerMetrics
) -> Callable[[OutboundSession], Awaitable[None]]:
    """Wrap the UIC handler: setup latency, active calls, outcome; the handler is unchanged.

    The session's own events (CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE, subscribed by the
    handler) tell the outcome; a socket that closes before the hangup event counts as
    ``socket_lost`` (its CDR is then written by the inbound connection).
    """

    async def handle(session: OutboundSession) -> None:
        timed = TimedOutboundSession(session.connection)
        answered = False
        outcome: str | None = None

        def on_event(event: Event) -> None:
            nonlocal answered, outcome
            if event.unique_id != timed.uuid:
                return
            if event.name == "CHANNEL_ANSWER" and not answered:
                answered = True
                metrics.calls_active.labels("uic").inc()
                if timed.channel_data_at is not None:
                    metrics.setup_latency.observe(time.monotonic() - timed.channel_data_at)
            elif event.name == "CHANNEL_HANGUP_COMPLETE" and outcome is None:
                outcome = outcome_code(event)

        session.connection.on_event(on_event)
        try:
            await handler(timed)
        finally:
            if timed.channel_data_at is not None:
                metrics.uic_ended(outcome or "socket_lost", answered=answered)

    return handle

"""Pre-flight built from the settings: the permission store, and Graph when it can be reached.

Kept apart from esl/preflight.py (the decision) so tests drive the decision with any lookup;
this module owns the Graph client's lifetime (``async with``) and reads the token from the
site's ``[graph]`` (a variable or a 0600 file, never logged). Without a token the pre-flight
still runs, on stored permissions alone, and every refusal says why Graph was not asked.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from esl.call_permissions import CallPermissionStore
from esl.cdr import CdrStore
from esl.preflight import PacedLookup, Preflight, Verdict
from graphapi.client import GraphClient, RetryPolicy
from siteconfig.controller import ControllerSettings
from siteconfig.secret_source import SecretError, load_secret

log = logging.getLogger(__name__)
GRAPH_CONNECTIONS = 16


@contextlib.asynccontextmanager
async def preflight_for(settings: ControllerSettings, cdrs: CdrStore, *,
                        on_verdict: Callable[[Verdict], None] | None = None,
                        ) -> AsyncIterator[Preflight | None]:
    """A ready Preflight (None when ``[esl.preflight] enabled = false``)."""
    config = settings.preflight
    if not config.enabled:
        yield None
        return
    permissions = CallPermissionStore(settings.cdr_db, defer=cdrs.defers)
    try:
        async with _graph(settings) as (client, why):
            lookup = (PacedLookup(client.call_permissions, rate=config.graph_rate,
                                  cache_s=config.cache_s) if client is not None else None)
            preflight = Preflight(settings, permissions, cdrs, lookup, on_verdict=on_verdict)
            if why:
                preflight.no_graph_reason = why
            yield preflight
    finally:
        permissions.close()


@contextlib.asynccontextmanager
async def _graph(settings: ControllerSettings) -> AsyncIterator[tuple[GraphClient | None, str]]:
    graph = settings.graph
    if graph is None:
        yield None, "no [graph] section"
        return
    if not any(number.phone_number_id for number in settings.numbers):
        yield None, "no number has a phone_number_id"
        return
    try:
        token, warnings = load_secret("Graph access token", graph.token_env, graph.token_file,
                                      "or graph.token_file in the site config")
    except SecretError as error:
        log.warning("pre-flight without Graph: %s", error)
        yield None, str(error)
        return
    for warning in warnings:
        log.warning("%s", warning)
    config = settings.preflight
    client = GraphClient(graph.base_url, graph.api_version, token,
                         concurrency=GRAPH_CONNECTIONS, timeout_s=config.graph_timeout_s,
                         retry=RetryPolicy(max_attempts=config.graph_attempts, max_delay_s=2.0,
                                           max_retry_after_s=5.0))
    async with client:
        yield client, ""

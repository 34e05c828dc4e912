"""Pre-flight lookups against Graph's 100 requests/s: the product's path, and two references.

- **product**: ``preflight_for`` (esl/preflight_setup.py) built from the site settings, as
  ``wa-esl run`` builds it, checks ``users`` distinct users all at once (a dialer's queue):
  PacedLookup spaces Graph requests at ``[esl.preflight] graph_rate``; then the same users
  again inside ``cache_s`` (answered from the cache, no Graph request).
- **raw**: the same GraphClient's ``call_permissions`` GETs, 16 connections as pre-flight
  uses, nothing paced, against a stand-in *without* the limit: what client and stand-in can
  do on this machine, so the paced figure can be read against it.
- **unpaced**: the same raw GETs against a stand-in *with* the limit, one attempt each: how
  many 613s a client that does not pace itself collects (proof the limit is enforced).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from esl.cdr import CdrStore
from esl.preflight import PacedLookup
from esl.preflight_setup import GRAPH_CONNECTIONS, preflight_for
from graphapi.client import GraphClient, RetryPolicy
from graphapi.errors import GraphError
from siteconfig.controller import ControllerSettings

from .children import TOKEN

API_VERSION = "v21.0"


@dataclass(frozen=True)
class PreflightRun:
    checks: int
    wall_s: float
    graph_requests: int
    refused: dict[str, int]  # reason -> count (every user is granted: any refusal is an error)
    cached_checks: int
    cached_wall_s: float
    cache_hits: int

    @property
    def lookups_per_s(self) -> float:
        return self.graph_requests / self.wall_s if self.wall_s else 0.0

    @property
    def cached_per_s(self) -> float:
        return self.cached_checks / self.cached_wall_s if self.cached_wall_s else 0.0


@dataclass(frozen=True)
class RawRun:
    requests: int
    wall_s: float
    ok: int
    rate_limited: int
    other_errors: int

    @property
    def per_s(self) -> float:
        return self.requests / self.wall_s if self.wall_s else 0.0


async def product_lookups(settings: ControllerSettings, business_number: str,
                          users: list[str], timeout_s: float) -> PreflightRun:
    """Every user checked at once through the product's pre-flight, then again (cached)."""
    cdrs = CdrStore(settings.cdr_db)
    try:
        async with preflight_for(settings, cdrs) as preflight:
            assert preflight is not None and isinstance(preflight.lookup, PacedLookup)
            refused: dict[str, int] = {}
            started = time.perf_counter()
            verdicts = await asyncio.wait_for(asyncio.gather(
                *(preflight.check(business_number, user) for user in users)), timeout_s)
            wall = time.perf_counter() - started
            requests = preflight.lookup.requests
            started = time.perf_counter()
            again = await asyncio.wait_for(asyncio.gather(
                *(preflight.check(business_number, user) for user in users)), timeout_s)
            cached_wall = time.perf_counter() - started
            for verdict in (*verdicts, *again):
                if not verdict.allowed:
                    refused[verdict.reason] = refused.get(verdict.reason, 0) + 1
            return PreflightRun(len(users), wall, requests, refused, len(users), cached_wall,
                                preflight.lookup.cache_hits)
    finally:
        cdrs.close()


async def raw_gets(base_url: str, phone_number_id: str, users: list[str], requests: int,
                   timeout_s: float, *, attempts: int = 6) -> RawRun:
    """``requests`` call_permissions GETs over ``users``, unpaced, 16 connections."""
    client = GraphClient(base_url, API_VERSION, TOKEN, concurrency=GRAPH_CONNECTIONS,
                         timeout_s=10.0, retry=RetryPolicy(max_attempts=attempts))
    outcomes = {"ok": 0, "rate_limited": 0, "other": 0}

    async def one(user: str) -> None:
        try:
            await client.call_permissions(phone_number_id, user)
            outcomes["ok"] += 1
        except GraphError as error:
            outcomes["rate_limited" if error.rate_limited else "other"] += 1

    async with client:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(
            *(one(users[i % len(users)]) for i in range(requests))), timeout_s)
        wall = time.perf_counter() - started
    return RawRun(requests, wall, outcomes["ok"], outcomes["rate_limited"], outcomes["other"])

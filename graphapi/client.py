"""The Graph API client that every `provision` command uses.

Why it looks like this: `provision sync` runs in cron over thousands of numbers, so one slow or
rate-limited answer must neither stall the run nor fail it. Every request has explicit timeouts;
5xx answers, network errors and Graph's rate-limit codes (4, 17, 32, 613, 80007, 130429, HTTP 429)
are retried with exponential backoff and jitter, honouring Retry-After; concurrency is bounded by
a semaphore (and the connection pool) so the app's Graph quota is not burnt in one burst, and
after a rate-limit answer request starts are paced (pacing.py). The
token is sent in the Authorization header only: it never appears in a URL, a log line or an error.

Connections are spread over several small httpx pools: httpcore scans every connection of a pool
for each request, which made one 32-connection pool the bottleneck of a 10,000-number sync.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from graphapi.errors import GraphError, network_error, parse_error, refused_endpoint
from graphapi.pacing import Pacer
from graphapi.permissions import (
    PermissionAnswer,
    message_id,
    parse_permission_answer,
    permission_request_body,
    user_query,
)
from siteconfig.model import GraphSection

DEFAULT_BASE_URL = "https://graph.facebook.com"
CONNECTIONS_PER_POOL = 8


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process for every pool of every client.

    httpx builds (and loads the CA bundle into) a new context per client otherwise: 45-80 ms
    each, measured by bench-preflight, paid twice by each `wa-esl originate` process.
    """
    return httpx.create_ssl_context()


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request before its error is reported."""

    max_attempts: int = 6
    base_delay_s: float = 0.25
    rate_limit_base_delay_s: float = 1.0
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, error: GraphError, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        if error.retry_after is not None:
            wait = min(max(error.retry_after, 0.0), self.max_retry_after_s)
            return float(wait + rng.uniform(0, 0.1 * wait + 0.05))  # spread the herd a little
        base = self.rate_limit_base_delay_s if error.rate_limited else self.base_delay_s
        ceiling: float = min(self.max_delay_s, base * 2.0 ** attempt)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)  # "equal jitter"


@dataclass
class ClientStats:
    """What the client did; the benchmark and `--json` output report these."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    failures: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_dt = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return max((when - now_dt).total_seconds(), 0.0)


class GraphClient:
    """Async client for one token (and so one app); use `async with`."""

    def __init__(self, base_url: str, api_version: str, token: str, *, concurrency: int = 16,
                 timeout_s: float = 10.0, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None) -> None:
        if not token:
            raise ValueError("an access token is required")
        self._base = f"{base_url.rstrip('/')}/{api_version}"
        self._token = token
        self._concurrency = concurrency
        self._timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._gate = asyncio.Semaphore(concurrency)
        self._pacer = Pacer()
        self._pools: list[httpx.AsyncClient] = []
        self._next_pool = 0
        self.stats = ClientStats()

    def __repr__(self) -> str:
        return f"GraphClient({self._base!r}, token=<hidden>)"

    async def __aenter__(self) -> GraphClient:
        pools = -(-self._concurrency // CONNECTIONS_PER_POOL)
        size = -(-self._concurrency // pools)
        self._pools = [httpx.AsyncClient(
            base_url=self._base, timeout=self._timeout, verify=shared_tls_context(),
            headers={"Authorization": f"Bearer {self._token}", "User-Agent": "wa-sip-provision"},
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            follow_redirects=False) for _ in range(pools)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        pools, self._pools = self._pools, []
        for pool in pools:
            await pool.aclose()

    # ---- Graph endpoints ---------------------------------------------------------------------

    async def get_settings(self, phone_number_id: str,
                           include_sip_credentials: bool = False) -> dict[str, Any]:
        """GET /<id>/settings (with this app's SIP password when asked)."""
        params = {"include_sip_credentials": "true"} if include_sip_credentials else None
        return await self.request("GET", f"/{phone_number_id}/settings", params=params)

    async def update_settings(self, phone_number_id: str, calling: dict[str, Any]) -> None:
        """POST /<id>/settings with `{"calling": calling}`; raises unless Graph says success."""
        answer = await self.request("POST", f"/{phone_number_id}/settings", body={"calling": calling})
        if answer.get("success") is not True:
            raise GraphError(200, 0, "Graph did not confirm the settings update (no success: true)")

    async def app_id(self) -> str:
        """The app the token belongs to (Graph decides whose SIP server entry is 'ours')."""
        answer = await self.request("GET", "/app")
        if not isinstance(answer.get("id"), str | int):
            raise GraphError(200, 0, "GET /app answered without an app id")
        return str(answer["id"])

    async def call_permissions(self, phone_number_id: str, user: str) -> PermissionAnswer:
        """GET /<id>/call_permissions for one user: the permission and the actions' limits.

        Raises EndpointRefused when Graph does not serve it for this number (SIP numbers may
        not have it), NoPermissionError / RateLimitError / GraphError otherwise.
        """
        try:
            answer = await self.request("GET", f"/{phone_number_id}/call_permissions",
                                        params=user_query(user))
        except GraphError as error:
            refused = refused_endpoint(error, "call_permissions")
            if refused is not None:
                raise refused from None
            raise
        return parse_permission_answer(answer)

    async def send_permission_request(self, phone_number_id: str, user: str, text: str) -> str:
        """POST /<id>/messages: the interactive call_permission_request; its message id.

        Not idempotent (each one counts against the user's 1 per 24 h, 2 per 7 days), so it is
        retried only when Graph refused it for rate, never after a 5xx or a lost answer.
        """
        answer = await self.request("POST", f"/{phone_number_id}/messages",
                                    body=permission_request_body(user, text), idempotent=False)
        return message_id(answer)

    # ---- the retry loop -----------------------------------------------------------------------

    async def request(self, method: str, path: str, params: dict[str, str] | None = None,
                      body: dict[str, Any] | None = None, *,
                      idempotent: bool = True) -> dict[str, Any]:
        """One Graph call, retried while the error is transient and attempts remain.

        ``idempotent=False``: retried only after a rate-limit refusal (Graph did not act on
        it); a 5xx or a lost answer may have been acted on, so it is reported instead.
        """
        if not self._pools:
            raise RuntimeError("GraphClient used outside 'async with'")
        last: GraphError | None = None
        for attempt in range(self._retry.max_attempts):
            if attempt:
                assert last is not None
                self.stats.retries += 1
                await self._sleep(self._retry.delay(attempt - 1, last, self._rng))
            await self._pacer.wait_turn()
            async with self._gate:
                result = await self._once(method, path, params, body)
            if isinstance(result, dict):
                self._pacer.speed_up()
                return result
            last = result
            if result.rate_limited:
                self.stats.rate_limited += 1
                self._pacer.slow_down()
            if not result.retryable or (not idempotent and not result.rate_limited):
                break
        assert last is not None
        self.stats.failures += 1
        raise last

    async def _once(self, method: str, path: str, params: dict[str, str] | None,
                    body: dict[str, Any] | None) -> dict[str, Any] | GraphError:
        pool = self._pools[self._next_pool % len(self._pools)]
        self._next_pool += 1
        self.stats.requests += 1
        try:
            response = await pool.request(method, path, params=params, json=body)
        except httpx.TimeoutException:
            return network_error(f"{method} {path}: no answer within {self._timeout.read} s")
        except httpx.HTTPError as error:
            return network_error(f"{method} {path}: {type(error).__name__}")
        self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if 200 <= response.status_code < 300:
            if not isinstance(answer, dict):
                return GraphError(response.status_code, 0, f"{method} {path}: answer is not a JSON object")
            return answer
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return parse_error(response.status_code, answer, retry_after)


def client_from_config(graph: GraphSection, token: str) -> GraphClient:
    """A client with the site's base URL, API version, concurrency, timeout and attempts."""
    return GraphClient(graph.base_url, graph.api_version, token, concurrency=graph.concurrency,
                       timeout_s=graph.timeout_s, retry=RetryPolicy(max_attempts=graph.max_attempts))


async def resolve_app_id(client: GraphClient, graph: GraphSection) -> str:
    """This app's id: from the config when set, else asked of Graph (the token decides)."""
    return graph.app_id if graph.app_id is not None else await client.app_id()

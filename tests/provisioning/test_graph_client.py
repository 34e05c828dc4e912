"""The Graph client against the stand-in on loopback: retries, Retry-After, limits, error text."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from graphapi.client import GraphClient, RetryPolicy, parse_retry_after
from graphapi.errors import GraphError, parse_error
from graphapi.pacing import Pacer
from lab.graph_standin import FaultRule, GraphStandin
from tests.provisioning.conftest import APP_ID, SIP_DOMAIN, TOKEN

PNID = "100000000000001"


class RecordedSleep:
    """Stands in for asyncio.sleep: records the delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(standin: GraphStandin, sleep: RecordedSleep | None = None, attempts: int = 4,
           concurrency: int = 4, timeout_s: float = 2.0, token: str = TOKEN) -> GraphClient:
    return GraphClient(standin.base_url, "v21.0", token, concurrency=concurrency, timeout_s=timeout_s,
                       retry=RetryPolicy(max_attempts=attempts), sleep=sleep or RecordedSleep(),
                       rng=random.Random(7))


async def test_5xx_reset_and_timeout_are_retried(standin: GraphStandin) -> None:
    standin.state.add_server(PNID, APP_ID, SIP_DOMAIN)
    standin.faults.add(FaultRule("status", match=PNID, status=502))
    standin.faults.add(FaultRule("reset", match=PNID))
    standin.faults.add(FaultRule("timeout", match=PNID, delay_s=1.0))
    sleep = RecordedSleep()
    async with client(standin, sleep, timeout_s=0.3) as graph:
        settings = await graph.get_settings(PNID, True)
    assert settings["calling"]["sip"]["servers"][0]["sip_user_password"]
    assert graph.stats.retries == 3 and len(sleep.delays) == 3
    assert all(0 < d <= 8 for d in sleep.delays)


async def test_rate_limit_honours_retry_after_and_graph_codes(standin: GraphStandin) -> None:
    standin.faults.add(FaultRule("rate_limit", match="/app", retry_after=3))
    standin.faults.add(FaultRule("status", match="/app", status=400, code=80007))  # no Retry-After
    sleep = RecordedSleep()
    async with client(standin, sleep) as graph:
        assert await graph.app_id() == APP_ID
    assert 3.0 <= sleep.delays[0] <= 3.5
    assert 1.0 <= sleep.delays[1] <= 2.0  # second retry, rate-limit base 1 s doubled, equal jitter
    assert graph.stats.rate_limited == 2


async def test_gives_up_after_max_attempts_keeping_fbtrace_id(standin: GraphStandin) -> None:
    standin.faults.add(FaultRule("status", match=PNID, status=500, times=10))
    async with client(standin, attempts=3) as graph:
        with pytest.raises(GraphError) as raised:
            await graph.get_settings(PNID)
    assert graph.stats.requests == 3
    error = raised.value
    assert error.status == 500 and error.fbtrace_id and error.fbtrace_id in str(error)
    assert "internal error" in str(error)


async def test_client_errors_are_not_retried_and_explained(standin: GraphStandin) -> None:
    standin.state.add_server(PNID, APP_ID, SIP_DOMAIN)
    async with client(standin) as graph:
        with pytest.raises(GraphError) as raised:
            await graph.request("POST", f"/{PNID}/calls", body={})
    assert graph.stats.requests == 1
    assert raised.value.code == 131055
    assert "SIP enabled" in str(raised.value) and "fbtrace_id" in str(raised.value)


async def test_invalid_token_is_explained_and_never_echoed(standin: GraphStandin) -> None:
    secret = "EAAG-not-a-valid-token-xyz"
    async with client(standin, token=secret) as graph:
        with pytest.raises(GraphError) as raised:
            await graph.get_settings(PNID)
    assert raised.value.code == 190 and raised.value.auth_problem
    assert "invalid or expired" in str(raised.value)
    assert secret not in str(raised.value) and secret not in repr(graph)


async def test_concurrency_is_bounded(standin: GraphStandin) -> None:
    standin.faults.add(FaultRule("timeout", match="/app", delay_s=0.3, times=6))
    started = time.monotonic()
    async with client(standin, concurrency=2) as graph:
        await asyncio.gather(*(graph.app_id() for _ in range(6)))
    assert time.monotonic() - started >= 0.85  # 6 slow answers, 2 at a time: 3 rounds of 0.3 s


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_grows_and_stays_bounded() -> None:
    policy, rng = RetryPolicy(base_delay_s=0.25, max_delay_s=8.0), random.Random(1)
    error = GraphError(503, 0, "x")
    delays = [policy.delay(attempt, error, rng) for attempt in range(10)]
    assert 0.125 <= delays[0] <= 0.25 and delays[3] >= 1.0
    assert max(delays) <= 8.0
    assert policy.delay(0, GraphError(429, 4, "x", retry_after=500), rng) <= 60 * 1.1 + 0.05


def test_unreadable_error_body_is_still_an_error() -> None:
    error = parse_error(502, "<html>bad gateway</html>")
    assert error.status == 502 and error.retryable and "HTTP 502" in str(error)


def test_pacer_slows_once_per_burst_and_recovers() -> None:
    now = [100.0]
    pacer = Pacer(clock=lambda: now[0])
    for _ in range(50):  # 50 starts within the last second
        pacer._starts.append(now[0])
    pacer.slow_down()
    first = pacer.interval
    assert first == pytest.approx(1 / 45)
    pacer.slow_down()  # same burst: no further slowing
    assert pacer.interval == first
    now[0] += 1.5
    for _ in range(50):
        pacer._starts.append(now[0])
    pacer.slow_down()
    assert pacer.interval == pytest.approx(first * 1.25)
    for _ in range(3000):
        pacer.speed_up()
    assert pacer.interval == 0.0


def test_pacer_leaves_slow_clients_alone() -> None:
    pacer = Pacer()
    pacer.slow_down()
    assert pacer.interval == 0.0

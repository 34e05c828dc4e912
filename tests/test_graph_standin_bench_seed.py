"""The Graph stand-in as `make bench-preflight` starts it: seeded users granted, and Meta's
call_permissions limit answered as Graph does (HTTP 400, error 613), not the messaging 429."""

from __future__ import annotations

import httpx

from lab.graph_standin import GraphStandin, RateLimiter
from lab.graph_standin.seed import grant_users, seed_numbers, seeded_user

TOKEN = "seed-test-token"
APP_ID = "700000000000001"


def test_granted_seeded_users_and_613_past_the_limit() -> None:
    limiter = RateLimiter(0.01, 2, retry_after=1.0, code=613, status=400)
    standin = GraphStandin({TOKEN: APP_ID}, rate_limiter=limiter)
    ((_, phone_number_id),) = seed_numbers(standin.state, 1, APP_ID, "sip.example.com")
    grant_users(standin.permissions, [phone_number_id], 1)
    with standin:
        def ask(user: str) -> httpx.Response:
            return httpx.get(f"{standin.base_url}/v21.0/{phone_number_id}/call_permissions",
                             params={"user_wa_id": user[1:]},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)

        granted, other, refused = ask(seeded_user(0)), ask(seeded_user(1)), ask(seeded_user(0))
    assert granted.json()["permission"]["status"] == "granted"
    assert other.json()["permission"]["status"] == "no_permission"  # only the first 1 granted
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 613
    assert standin.stats.rate_limited == 1

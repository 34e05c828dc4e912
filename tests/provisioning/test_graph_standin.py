"""The Graph stand-in over real HTTP on loopback: the documented settings rules and its faults."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from lab.graph_standin import FaultRule, GraphStandin, RateLimiter
from tests.provisioning.conftest import APP_ID, OTHER_APP_ID, OTHER_TOKEN, SIP_DOMAIN, TOKEN

PNID = "100000000000001"


def call(standin: GraphStandin, method: str, path: str, token: str | None = TOKEN,
         body: dict[str, Any] | None = None, version: str = "v21.0") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, f"{standin.base_url}/{version}{path}", headers=headers, json=body,
                         timeout=5)


def enable(standin: GraphStandin, token: str = TOKEN, hostname: str = SIP_DOMAIN) -> httpx.Response:
    return call(standin, "POST", f"/{PNID}/settings", token, {"calling": {"sip": {
        "status": "ENABLED", "servers": [{"hostname": hostname, "port": 5061}]}}})


def servers(standin: GraphStandin, token: str = TOKEN, credentials: bool = True) -> list[dict[str, Any]]:
    query = "?include_sip_credentials=true" if credentials else ""
    answer = call(standin, "GET", f"/{PNID}/settings{query}", token).json()
    return list(answer["calling"]["sip"]["servers"])


def test_servers_belong_to_the_app_of_the_token(standin: GraphStandin) -> None:
    assert enable(standin).json() == {"success": True}
    assert enable(standin, OTHER_TOKEN, "other.example.net").json() == {"success": True}
    seen_by_one = {s["app_id"]: s for s in servers(standin)}
    assert set(seen_by_one) == {APP_ID, OTHER_APP_ID}
    assert "sip_user_password" in seen_by_one[APP_ID]
    assert "sip_user_password" not in seen_by_one[OTHER_APP_ID]
    seen_by_two = {s["app_id"]: s for s in servers(standin, OTHER_TOKEN)}
    assert seen_by_two[OTHER_APP_ID]["sip_user_password"] != seen_by_one[APP_ID]["sip_user_password"]


def test_password_only_with_include_sip_credentials(standin: GraphStandin) -> None:
    enable(standin)
    assert "sip_user_password" not in servers(standin, credentials=False)[0]


def test_password_survives_updates_and_disable_but_not_disable_clear_enable(standin: GraphStandin) -> None:
    enable(standin)
    first = servers(standin)[0]["sip_user_password"]
    enable(standin, hostname="sip2.example.com")
    assert servers(standin)[0]["sip_user_password"] == first
    call(standin, "POST", f"/{PNID}/settings", body={"calling": {"sip": {"status": "DISABLED"}}})
    kept = call(standin, "GET", f"/{PNID}/settings?include_sip_credentials=true").json()
    assert kept["calling"]["sip"]["status"] == "DISABLED"
    assert kept["calling"]["sip"]["servers"][0]["sip_user_password"] == first  # DISABLED keeps servers
    call(standin, "POST", f"/{PNID}/settings",
         body={"calling": {"sip": {"status": "DISABLED", "servers": []}}})
    assert servers(standin) == []
    enable(standin)
    assert servers(standin)[0]["sip_user_password"] != first


def test_enabled_needs_at_least_one_server(standin: GraphStandin) -> None:
    answer = call(standin, "POST", f"/{PNID}/settings", body={"calling": {"sip": {"status": "ENABLED"}}})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 100 and "At least one SIP server" in error["message"]
    assert error["fbtrace_id"]
    assert standin.state.numbers[PNID].sip_status == "DISABLED"


def test_srtp_field_absent_until_set_and_reset_by_a_sip_update(standin: GraphStandin) -> None:
    enable(standin)
    calling = call(standin, "GET", f"/{PNID}/settings").json()["calling"]
    assert "srtp_key_exchange_protocol" not in calling
    call(standin, "POST", f"/{PNID}/settings", body={"calling": {"srtp_key_exchange_protocol": "SDES"}})
    assert call(standin, "GET", f"/{PNID}/settings").json()["calling"]["srtp_key_exchange_protocol"] == "SDES"
    enable(standin)  # the integrator-reported reset
    assert call(standin, "GET", f"/{PNID}/settings").json()["calling"]["srtp_key_exchange_protocol"] == "DTLS"


def test_calls_endpoint_answers_131055_while_sip_is_enabled(standin: GraphStandin) -> None:
    assert call(standin, "POST", f"/{PNID}/calls", body={}).status_code == 200
    enable(standin)
    answer = call(standin, "POST", f"/{PNID}/calls", body={})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == 131055


@pytest.mark.parametrize(("token", "status", "code"), [(None, 400, 2500), ("wrong", 401, 190)])
def test_token_errors_come_in_graph_envelopes(standin: GraphStandin, token: str | None, status: int,
                                              code: int) -> None:
    answer = call(standin, "GET", f"/{PNID}/settings", token)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code and error["type"] == "OAuthException" and error["fbtrace_id"]


def test_unknown_number_permission_and_old_version(standin: GraphStandin) -> None:
    unknown = call(standin, "GET", "/999/settings").json()["error"]
    assert (unknown["code"], unknown["error_subcode"]) == (100, 33)
    standin.state.add_number("555", allowed_apps={OTHER_APP_ID})
    assert call(standin, "GET", "/555/settings").json()["error"]["code"] == 10
    assert call(standin, "GET", f"/{PNID}/settings", version="v16.0").json()["error"]["code"] == 2635


def test_request_uri_user_params_over_128_characters_refused(standin: GraphStandin) -> None:
    answer = call(standin, "POST", f"/{PNID}/settings", body={"calling": {"sip": {
        "status": "ENABLED", "servers": [{"hostname": SIP_DOMAIN,
                                          "request_uri_user_params": {"tgrp": "x" * 129}}]}}})
    assert answer.json()["error"]["code"] == 100
    assert servers(standin) == []


def test_faults_fire_the_requested_number_of_times(standin: GraphStandin) -> None:
    standin.faults.add(FaultRule("status", match=PNID, status=503, times=2))
    standin.faults.add(FaultRule("rate_limit", match="/app", retry_after=2))
    assert [call(standin, "GET", f"/{PNID}/settings").status_code for _ in range(3)] == [503, 503, 200]
    limited = call(standin, "GET", "/app")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json()["error"]["code"] == 130429
    standin.faults.add(FaultRule("reset", match=PNID))
    with pytest.raises(httpx.TransportError):
        call(standin, "GET", f"/{PNID}/settings")
    standin.faults.add(FaultRule("timeout", match=PNID, delay_s=1.0))
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{standin.base_url}/v21.0/{PNID}/settings", headers={"Authorization": f"Bearer {TOKEN}"},
                  timeout=0.3)
    assert standin.stats.faults == 5


def test_rate_limiter_answers_429_with_retry_after() -> None:
    # The bucket reads a clock the test moves: on a loaded machine six real requests can take
    # longer than a token's refill, and then none would be refused.
    now = [100.0]
    limiter = RateLimiter(rate=5, burst=3, clock=lambda: now[0])
    with GraphStandin({TOKEN: APP_ID}, rate_limiter=limiter) as standin:
        answers = [call(standin, "GET", "/app") for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert answers[3].headers.get("Retry-After") is not None
        now[0] += 0.2  # one token back at 5/s
        assert call(standin, "GET", "/app").status_code == 200
        assert call(standin, "GET", "/app").status_code == 429
        assert standin.stats.rate_limited == 3


def test_additional_codecs_absent_until_set_then_set_and_cleared(standin: GraphStandin) -> None:
    enable(standin)
    assert "audio" not in call(standin, "GET", f"/{PNID}/settings").json()["calling"]
    body = {"calling": {"audio": {"additional_codecs": ["PCMU", "PCMA"]}}}
    assert call(standin, "POST", f"/{PNID}/settings", body=body).json() == {"success": True}
    calling = call(standin, "GET", f"/{PNID}/settings").json()["calling"]
    assert calling["audio"] == {"additional_codecs": ["PCMU", "PCMA"]}
    assert calling["sip"]["status"] == "ENABLED"  # an audio update leaves SIP alone
    call(standin, "POST", f"/{PNID}/settings", body={"calling": {"audio": {"additional_codecs": []}}})
    assert call(standin, "GET", f"/{PNID}/settings").json()["calling"]["audio"] == {
        "additional_codecs": []}


@pytest.mark.parametrize("audio", [
    {"additional_codecs": ["OPUS"]}, {"additional_codecs": ["pcmu"]}, {"additional_codecs": ["G729"]},
    {"additional_codecs": ["PCMU", "PCMU"]}, {"additional_codecs": "PCMU"}, {"codecs": ["PCMU"]},
    ["PCMU"],
])
def test_additional_codecs_other_than_distinct_pcma_pcmu_are_refused(standin: GraphStandin,
                                                                      audio: Any) -> None:
    answer = call(standin, "POST", f"/{PNID}/settings", body={"calling": {"audio": audio}})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 100
    assert standin.state.numbers[PNID].additional_codecs is None

"""`provision permission status|request` against the Graph stand-in: the limits table, the
request limits Meta reports respected, 138017, a refused lookup, bad input, 613 retried."""

from __future__ import annotations

from pathlib import Path

from lab.graph_standin import GraphStandin
from lab.graph_standin.faults import FaultRule
from tests.provisioning.conftest import NUMBERS, TOKEN, provision, site_toml

BUSINESS, PNID = NUMBERS[0]
USER = "+15551230000"
WA_ID = "15551230000"


def test_status_shows_the_permission_and_every_limit(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    standin.permissions.set_permission(PNID, WA_ID, "granted", permanent=True)
    standin.permissions.set_call_limit(PNID, WA_ID, 5, used=5)
    run = provision("permission", "status", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 0, run.stderr
    assert "permission: granted (expires: permanent)" in run.stdout
    assert "start_call" in run.stdout and "5/5" in run.stdout and "PT24H" in run.stdout
    assert "send_call_permission_request" in run.stdout and "P7D" in run.stdout
    assert TOKEN not in run.stdout + run.stderr
    as_json = provision("permission", "status", "-c", str(config), "--from", BUSINESS, "--to",
                        USER, "--json").json()
    assert {"action": "start_call", "can": "no", "period": "PT24H", "used": "5/5"}.items() <= \
        as_json["limits"][-1].items()


def test_request_is_sent_once_then_refused_by_the_limits(standin: GraphStandin,
                                                         tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    standin.permissions.reply_answer = "none"
    first = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith("sent: call permission request sent (message wamid.")
    second = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert second.exit_code == 3
    assert "not sent (request_limit)" in second.stdout and "1/1 per 24 h" in second.stdout
    assert "retry after" in second.stdout
    assert len(standin.permissions.sent_messages) == 1  # the second never reached Graph


def test_no_request_to_a_permanent_permission(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    standin.permissions.set_permission(PNID, WA_ID, "granted", permanent=True)
    run = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 3 and "permanent_exists" in run.stdout
    assert not standin.permissions.sent_messages


def test_a_refused_lookup_still_sends_and_says_so(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    standin.permissions.refuse_for_sip = "131055"
    standin.permissions.sip_numbers.add(PNID)
    status = provision("permission", "status", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert status.exit_code == 1 and "Graph refuses call_permissions" in status.stderr
    assert "Traceback" not in status.stderr
    run = provision("permission", "request", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 0 and "request limits not checked" in run.stderr


def test_613_is_retried(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    standin.faults.add(FaultRule("rate_limit", match="call_permissions", status=400, code=613,
                                 retry_after=0.2))
    run = provision("permission", "status", "-c", str(config), "--from", BUSINESS, "--to", USER)
    assert run.exit_code == 0 and "no_permission" in run.stdout


def test_bad_input_is_one_line(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url)
    for args, words in ((["--from", "+15559999999", "--to", USER], "not in the site config"),
                        (["--from", BUSINESS, "--to", "a b"], "user must be"),
                        (["--from", BUSINESS, "--to", USER, "--text", " "], "--text must be")):
        run = provision("permission", "request", "-c", str(config), *args)
        assert run.exit_code == 2 and words in run.stderr and "Traceback" not in run.stderr

"""`provision apply`: diff, --dry-run, only what differs, SRTP in its own call and read back."""

from __future__ import annotations

from pathlib import Path

from lab.graph_standin import GraphStandin
from tests.provisioning.conftest import APP_ID, NUMBERS, OTHER_APP_ID, SIP_DOMAIN, provision, site_toml

ONE, PNID1 = NUMBERS[0]
SDES_PARAMS = {ONE: 'srtp_mode = "SDES"\nrequest_uri_user_params = { tgrp = "wacall" }'}


def config(standin: GraphStandin, tmp_path: Path, extra: dict[str, str] | None = None) -> Path:
    return site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]], graph=f'app_id = "{APP_ID}"',
                     number_extra=extra)


def test_dry_run_shows_the_diff_and_sends_nothing(standin: GraphStandin, tmp_path: Path) -> None:
    run = provision("apply", "-c", str(config(standin, tmp_path, SDES_PARAMS)), "--dry-run", "--json")
    assert run.exit_code == 0
    (result,) = run.json()["results"]
    assert result["outcome"] == "would_change"
    assert {c["field"] for c in result["changes"]} == {"sip.status", "sip.server",
                                                       "srtp_key_exchange_protocol"}
    assert standin.stats.by_route.get("POST settings", 0) == 0


def test_apply_sets_sip_then_srtp_and_reads_back(standin: GraphStandin, tmp_path: Path) -> None:
    path = config(standin, tmp_path, SDES_PARAMS)
    run = provision("apply", "-c", str(path))
    assert run.exit_code == 0, run.stdout + run.stderr
    number = standin.state.numbers[PNID1]
    assert number.sip_status == "ENABLED" and number.srtp == "SDES"
    assert number.servers[APP_ID].hostname == SIP_DOMAIN
    assert number.servers[APP_ID].request_uri_user_params == {"tgrp": "wacall"}
    assert standin.stats.by_route["POST settings"] == 2  # SIP, then SRTP on its own
    again = provision("apply", "-c", str(path), "--json")
    assert again.json()["results"][0]["outcome"] == "unchanged"
    assert standin.stats.by_route["POST settings"] == 2


def test_srtp_reset_by_a_sip_update_is_set_again(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.add_server(PNID1, APP_ID, "old.example.com")
    standin.state.numbers[PNID1].srtp = "SDES"
    run = provision("apply", "-c", str(config(standin, tmp_path, SDES_PARAMS)), "--json")
    assert run.exit_code == 0
    changes = run.json()["results"][0]["changes"]
    assert [c["field"] for c in changes] == ["sip.server.hostname", "sip.server.request_uri_user_params"]
    assert standin.state.numbers[PNID1].srtp == "SDES"  # the stand-in reset it to DTLS; apply restored it


def test_other_apps_servers_are_warned_about(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.add_server(PNID1, OTHER_APP_ID, "other.example.net")
    run = provision("apply", "-c", str(config(standin, tmp_path)))
    assert run.exit_code == 0
    assert OTHER_APP_ID in run.stderr and "BYE from any of them" in run.stderr
    assert "that app's own token" in run.stderr
    assert set(standin.state.numbers[PNID1].servers) == {APP_ID, OTHER_APP_ID}


def test_graph_error_is_reported_per_number(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.numbers[PNID1].allowed_apps = {OTHER_APP_ID}
    run = provision("apply", "-c", str(config(standin, tmp_path)), "--json")
    assert run.exit_code == 1
    result = run.json()["results"][0]
    assert result["outcome"] == "error" and result["graph_error"]["code"] == 10


def test_too_long_user_param_is_refused_before_sending(standin: GraphStandin, tmp_path: Path) -> None:
    long = "x" * 129
    extra = {ONE: f'request_uri_user_params = {{ tgrp = "{long}" }}'}
    run = provision("apply", "-c", str(config(standin, tmp_path, extra)))
    assert run.exit_code == 2 and "128" in run.stderr
    assert standin.stats.requests == 0


G711 = {ONE: 'additional_codecs = ["PCMU"]'}


def test_additional_codecs_are_set_last_then_cleared_when_back_to_opus_only(
        standin: GraphStandin, tmp_path: Path) -> None:
    path = config(standin, tmp_path, {ONE: 'srtp_mode = "SDES"\nadditional_codecs = ["PCMU"]'})
    run = provision("apply", "-c", str(path), "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    (result,) = run.json()["results"]
    assert result["changes"][-1] == {"field": "audio.additional_codecs",
                                     "meta": "OPUS (additional_codecs not set)", "wanted": "OPUS + PCMU"}
    number = standin.state.numbers[PNID1]
    assert number.additional_codecs == ["PCMU"] and number.srtp == "SDES"
    assert standin.stats.by_route["POST settings"] == 3  # SIP, SRTP, then the codecs on their own
    assert provision("apply", "-c", str(path), "--json").json()["results"][0]["outcome"] == "unchanged"
    opus_only = config(standin, tmp_path, {ONE: 'srtp_mode = "SDES"'})
    cleared = provision("apply", "-c", str(opus_only), "--json")
    assert cleared.exit_code == 0
    assert cleared.json()["results"][0]["changes"] == [
        {"field": "audio.additional_codecs", "meta": "OPUS + PCMU", "wanted": "OPUS"}]
    assert number.additional_codecs == [] and number.srtp == "SDES"
    assert standin.stats.by_route["POST settings"] == 4


def test_a_number_that_never_set_codecs_and_wants_opus_only_sends_nothing_for_them(
        standin: GraphStandin, tmp_path: Path) -> None:
    run = provision("apply", "-c", str(config(standin, tmp_path)), "--json")
    assert run.exit_code == 0
    assert [c["field"] for c in run.json()["results"][0]["changes"]] == ["sip.status", "sip.server"]
    assert standin.state.numbers[PNID1].additional_codecs is None
    assert standin.stats.by_route["POST settings"] == 1


def test_codecs_refused_by_meta_are_an_error_naming_the_field_not_a_traceback(
        standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.numbers[PNID1].additional_codecs_available = False
    run = provision("apply", "-c", str(config(standin, tmp_path, G711)))
    assert run.exit_code == 1
    assert "setting audio.additional_codecs:" in run.stderr
    assert "not available for this phone number" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert standin.state.numbers[PNID1].sip_status == "ENABLED"  # the SIP part went through first


def test_an_invalid_codec_is_refused_before_anything_is_sent(standin: GraphStandin,
                                                             tmp_path: Path) -> None:
    run = provision("apply", "-c", str(config(standin, tmp_path, {ONE: 'additional_codecs = ["G729"]'})))
    assert run.exit_code == 2
    assert "numbers[0].additional_codecs" in run.stderr and "PCMU and PCMA only" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert standin.stats.requests == 0


def test_status_shows_what_meta_offers_and_the_codec_drift(standin: GraphStandin,
                                                           tmp_path: Path) -> None:
    path = config(standin, tmp_path, G711)
    assert provision("apply", "-c", str(path)).exit_code == 0
    standin.state.numbers[PNID1].additional_codecs = ["PCMA"]  # changed on Meta's side
    run = provision("status", "-c", str(path), "--json")
    (result,) = run.json()["results"]
    assert result["codecs"] == "OPUS + PCMA"
    assert {"field": "audio.additional_codecs", "meta": "OPUS + PCMA",
            "wanted": "OPUS + PCMU"} in result["drift"]
    table = provision("status", "-c", str(path))
    assert "OPUS + PCMA" in table.stdout and "codecs" in table.stdout

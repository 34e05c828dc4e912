"""The site config: the example parses, and every mistake is reported with the key that holds it."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lab.edge import EXAMPLE_CONFIG, merge
from siteconfig.model import ConfigError, SiteConfig, load_config, parse_config

CONFIG_PATH = Path("/srv/wa-sip/site.toml")


def toml_value(value: object) -> str:
    """A TOML literal for the JSON-like values a site config holds (inline tables only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in data.items())


def example_raw() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))


def site_text(changes: dict[str, Any] | None = None) -> str:
    return toml_text(merge(example_raw(), changes or {}))


def problems_of(changes: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(site_text(changes), CONFIG_PATH)
    assert caught.value.path == CONFIG_PATH
    assert caught.value.problems, "a ConfigError must list at least one problem"
    return caught.value.problems


def number(business_number: str = "+15550100001", phone_number_id: str = "100000000000001",
           **extra: object) -> dict[str, object]:
    return {"business_number": business_number, "phone_number_id": phone_number_id, **extra}


# ---- the example ---------------------------------------------------------------------------


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE_CONFIG)
    assert isinstance(cfg, SiteConfig)
    assert cfg.site.sip_domain == "sip.example.com"
    assert [n.business_number for n in cfg.numbers] == ["+15550100001"]
    assert cfg.numbers[0].digits == "15550100001"
    assert cfg.auth.challenge_code == 407
    assert [s.id for s in cfg.freeswitch.sets] == [1]
    assert cfg.credentials.sqlite_path() == Path("/var/lib/wa-sip/credentials.sqlite")


def test_toml_helper_round_trips_the_example() -> None:
    """The writer used below must not change the example's meaning."""
    assert tomllib.loads(site_text()) == example_raw()
    ours = parse_config(site_text(), CONFIG_PATH).model_dump(exclude={"tls"})
    assert ours == load_config(EXAMPLE_CONFIG).model_dump(exclude={"tls"})


def test_sip_domain_is_lowercased() -> None:
    cfg = parse_config(site_text({"site": {"sip_domain": "SIP.Example.COM"}}), CONFIG_PATH)
    assert cfg.site.sip_domain == "sip.example.com"


# ---- each mistake names its key ------------------------------------------------------------


@pytest.mark.parametrize("bad", ["15550100001", "+015550100001", "+1555 0100001", "+123456",
                                 "+1234567890123456", "+1555O100001"])
def test_bad_e164_names_the_number_key(bad: str) -> None:
    problems = problems_of({"numbers": [number(), number(bad, "2")]})
    assert len(problems) == 1
    assert problems[0].startswith("numbers[1].business_number: ")
    assert "E164" in problems[0]


def test_non_numeric_phone_number_id_names_its_key() -> None:
    problems = problems_of({"numbers": [number(phone_number_id="abc")]})
    assert problems == ["numbers[0].phone_number_id: must be the numeric Graph phone number id"]


@pytest.mark.parametrize("domain", ["192.0.2.10", "localhost", "sip example.com"])
def test_sip_domain_must_be_a_fully_qualified_name(domain: str) -> None:
    problems = problems_of({"site": {"sip_domain": domain}})
    assert len(problems) == 1
    assert problems[0].startswith("site.sip_domain: ")


def test_ip_address_as_sip_domain_says_why() -> None:
    (problem,) = problems_of({"site": {"sip_domain": "192.0.2.10"}})
    assert "not an IP address" in problem


def test_unknown_key_is_an_error_not_a_default() -> None:
    problems = problems_of({"auth": {"failure_limt": 3}})
    assert problems == ["auth.failure_limt: Extra inputs are not permitted"]


def test_unknown_top_level_table_is_an_error() -> None:
    problems = problems_of({"number": [number()]})
    assert problems == ["number: Extra inputs are not permitted"]


def test_several_problems_are_all_listed() -> None:
    problems = problems_of({"site": {"sip_domain": "192.0.2.10"},
                            "numbers": [number("12345", "x")]})
    keys = sorted(p.split(":", 1)[0] for p in problems)
    assert keys == ["numbers[0].business_number", "numbers[0].phone_number_id", "site.sip_domain"]


def test_duplicate_business_number_is_refused() -> None:
    problems = problems_of({"numbers": [number(), number(phone_number_id="2")]})
    assert len(problems) == 1
    assert "+15550100001" in problems[0]
    assert "already listed at numbers[0]" in problems[0]


def test_duplicate_business_number_names_the_key() -> None:
    problems = problems_of({"numbers": [number(), number(phone_number_id="2")]})
    assert problems[0].startswith("numbers[1].business_number: ")


def test_route_to_undefined_set_names_the_route() -> None:
    problems = problems_of({"routes": [{"match": {"tgrp": "wacall"}, "freeswitch_set": 1},
                                       {"match": {"tgrp": "other"}, "freeswitch_set": 9}]})
    assert len(problems) == 1
    assert "routes[1].freeswitch_set 9 is not defined" in problems[0]


def test_route_without_set_is_valid() -> None:
    cfg = parse_config(site_text({"routes": [{"match": {"tgrp": "x"}, "context": "c"}]}), CONFIG_PATH)
    assert cfg.routes[0].freeswitch_set is None


def test_default_set_must_exist() -> None:
    problems = problems_of({"freeswitch": {"default_set": 2}})
    assert len(problems) == 1
    assert problems[0].startswith("freeswitch: ")
    assert "default_set 2" in problems[0]


def test_auth_mode_none_needs_allowed_sources() -> None:
    problems = problems_of({"auth": {"mode": "none"}, "security": {"allowed_sources": []}})
    assert len(problems) == 1
    assert "auth.mode" in problems[0]
    assert "security.allowed_sources" in problems[0]


def test_auth_mode_none_with_allowed_sources_is_valid() -> None:
    cfg = parse_config(site_text({"auth": {"mode": "none"},
                                  "security": {"allowed_sources": ["157.240.0.0/16"]}}), CONFIG_PATH)
    assert cfg.auth.mode == "none"


def test_challenge_code_401_is_accepted_and_other_codes_are_refused_with_the_key() -> None:
    cfg = parse_config(site_text({"auth": {"challenge_code": 401}}), CONFIG_PATH)
    assert cfg.auth.challenge_code == 401
    (problem,) = problems_of({"auth": {"challenge_code": 403}})
    assert problem.startswith("auth.challenge_code: ")


def test_user_param_value_of_128_characters_is_accepted() -> None:
    params = {"tgrp": "x" * 128, "k" * 128: "v"}
    cfg = parse_config(site_text({"numbers": [number(request_uri_user_params=params)]}), CONFIG_PATH)
    assert cfg.numbers[0].request_uri_user_params == params


def test_additional_codecs_default_to_opus_only_and_take_g711_in_any_case() -> None:
    cfg = parse_config(site_text({"numbers": [number(), number("+15550100002", "100000000000002",
                                                               additional_codecs=["pcmu", "PCMA"])]}),
                       CONFIG_PATH)
    assert cfg.numbers[0].additional_codecs == []
    assert cfg.numbers[1].additional_codecs == ["PCMU", "PCMA"]


@pytest.mark.parametrize(("codecs", "says"), [
    (["OPUS", "PCMU"], "Opus is always on"),
    (["G729"], "PCMU and PCMA only"),
    (["G722", "PCMU"], "PCMU and PCMA only"),
    (["PCMU", "pcmu"], "each codec once"),
])
def test_additional_codecs_are_what_meta_accepts(codecs: list[str], says: str) -> None:
    (problem,) = problems_of({"numbers": [number(additional_codecs=codecs)]})
    assert problem.startswith("numbers[0].additional_codecs: ")
    assert says in problem


@pytest.mark.parametrize("params", [{"tgrp": "x" * 129}, {"k" * 129: "v"}, {"tgrp": ""}])
def test_user_param_length_is_capped(params: dict[str, str]) -> None:
    (problem,) = problems_of({"numbers": [number(request_uri_user_params=params)]})
    assert problem.startswith("numbers[0].request_uri_user_params: ")
    assert "1 to 128 characters" in problem


@pytest.mark.parametrize("params", [{"tgrp": "wa;call"}, {"tg;rp": "x"}, {"tgrp": "a=b"},
                                    {"tgrp": "a b"}, {"tgrp": "a@b"}])
def test_user_param_must_be_uri_safe(params: dict[str, str]) -> None:
    (problem,) = problems_of({"numbers": [number(request_uri_user_params=params)]})
    assert problem.startswith("numbers[0].request_uri_user_params: ")
    assert "URI-safe" in problem


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-network", "2001:db8::/129"])
def test_bad_cidr_names_the_key_and_value(cidr: str) -> None:
    (problem,) = problems_of({"security": {"allowed_sources": ["157.240.0.0/16", cidr]}})
    assert problem.startswith("security.allowed_sources: ")
    assert repr(cidr) in problem


def test_good_cidrs_are_kept() -> None:
    sources = ["157.240.0.0/16", "2a03:2880::/32", "31.13.24.1"]
    cfg = parse_config(site_text({"security": {"allowed_sources": sources}}), CONFIG_PATH)
    assert cfg.security.allowed_sources == sources


@pytest.mark.parametrize("url", ["mysql://db/wa", "postgresql://db-without-database",
                                 "sqlite:/relative.db", "/var/lib/creds.sqlite"])
def test_unsupported_store_url_is_refused(url: str) -> None:
    (problem,) = problems_of({"credentials": {"store": url}})
    assert problem.startswith("credentials.store: ")


@pytest.mark.parametrize(("key", "value"), [("tls", "0.0.0.0:70000"), ("internal", "not a host:5060"),
                                            ("tls", "[::1]5061")])
def test_bad_listen_socket_names_the_key(key: str, value: str) -> None:
    (problem,) = problems_of({"listen": {key: value}})
    assert problem.startswith(f"listen.{key}: ")


def test_freeswitch_node_must_be_sip_uri() -> None:
    problems = problems_of({"freeswitch": {"sets": [
        {"id": 1, "nodes": [{"uri": "sip:10.0.0.10:5080"}, {"uri": "10.0.0.11:5080"}]}]}})
    assert problems == ["freeswitch.sets[0].nodes[1].uri: must be a sip: URI such as sip:10.0.0.10:5080"]


# ---- the file itself -----------------------------------------------------------------------


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[site\nsip_domain = 'sip.example.com'\n", CONFIG_PATH)
    (problem,) = caught.value.problems
    assert problem.startswith("not valid TOML: ")
    assert str(CONFIG_PATH) in str(caught.value)


def test_invalid_toml_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text() + "numbers = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == path
    assert caught.value.problems[0].startswith("not valid TOML")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.path == path
    assert caught.value.problems == ["cannot read: No such file or directory"]


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems[0].startswith("cannot read: ")


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b"[site]\nsip_domain = \"\xff\xfe\"\n")
    with pytest.raises(ConfigError):
        load_config(path)


# ---- tls paths -----------------------------------------------------------------------------


def tls_changes(ca_list: str | None = "ca/meta.pem") -> dict[str, Any]:
    tls: dict[str, Any] = {"certificate": "certs/fullchain.pem", "private_key": "certs/privkey.pem"}
    if ca_list is not None:
        tls["ca_list"] = ca_list
    return {"tls": tls}


def test_relative_tls_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "site.toml"
    path.parent.mkdir()
    path.write_text(site_text(tls_changes()), encoding="utf-8")
    cfg = load_config(path)
    assert cfg.tls.certificate == tmp_path / "conf" / "certs" / "fullchain.pem"
    assert cfg.tls.private_key == tmp_path / "conf" / "certs" / "privkey.pem"
    assert cfg.tls.ca_list == tmp_path / "conf" / "ca" / "meta.pem"


def test_absolute_tls_paths_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text({"tls": {"ca_list": "/etc/ssl/certs/ca-certificates.crt"}}),
                    encoding="utf-8")
    cfg = load_config(path)
    assert cfg.tls.certificate == Path("/etc/wa-sip/tls/fullchain.pem")
    assert cfg.tls.private_key == Path("/etc/wa-sip/tls/privkey.pem")
    assert cfg.tls.ca_list == Path("/etc/ssl/certs/ca-certificates.crt")


def test_missing_ca_list_stays_none(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(site_text(tls_changes(ca_list=None)), encoding="utf-8")
    assert load_config(path).tls.ca_list is None


def test_relative_tls_paths_are_absolute_for_a_relative_config_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "site.toml").write_text(site_text(tls_changes()), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("conf/site.toml"))
    assert cfg.tls.certificate == tmp_path / "conf" / "certs" / "fullchain.pem"

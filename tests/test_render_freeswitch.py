"""`provision render` writes the FreeSWITCH side from the one site config, checked and atomic."""

from __future__ import annotations

import re
import stat
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from esl.cli import app as esl_app
from esl.fsconfig import TEMPLATES
from esl.site import controller_settings, freeswitch_site, load_controller_settings
from lab.edge import EXAMPLE_CONFIG, merge
from provisioning.cli import app
from provisioning.render import RenderError
from provisioning.render_freeswitch import render_freeswitch
from siteconfig.model import ConfigError, SiteConfig, load_config, parse_config

SDES_NUMBER = {"business_number": "+15550100002", "phone_number_id": "100000000000002",
               "srtp_mode": "SDES", "sdes_suites": ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"]}


DIRECT = {"media": {"anchor": "freeswitch"}}
"""The direct path: FreeSWITCH faces Meta (SDES, or DTLS with patches/freeswitch/0001)."""


def example_raw(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return merge(raw, changes or {})


def example_with(changes: dict[str, Any]) -> SiteConfig:
    return SiteConfig.model_validate(example_raw(changes))


def two_numbers() -> SiteConfig:
    """A DTLS and an SDES number on the direct path: FreeSWITCH itself takes Meta's modes."""
    raw = example_raw(DIRECT)
    raw["numbers"].append(SDES_NUMBER)
    return SiteConfig.model_validate(raw)


def params(path: Path) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in ET.parse(path).getroot().iter("param")}


def test_render_writes_every_file_and_keeps_the_esl_password_private(tmp_path: Path) -> None:
    cfg = example_with({"esl": {"freeswitch": {"password": "s3cret-esl"}}})
    target = render_freeswitch(cfg, tmp_path)
    written = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert written == sorted(TEMPLATES)
    socket_file = target / "autoload_configs/event_socket.conf.xml"
    assert stat.S_IMODE(socket_file.stat().st_mode) == 0o600
    assert params(socket_file)["password"] == "s3cret-esl"
    assert stat.S_IMODE((target / "sip_profiles/wa-edge.xml").stat().st_mode) == 0o640


def test_profile_faces_the_edges_internal_socket(tmp_path: Path) -> None:
    target = render_freeswitch(load_config(EXAMPLE_CONFIG), tmp_path)
    profile = params(target / "sip_profiles/wa-edge.xml")
    assert profile["proxy"] == "10.0.0.5:5060"  # listen.internal of the example
    assert profile["sip-port"] == "5080"
    acl = ET.parse(target / "autoload_configs/acl.conf.xml").getroot()
    edge_list = next(x for x in acl.iter("list") if x.get("name") == "wa-edge")
    assert [n.get("cidr") for n in edge_list] == ["10.0.0.5/32"]


def test_candidate_networks_make_their_own_list(tmp_path: Path) -> None:
    cfg = example_with({**DIRECT,
                        "freeswitch": {"profile": {"candidate_networks": ["157.240.0.0/16"]}}})
    target = render_freeswitch(cfg, tmp_path)
    assert params(target / "sip_profiles/wa-edge.xml")["apply-candidate-acl"] == "wa-candidates"
    assert 'cidr="157.240.0.0/16"' in (target / "autoload_configs/acl.conf.xml").read_text()


def test_the_direct_path_takes_meta_s_ice_candidates_from_wan_auto(tmp_path: Path) -> None:
    target = render_freeswitch(example_with(DIRECT), tmp_path)
    assert params(target / "sip_profiles/wa-edge.xml")["apply-candidate-acl"] == "wan.auto"


def test_the_default_anchor_renders_the_plain_profile(tmp_path: Path) -> None:
    """rtpengine (the default) faces Meta: FreeSWITCH gets plain RTP, no ICE/DTLS/WebRTC setting."""
    cfg = example_with({"freeswitch": {"profile": {"candidate_networks": ["157.240.0.0/16"]}}})
    target = render_freeswitch(cfg, tmp_path)
    profile = params(target / "sip_profiles/wa-edge.xml")
    assert "apply-candidate-acl" not in profile
    assert not [name for name in profile if re.search("candidate|ice|dtls|webrtc|srtp", name)]
    assert "wa-candidates" not in (target / "autoload_configs/acl.conf.xml").read_text()
    dialplan = (target / "dialplan/whatsapp.xml").read_text()
    assert "wa_srtp_mode=RTP" in dialplan and "rtp_secure_media" not in dialplan


def test_each_number_gets_its_srtp_mode_from_the_numbers_table(tmp_path: Path) -> None:
    target = render_freeswitch(two_numbers(), tmp_path)
    dialplan = (target / "dialplan/whatsapp.xml").read_text()
    assert "rtp_secure_media_inbound=mandatory:AES_CM_128_HMAC_SHA1_80:AEAD_AES_256_GCM" in dialplan
    assert "wa_srtp_mode=DTLS" in dialplan and "wa_srtp_mode=SDES" in dialplan


def test_controller_settings_follow_the_site_numbers() -> None:
    """On the direct path each number keeps Meta's mode (under the default, RTP: see
    tests/test_render_rtpengine.py)."""
    settings = controller_settings(two_numbers())
    modes = {n.business_number: (n.srtp_mode, n.sdes_suites) for n in settings.numbers}
    assert modes["+15550100001"][0] == "DTLS"
    assert modes["+15550100002"] == ("SDES", ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM"))


def test_wildcard_internal_address_is_refused_with_the_fix(tmp_path: Path) -> None:
    cfg = example_with({"listen": {"internal": "0.0.0.0:5060"}})
    with pytest.raises(ValueError, match=r"set listen\.internal"):
        freeswitch_site(cfg)
    with pytest.raises(RenderError, match="wildcard"):
        render_freeswitch(cfg, tmp_path)
    assert not (tmp_path / "freeswitch").exists()


def test_node_on_another_port_than_the_profile_is_refused(tmp_path: Path) -> None:
    cfg = example_with({"freeswitch": {"sets": [{"id": 1, "nodes": [{"uri": "sip:10.0.0.10:5090"}]}]}})
    with pytest.raises(RenderError, match=re.escape("sip:10.0.0.10:5090")):
        render_freeswitch(cfg, tmp_path)


def test_unknown_sdes_suite_names_its_key() -> None:
    raw = example_raw()
    raw["numbers"][0]["sdes_suites"] = ["AES_CM_128_NULL"]
    with pytest.raises(ValueError, match="AES_CM_128_NULL"):
        SiteConfig.model_validate(raw)


def test_bad_profile_address_is_a_config_error(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.read_text().replace('# sip_ip = "$${local_ip_v4}"', 'sip_ip = "not-an-ip"')
    with pytest.raises(ConfigError) as raised:
        parse_config(text, tmp_path / "site.toml")
    assert any(p.startswith("freeswitch.profile.sip_ip") for p in raised.value.problems)


def test_cli_render_writes_both_sides(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["render", "-c", str(EXAMPLE_CONFIG), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kamailio" / "kamailio.cfg").is_file()
    assert (tmp_path / "freeswitch" / "dialplan/whatsapp.xml").is_file()


def test_cli_render_failure_exits_1_and_names_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    text = EXAMPLE_CONFIG.read_text().replace('internal = "10.0.0.5:5060"', 'internal = "0.0.0.0:5060"')
    config.write_text(text.replace('"/etc/wa-sip/tls/', f'"{EXAMPLE_CONFIG.parent}/'))
    result = CliRunner().invoke(app, ["render", "-c", str(config), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "wildcard" in result.output
    assert "Traceback" not in result.output


def test_wa_esl_reads_the_site_config(tmp_path: Path) -> None:
    settings = load_controller_settings(EXAMPLE_CONFIG)
    assert [n.business_number for n in settings.numbers] == ["+15550100001"]
    assert settings.cdr_db == Path("/var/lib/wa-sip/cdr.sqlite3")


def test_wa_esl_reports_site_config_errors_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text(EXAMPLE_CONFIG.read_text().replace("# linger_s = 30", "linger_s = 0"))
    result = CliRunner().invoke(esl_app, ["cdr", "list", "-c", str(config)])
    assert result.exit_code == 2
    assert "esl.linger_s" in result.output
    assert "Traceback" not in result.output

"""Rendering the Kamailio edge: Kamailio accepts the result, and a failed render changes nothing."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kemi.settings import load_settings
from lab.edge import EXAMPLE_CONFIG, merge
from provisioning.cli import app
from provisioning.kamailio_binary import kamailio_available, kamailio_binary
from provisioning.kamailio_features import features_for
from provisioning.render import (
    DS_ALGORITHMS,
    RenderError,
    RenderOptions,
    edge_settings,
    render_kamailio,
    target_features,
)
from provisioning.templates_dir import templates_dir
from siteconfig.model import SiteConfig, load_config

RENDERED = ("credentials-schema.sql", "dispatcher.list", "edge-settings.json", "kamailio.cfg",
            "tls.cfg", "wa_edge.py")


def example_with(changes: dict[str, Any]) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return SiteConfig.model_validate(merge(raw, changes))


TWO_SETS: dict[str, Any] = {
    "freeswitch": {"default_set": 2, "sets": [
        {"id": 2, "algorithm": "round-robin", "nodes": [
            {"uri": "sip:10.0.0.20:5080", "priority": 3}, {"uri": "sip:fs-b.internal:5090"}]},
        {"id": 7, "algorithm": "hash-callid", "nodes": [
            {"uri": "sip:[2001:db8::7]:5080;transport=udp", "priority": 1}]},
    ]},
    "routes": [{"match": {"tgrp": "wacall"}, "freeswitch_set": 7, "context": "seven"}],
    "auth": {"mode": "none"},
    "security": {"allowed_sources": ["157.240.0.0/16", "2a03:2880::/32"]},
}


@pytest.fixture
def example() -> SiteConfig:
    return load_config(EXAMPLE_CONFIG)


# The folders the example renders: rtpengine/ for the default anchor (rtpengine), haproxy/ when
# HAProxy terminates Meta's TLS (Kamailio 5.6, tests/test_render_haproxy.py); no staging left.
EXAMPLE_FOLDERS = (["kamailio", "rtpengine"], ["haproxy", "kamailio", "rtpengine"])


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def kamailio_check(cfg_file: Path) -> subprocess.CompletedProcess[str]:
    if not kamailio_available():
        pytest.skip("no Kamailio installed (make test installs it)")
    return subprocess.run([kamailio_binary(), "-c", "-f", str(cfg_file)], capture_output=True,
                          text=True, timeout=60, check=False)


# ---- the rendered folder -------------------------------------------------------------------


def test_render_writes_every_file(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    assert target == (tmp_path / "out" / "kamailio").resolve()
    assert sorted(p.name for p in target.iterdir()) == sorted(RENDERED)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in EXAMPLE_FOLDERS
    assert all(p.stat().st_size > 0 for p in target.iterdir())


@pytest.mark.parametrize("changes", [{}, TWO_SETS], ids=["example", "two-sets-auth-none"])
def test_kamailio_accepts_the_rendered_config(changes: dict[str, Any], tmp_path: Path) -> None:
    target = render_kamailio(example_with(changes), tmp_path / "out",
                             RenderOptions(workers=2, probe_interval=0))
    result = kamailio_check(target / "kamailio.cfg")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_kamailio_refuses_a_broken_config(example: SiteConfig, tmp_path: Path) -> None:
    """The check above means something: the same command fails on a damaged file."""
    target = render_kamailio(example, tmp_path / "out")
    cfg_file = target / "kamailio.cfg"
    cfg_file.write_text(cfg_file.read_text() + "\nroute[BROKEN] { this is not kamailio }\n")
    assert kamailio_check(cfg_file).returncode != 0


def test_rendered_config_points_at_its_own_folder(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    text = (target / "kamailio.cfg").read_text()
    assert f'"{target}/tls.cfg"' in text
    assert f'"{target}/dispatcher.list"' in text
    assert f'"{target}/wa_edge.py"' in text
    assert str(target / "edge-settings.json") in (target / "wa_edge.py").read_text()


def test_edge_settings_json_loads_in_the_edge(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    settings = load_settings(target / "edge-settings.json")
    assert settings.sip_domain == "sip.example.com"
    assert set(settings.numbers) == {"15550100001"}
    assert settings.set_algorithms == {1: DS_ALGORITHMS["priority"]}
    assert settings.freeswitch_nodes == frozenset({("10.0.0.10", 5080, "udp"),
                                                   ("10.0.0.11", 5080, "udp")})
    assert json.loads((target / "edge-settings.json").read_text()) == json.loads(
        json.dumps(edge_settings(example, target_features(RenderOptions()))))


def test_edge_settings_json_for_two_sets(tmp_path: Path) -> None:
    target = render_kamailio(example_with(TWO_SETS), tmp_path / "out")
    settings = load_settings(target / "edge-settings.json")
    assert settings.set_algorithms == {2: 4, 7: 0}
    assert settings.default_set == 2
    assert settings.auth_mode == "none"
    assert settings.freeswitch_nodes == frozenset({("10.0.0.20", 5080, "udp"),
                                                   ("fs-b.internal", 5090, "udp"),
                                                   ("2001:db8::7", 5080, "udp")})
    assert len(settings.allowed_sources) == 2


def dispatcher_entries(target: Path) -> list[list[str]]:
    lines = (target / "dispatcher.list").read_text().splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


def test_dispatcher_list_has_every_node_with_its_set(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    assert dispatcher_entries(target) == [["1", "sip:10.0.0.10:5080", "0", "10"],
                                          ["1", "sip:10.0.0.11:5080", "0", "5"]]


def test_dispatcher_list_for_two_sets(tmp_path: Path) -> None:
    target = render_kamailio(example_with(TWO_SETS), tmp_path / "out")
    assert dispatcher_entries(target) == [["2", "sip:10.0.0.20:5080", "0", "3"],
                                          ["2", "sip:fs-b.internal:5090", "0", "0"],
                                          ["7", "sip:[2001:db8::7]:5080;transport=udp", "0", "1"]]


def tls_sections(target: Path) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in (target / "tls.cfg").read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def test_tls_server_never_asks_meta_for_a_certificate(example: SiteConfig, tmp_path: Path) -> None:
    sections = tls_sections(render_kamailio(example, tmp_path / "out"))
    server = sections["server:default"]
    assert server["verify_certificate"] == "no"
    assert server["require_certificate"] == "no"
    assert server["certificate"] == "/etc/wa-sip/tls/fullchain.pem"
    assert server["private_key"] == "/etc/wa-sip/tls/privkey.pem"
    client = sections["client:default"]
    assert client["verify_certificate"] == "yes"
    assert client["ca_list"] == "/etc/ssl/certs/ca-certificates.crt"


def test_tls_client_uses_the_configured_ca_list(tmp_path: Path) -> None:
    cfg = example_with({"tls": {"ca_list": "/opt/meta-ca.pem"}})
    sections = tls_sections(render_kamailio(cfg, tmp_path / "out"))
    assert sections["client:default"]["ca_list"] == "/opt/meta-ca.pem"


def test_rendering_twice_is_idempotent(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    first = snapshot(target)
    assert render_kamailio(example, tmp_path / "out") == target
    assert snapshot(target) == first
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in EXAMPLE_FOLDERS


def test_rerender_keeps_runtime_files(example: SiteConfig, tmp_path: Path) -> None:
    target = render_kamailio(example, tmp_path / "out")
    (target / "kamailio_rpc.sock").write_text("")
    render_kamailio(example, tmp_path / "out")
    assert (target / "kamailio_rpc.sock").exists()


# ---- failures ------------------------------------------------------------------------------


@pytest.fixture
def broken_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(templates_dir(), copy)
    cfg_template = copy / "kamailio" / "kamailio.cfg.j2"
    cfg_template.write_text(cfg_template.read_text() + "\n{% if %}\n")
    monkeypatch.setenv("WA_SIP_TEMPLATES", str(copy))
    return copy


def test_template_error_raises_render_error(example: SiteConfig, tmp_path: Path,
                                            broken_templates: Path) -> None:
    with pytest.raises(RenderError) as caught:
        render_kamailio(example, tmp_path / "fresh")
    assert "kamailio/kamailio.cfg.j2" in str(caught.value)
    assert not (tmp_path / "fresh" / "kamailio").exists()


def test_template_error_leaves_the_previous_render_untouched(
        example: SiteConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = render_kamailio(example, tmp_path / "out")
    before = snapshot(target)
    mtimes = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}

    copy = tmp_path / "templates"
    shutil.copytree(templates_dir(), copy)
    (copy / "kamailio" / "kamailio.cfg.j2").write_text("{{ no_such_variable }}\n")
    monkeypatch.setenv("WA_SIP_TEMPLATES", str(copy))
    changed = example_with({"site": {"sip_domain": "other.example.com"}})
    with pytest.raises(RenderError):
        render_kamailio(changed, tmp_path / "out")
    assert snapshot(target) == before
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == mtimes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) in EXAMPLE_FOLDERS


def test_unwritable_output_is_a_render_error(example: SiteConfig, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RenderError) as caught:
        render_kamailio(example, blocker / "out")
    assert "cannot write" in str(caught.value)


# ---- the command ---------------------------------------------------------------------------


def test_cli_render_example(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", "--config", str(EXAMPLE_CONFIG), "--out", str(out),
                                      "--workers", "2", "--probe-interval", "0"])
    assert result.exit_code == 0, result.output
    target = (out / "kamailio").resolve()
    assert sorted(p.name for p in target.iterdir()) == sorted(RENDERED)
    assert str(target) in result.stdout
    cfg = (target / "kamailio.cfg").read_text()
    assert "children=2" in cfg.replace(" ", "")
    assert "ds_ping_interval" not in cfg  # --probe-interval 0 turns probing off


def test_cli_bad_config_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    assert '"+15550100001"' in text
    bad = tmp_path / "site.toml"
    bad.write_text(text.replace('"+15550100001"', '"15550100001"'), encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["render", "--config", str(bad), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "numbers[0].business_number" in result.stderr
    assert str(bad) in result.stderr
    assert not out.exists()


def test_cli_missing_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["render", "--config", str(tmp_path / "absent.toml"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_render_failure_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(app, ["render", "--config", str(EXAMPLE_CONFIG),
                                      "--out", str(blocker / "out")])
    assert result.exit_code == 1
    assert "render failed" in result.stderr


# ---- one config for every supported Kamailio -------------------------------------------------

KAMAILIO_56 = RenderOptions(kamailio=features_for((5, 6, 3)))
KAMAILIO_61 = RenderOptions(kamailio=features_for((6, 1, 4)))
HARDENING_ONLY_6 = ("tcp_accept_iplimit=", "tcp_msg_data_timeout=", "tcp_msg_read_timeout=",
                    "tcp_check_timer=", "xhttp_prom_metadata_flags", "help='")


def test_a_render_for_56_leaves_out_what_56_does_not_parse(example: SiteConfig,
                                                           tmp_path: Path) -> None:
    with_metrics = example_with({"metrics": {"edge_listen": "127.0.0.1:9091"}})
    old = (render_kamailio(with_metrics, tmp_path / "56", KAMAILIO_56) / "kamailio.cfg").read_text()
    new = (render_kamailio(with_metrics, tmp_path / "61", KAMAILIO_61) / "kamailio.cfg").read_text()
    for text in HARDENING_ONLY_6:
        assert text not in old, text
        assert text in new, text
    assert "# 5.6.3. Do not edit" in old and "# 6.1.4. Do not edit" in new


def test_401_is_refused_for_a_kamailio_without_it(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"challenge_code = 401 needs Kamailio 6\.0"):
        render_kamailio(example_with({"auth": {"challenge_code": 401}}), tmp_path / "out",
                        KAMAILIO_56)
    target = render_kamailio(example_with({"auth": {"challenge_code": 401}}), tmp_path / "out",
                             KAMAILIO_61)
    settings = load_settings(target / "edge-settings.json")
    assert settings.www_challenge and settings.kamailio_version == "6.1.4"
    assert not (tmp_path / "out" / "kamailio" / "kamailio.cfg").read_text().count("5.6.3")


def test_the_installed_kamailio_accepts_a_render_for_its_own_version(tmp_path: Path) -> None:
    """kamailio -c on the binary that is here, with metrics on: what its version offers only."""
    with_metrics = example_with({"metrics": {"edge_listen": "127.0.0.1:9091"}})
    target = render_kamailio(with_metrics, tmp_path / "out", RenderOptions(workers=2,
                                                                           probe_interval=0))
    result = kamailio_check(target / "kamailio.cfg")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_node_goes_down_after_two_failed_probes_not_one(example: SiteConfig,
                                                           tmp_path: Path) -> None:
    """Going down ends the node's calls toward Meta (kemi/media_loss.py): one lost probe must not."""
    target = render_kamailio(example, tmp_path / "out", RenderOptions(workers=2, probe_interval=10))
    cfg = (target / "kamailio.cfg").read_text()
    assert 'modparam("dispatcher", "ds_probing_threshold", 2)' in cfg
    assert kamailio_check(target / "kamailio.cfg").returncode == 0

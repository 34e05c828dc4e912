"""Who terminates Meta's TLS (listen.tls_front), and the HAProxy front rendered for Kamailio 5.6.

Kamailio 5.6.3's tls module with OpenSSL 3 dies under a TLS scan (tests/security/test_tls_scan.py
runs it through the front this renders); these tests pin the choice per version, the rendered
haproxy.cfg (checked by `haproxy -c`), the secret PEM and the KEMI side (Record-Route preset,
the unforced socket toward Meta).
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kemi.dialog_mac import KeyWatch
from kemi.settings import settings_from_dict
from lab.certs import make_test_ca
from lab.edge import EXAMPLE_CONFIG, merge
from provisioning.in_dialog_keys import ensure_key_file
from provisioning.kamailio_features import features_for
from provisioning.render import RenderError, RenderOptions, edge_settings, render_kamailio
from siteconfig.model import ConfigError, SiteConfig, parse_config
from tests.test_kemi_edge_adapter import FakeKsr, install_ksr, uic_results

KAMAILIO_56 = RenderOptions(kamailio=features_for((5, 6, 3)), workers=2, probe_interval=0)
KAMAILIO_61 = RenderOptions(kamailio=features_for((6, 1, 4)), workers=2, probe_interval=0)


def site(tmp_path: Path, changes: dict[str, Any] | None = None) -> SiteConfig:
    """The example config with a real certificate (the PEM is built from it)."""
    ca = make_test_ca(tmp_path / "ca")
    leaf = ca.issue("edge", ["sip.example.com"])
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw = merge(raw, {"tls": {"certificate": str(leaf.certificate),
                              "private_key": str(leaf.private_key)}})
    return SiteConfig.model_validate(merge(raw, changes or {}))


def haproxy_check(config: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (make test installs it)")
    return subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True,
                          timeout=30, check=False)


def test_auto_puts_haproxy_in_front_of_56_and_kamailio_on_61(tmp_path: Path) -> None:
    cfg = site(tmp_path)
    old = render_kamailio(cfg, tmp_path / "56", KAMAILIO_56)
    new = render_kamailio(cfg, tmp_path / "61", KAMAILIO_61)
    assert (tmp_path / "56" / "haproxy" / "haproxy.cfg").exists()
    assert not (tmp_path / "61" / "haproxy").exists()
    old_cfg, new_cfg = (old / "kamailio.cfg").read_text(), (new / "kamailio.cfg").read_text()
    assert 'listen=tcp:127.0.0.1:5062 name "meta"' in old_cfg
    assert 'listen=tls:127.0.0.1:5063 name "meta_out"' in old_cfg
    assert "tcp_accept_haproxy=yes" in old_cfg and "alias=sip.example.com:5061" in old_cfg
    assert "listen=tls:0.0.0.0:5061" not in old_cfg  # Kamailio 5.6 never binds Meta's port
    assert 'listen=tls:0.0.0.0:5061 name "meta"' in new_cfg and "tcp_accept_haproxy" not in new_cfg
    assert settings_from_dict(edge_settings(cfg, features_for((5, 6, 3)))).front.haproxy
    assert not settings_from_dict(edge_settings(cfg, features_for((6, 1, 4)))).front.haproxy


def test_kamailio_facing_meta_is_refused_on_56_with_the_reason(tmp_path: Path) -> None:
    cfg = site(tmp_path, {"listen": {"tls_front": "kamailio"}})
    with pytest.raises(RenderError, match=r"listen\.tls_front = 'kamailio' is refused for "
                       r"Kamailio 5\.6\.3: .*double free"):
        render_kamailio(cfg, tmp_path / "out", KAMAILIO_56)
    assert not (tmp_path / "out").exists()
    render_kamailio(cfg, tmp_path / "61", KAMAILIO_61)  # 6.x: the site's choice


def test_a_switch_back_to_kamailio_removes_the_haproxy_files(tmp_path: Path) -> None:
    render_kamailio(site(tmp_path, {"listen": {"tls_front": "haproxy"}}), tmp_path / "out",
                    KAMAILIO_61)
    assert (tmp_path / "out" / "haproxy" / "meta-tls.pem").exists()
    render_kamailio(site(tmp_path), tmp_path / "out", KAMAILIO_61)
    assert list((tmp_path / "out" / "haproxy").iterdir()) == []


def test_rendered_haproxy_cfg_passes_haproxy_c_and_says_what_it_must(tmp_path: Path) -> None:
    render_kamailio(site(tmp_path), tmp_path / "out", KAMAILIO_56)
    config = tmp_path / "out" / "haproxy" / "haproxy.cfg"
    result = haproxy_check(config)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.strip() for line in config.read_text().splitlines()]
    pem = tmp_path / "out" / "haproxy" / "meta-tls.pem"
    for line in ("mode tcp", "ssl-default-bind-options ssl-min-ver TLSv1.2",
                 f"bind 0.0.0.0:5061 ssl crt {pem.resolve()} verify none", "maxconn 409",
                 "tcp-request connection track-sc0 src",
                 "tcp-request connection reject if { sc0_conn_cur gt 32 }",
                 "tcp-request inspect-delay 5s", "timeout client 5s", "timeout tunnel 600s",
                 "server kamailio 127.0.0.1:5062 send-proxy"):  # v1: 5.6.3's v2 swaps ports
        assert line in lines, line
    body = [line for line in lines if not line.startswith("#")]
    assert not any("alpn" in line for line in body)  # Meta's edge refuses "sip"
    assert not any("ca-file" in line or "verify required" in line for line in body)
    v2 = tmp_path / "v2"
    render_kamailio(site(tmp_path, {"listen": {"tls_front": "haproxy"}}), v2, KAMAILIO_61)
    assert "server kamailio 127.0.0.1:5062 send-proxy-v2" in (
        v2 / "haproxy" / "haproxy.cfg").read_text()


def test_the_pem_is_private_and_holds_chain_then_key(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = site(tmp_path)
    render_kamailio(cfg, tmp_path / "out", KAMAILIO_56)
    pem = tmp_path / "out" / "haproxy" / "meta-tls.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    key = cfg.tls.private_key.read_text()
    assert pem.read_text() == cfg.tls.certificate.read_text() + key
    assert (tmp_path / "out" / "haproxy" / "haproxy.cfg").stat().st_mode & 0o777 == 0o640
    assert "PRIVATE KEY" not in capsys.readouterr().out + capsys.readouterr().err


def test_a_render_before_the_certificate_exists_writes_no_pem(tmp_path: Path) -> None:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))  # /etc/wa-sip/tls/...
    render_kamailio(SiteConfig.model_validate(raw), tmp_path / "out", KAMAILIO_56)
    config = (tmp_path / "out" / "haproxy" / "haproxy.cfg").read_text()
    assert "meta-tls.pem was not written" in config
    assert not (tmp_path / "out" / "haproxy" / "meta-tls.pem").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("front_backend", "0.0.0.0:5062", "must be a loopback or internal address"),
    ("front_backend", "8.8.8.8:5062", "must be a loopback or internal address"),
    ("outbound_tls", "localhost:5063", "is not an IP address"),
    ("tls_front", "stunnel", "'auto', 'kamailio' or 'haproxy'"),
])
def test_front_settings_are_validated_with_the_key(tmp_path: Path, key: str, value: str,
                                                   message: str) -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8").replace(
        "[listen]\n", f'[listen]\n{key} = "{value}"\n', 1)
    with pytest.raises(ConfigError) as error:
        parse_config(text, tmp_path / "site.toml")
    assert any(p.startswith(f"listen.{key}: ") and message in p for p in error.value.problems), \
        error.value.problems


def test_a_port_taken_twice_is_refused_at_render_naming_both_keys(tmp_path: Path) -> None:
    cfg = site(tmp_path, {"listen": {"front_backend": "127.0.0.1:5061"}})
    with pytest.raises(RenderError, match=r"listen\.front_backend uses port 5061, as listen\.tls"):
        render_kamailio(cfg, tmp_path / "out", KAMAILIO_56)
    render_kamailio(cfg, tmp_path / "61", KAMAILIO_61)  # Kamailio's own TLS: no such socket


def test_record_route_addresses_follow_advertise_then_the_socket_then_the_domain(
        tmp_path: Path) -> None:
    def front(listen: dict[str, str]) -> dict[str, Any]:
        value = edge_settings(site(tmp_path, {"listen": listen}), features_for((5, 6, 3)))
        return value["tls_front"]  # type: ignore[return-value]

    assert front({})["public_route"] == "sip.example.com:5061;transport=tls;r2=on"  # 0.0.0.0
    assert front({"tls": "192.0.2.10:5061"})["public_route"] == \
        "192.0.2.10:5061;transport=tls;r2=on"
    assert front({"advertise": "198.51.100.7"})["public_route"] == \
        "198.51.100.7:5061;transport=tls;r2=on"
    assert front({})["internal_route"] == "10.0.0.5:5060;r2=on"


def test_the_installed_kamailio_accepts_the_haproxy_render(tmp_path: Path) -> None:
    """kamailio -c on the binary here (5.6 by default, 6.x where one is named): tls_front is
    spelt out, since 'auto' gives HAProxy only on 5.6."""
    from tests.test_render import kamailio_check

    cfg = site(tmp_path, {"listen": {"tls": "192.0.2.10:5061", "tls_front": "haproxy"},
                          "metrics": {"edge_listen": "127.0.0.1:9091"}})
    target = render_kamailio(cfg, tmp_path / "out", RenderOptions(workers=2, probe_interval=0))
    result = kamailio_check(target / "kamailio.cfg")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "advertise 192.0.2.10:5061" in (target / "kamailio.cfg").read_text()


# ---- the KEMI side, against the recording KSR stand-in ---------------------------------------


@pytest.fixture
def haproxy_edge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import kemi.edge as edge_module

    settings = settings_from_dict(edge_settings(site(tmp_path), features_for((5, 6, 3))))
    keys = tmp_path / "in-dialog-keys.json"
    ensure_key_file(keys)
    edge = edge_module.WhatsAppEdge(settings, KeyWatch(keys))

    def route(results: dict[str, Any]) -> FakeKsr:
        ksr = FakeKsr(results)
        install_ksr(monkeypatch, ksr)
        assert edge.ksr_request_route(None) == edge_module.DONE
        return ksr

    route.edge = edge  # type: ignore[attr-defined]
    return route


def test_meta_invite_over_the_haproxy_socket_is_record_routed_with_the_public_address(
        haproxy_edge: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ksr = haproxy_edge(uic_results() | {"is_TLS": 0, "kx.get_rcv_sock_name": "meta",
                                        "auth.pv_auth_check": 1})
    assert ksr.count("tm.t_relay") == 1, ksr.calls
    assert ksr.args("tm.t_on_branch") == [("ksr_branch_freeswitch",)]
    branch = FakeKsr({"kx.get_duri": "sip:10.0.0.10:5080", "pv.get": "meta-tag"})
    install_ksr(monkeypatch, branch)
    assert haproxy_edge.edge.ksr_branch_freeswitch(None) == 1
    assert branch.count("rr.record_route") == 0
    assert branch.args("rr.record_route_preset") == [
        ("10.0.0.5:5060;r2=on", "sip.example.com:5061;transport=tls;r2=on")]
    [(param,)] = branch.args("rr.add_rr_param")  # before the preset: rr puts it in both
    assert str(param).startswith(";wamac=")
    assert [name for name, _ in branch.calls].index("rr.add_rr_param") < [
        name for name, _ in branch.calls].index("rr.record_route_preset")


def test_a_request_on_another_tcp_socket_is_not_metas(haproxy_edge: Any) -> None:
    ksr = haproxy_edge(uic_results(source="10.0.0.99") | {
        "is_TLS": 0, "kx.get_rcv_sock_name": "internal", "dispatcher.ds_is_from_lists": -1})
    assert ksr.args("sl.send_reply")[0][0] == 403  # an untrusted internal source
    assert ksr.count("tm.t_relay") == 0


def test_in_dialog_request_toward_meta_drops_the_forced_loopback_socket(
        haproxy_edge: Any) -> None:
    ksr = haproxy_edge(uic_results(method="BYE", source="10.0.0.10") | {
        "is_TLS": 0, "kx.get_rcv_sock_name": "internal", "siputils.has_totag": 1,
        "rr.loose_route": 1, "dispatcher.ds_is_from_lists": 1,
        "pv.get": "sip:157.240.1.1:5061;transport=tls"})
    assert ksr.args("pv.unset") == [("$fs",)]
    assert ksr.count("tm.t_relay") == 1
    meta = haproxy_edge(uic_results(method="BYE") | {
        "is_TLS": 0, "kx.get_rcv_sock_name": "meta", "siputils.has_totag": 1,
        "rr.loose_route": 1, "pv.get": "sip:10.0.0.10:5080"})
    assert meta.count("pv.unset") == 0  # toward FreeSWITCH loose_route's socket is right

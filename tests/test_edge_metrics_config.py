"""The edge's Prometheus endpoint as configured and rendered (no running Kamailio here)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kemi.diagnoses import DIGEST_ANSWERS, EDGE_DIAGNOSES, META_ANSWERS
from kemi.metrics import BIC_OUTCOMES, METRICS, UIC_OUTCOMES, EdgeMetrics, http_action
from lab.edge import EXAMPLE_CONFIG, merge
from provisioning.render import render_kamailio
from siteconfig.model import ConfigError, SiteConfig, parse_config
from tests.test_render import kamailio_check


def site_with(changes: dict[str, Any]) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return SiteConfig.model_validate(merge(raw, changes))


def rendered_cfg(cfg: SiteConfig, tmp_path: Path) -> str:
    return (render_kamailio(cfg, tmp_path / "out") / "kamailio.cfg").read_text()


def test_endpoint_is_rendered_on_its_own_named_tcp_socket(tmp_path: Path) -> None:
    text = rendered_cfg(site_with({"metrics": {"edge_listen": "127.0.0.1:9195"}}), tmp_path)
    assert 'listen=tcp:127.0.0.1:9195 name "metrics"' in text
    assert 'loadmodule "xhttp_prom.so"' in text
    assert 'modparam("xhttp", "event_callback", "ksr_xhttp_event")' in text
    assert 'modparam("xhttp_prom", "xhttp_prom_timeout", 0)' in text
    for metric in METRICS:
        assert f"name={metric.name};" in text
        assert "'" not in metric.help and '"' not in metric.help  # the modparam cannot quote
    # the metrics socket is the only TCP one besides, where HAProxy holds Meta's TLS (5.6), the
    # loopback socket behind it; Meta's own stays TLS
    sockets = re.findall(r"^listen=tcp:.*$", text, re.M)
    assert 'listen=tcp:127.0.0.1:9195 name "metrics"' in sockets
    assert [s for s in sockets if "metrics" not in s] in (
        [], ['listen=tcp:127.0.0.1:5062 name "meta"'])


def test_no_endpoint_and_no_http_module_unless_configured(tmp_path: Path) -> None:
    text = rendered_cfg(site_with({"metrics": {"edge_listen": None}}), tmp_path)
    assert "xhttp" not in text
    assert 'name "metrics"' not in text


def test_kamailio_accepts_the_rendered_endpoint(tmp_path: Path) -> None:
    cfg = site_with({"metrics": {"edge_listen": "127.0.0.1:9195"}})
    out = render_kamailio(cfg, tmp_path / "out")
    result = kamailio_check(out / "kamailio.cfg")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("value", "words"), [
    ("metrics.example.com:9195", "not an IP address"),
    ("127.0.0.1", "address:port"),
    ("127.0.0.1:0", "port must be 1-65535"),
    ("::1:9195", "brackets"),
    ("0.0.0.0:5061", "shares its port"),
])
def test_bad_edge_listen_is_refused_with_the_key(value: str, words: str) -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8").replace(
        'edge_listen = "127.0.0.1:9095"', f'edge_listen = "{value}"')
    assert text != EXAMPLE_CONFIG.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=words) as caught:
        parse_config(text, EXAMPLE_CONFIG)
    assert "metrics" in str(caught.value)


# ---- the KEMI side, without Kamailio --------------------------------------------------------


@pytest.mark.parametrize(("socket", "method", "url", "action"), [
    ("metrics", "GET", "/metrics", "serve"),
    ("metrics", "GET", "/metrics?x=1", "serve"),
    ("metrics", "POST", "/metrics", "not_found"),
    ("metrics", "GET", "/", "not_found"),
    ("meta", "GET", "/metrics", "ignore"),
    ("internal", "GET", "/metrics", "ignore"),
    (None, "GET", "/metrics", "ignore"),
])
def test_only_the_metrics_socket_answers_http(
    socket: str | None, method: str, url: str, action: str
) -> None:
    assert http_action(socket, method, url) == action


class FakeProm:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def counter_inc_l0(self, name: str, number: int) -> int:
        self.calls.append((name, number))
        return 1

    def counter_inc_l1(self, name: str, number: int, l1: str) -> int:
        self.calls.append((name, number, l1))
        return 1

    def counter_inc_l2(self, name: str, number: int, l1: str, l2: str) -> int:
        self.calls.append((name, number, l1, l2))
        return 1


def test_every_diagnosis_code_is_a_bic_outcome() -> None:
    codes = {*EDGE_DIAGNOSES, *(a.diagnosis.code for a in META_ANSWERS + DIGEST_ANSWERS)}
    assert codes <= set(BIC_OUTCOMES)


def test_label_values_outside_the_known_sets_become_other() -> None:
    prom = FakeProm()
    metrics = EdgeMetrics(prom)
    metrics.call("bic", "+15550100001")
    metrics.call("uic", "a1b2c3@meta-call-id")
    metrics.call("bic", "daily_limit")
    metrics.digest("<script>")
    assert prom.calls == [
        ("calls_total", 1, "bic", "other"),
        ("calls_total", 1, "uic", "other"),
        ("calls_total", 1, "bic", "daily_limit"),
        ("digest_total", 1, "other"),
    ]


def test_series_are_created_at_zero_for_every_outcome() -> None:
    prom = FakeProm()
    EdgeMetrics(prom).create_series()
    created = {call[2:] for call in prom.calls if call[0] == "calls_total"}
    assert {("uic", o) for o in UIC_OUTCOMES} | {("bic", o) for o in BIC_OUTCOMES} == created
    assert all(call[1] == 0 for call in prom.calls)


def test_no_xhttp_prom_means_no_calls() -> None:
    metrics = EdgeMetrics(None)
    metrics.call("uic", "answered")
    metrics.create_series()  # nothing to call, nothing raised

"""The Grafana dashboard (contrib/grafana) parses, and every panel queries metrics that exist:
names are collected by scraping both exporters after calls (a real edge, wa-esl on the
ESL stand-in)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from esl.bic import BicRequest
from esl.controller import Controller
from lab.edge import LAB_PASSWORD, EdgeLab
from lab.esl_standin import FreeSwitchStandin, UicCall
from lab.metrics_scrape import names, scrape
from lab.sipp import start_sipp_server
from tests.conftest import INSTALLED_KAMAILIO, edge_overrides
from tests.esl.conftest import PASSWORD
from tests.esl.controller_fixtures import SDES_NUMBER, ended_record, make_settings, place

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "wa-sip-dashboard.json"
METRIC = re.compile(r"wasip_[a-z0-9_]*[a-z0-9](?:_\.\*|\.\*)?")


def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"]
            for target in panel.get("targets", [])]


def queried_metrics() -> set[str]:
    found = set()
    for expr in queries():
        found.update(METRIC.findall(expr))
    return found


def test_dashboard_is_importable_as_is() -> None:
    document = dashboard()
    assert document["uid"] and document["title"]
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    for panel in document["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"  # no uid of someone's Grafana
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            # rate() drops the metric name: grouping by it afterwards merges every series
            assert "by (__name__)" not in target["expr"], target["expr"]


def test_every_asked_question_has_a_panel() -> None:
    asked = queried_metrics()
    for name in ("wasip_edge_calls_total", "wasip_edge_digest_total", "wasip_esl_calls_active",
                 "wasip_esl_uic_setup_seconds_bucket", "wasip_esl_first_media_seconds_bucket",
                 "wasip_edge_shmem_free_size", "wasip_edge_tls_opened_connections",
                 "wasip_esl_originate_total"):
        assert name in asked


async def controller_metric_names(tmp_path: Path) -> set[str]:
    standin = FreeSwitchStandin(password=PASSWORD)
    await standin.start("127.0.0.1", 0)
    settings = make_settings(standin, tmp_path).model_copy(
        update={"metrics_listen": "127.0.0.1:0"})
    controller = Controller(settings)
    await controller.start()
    try:
        await asyncio.wait_for(controller.inbound_ready.wait(), 5)
        handle = await place(standin, controller, UicCall(business_number=SDES_NUMBER,
                                                          talk_s=0.05))
        await handle.finished()
        await ended_record(controller, handle.runtime.channel.uuid)
        await controller.originate(BicRequest(SDES_NUMBER, "+15550200002"))
        assert controller.metrics_endpoint is not None
        url = f"http://127.0.0.1:{controller.metrics_endpoint.port}/metrics"
        return names(await asyncio.to_thread(scrape, url))
    finally:
        await controller.stop()
        controller.store.close()
        await standin.stop()


def edge_metric_names(tmp_path: Path) -> set[str]:
    with EdgeLab(tmp_path / "edge", edge_overrides(),
                 passwords={"+15550100001": LAB_PASSWORD}) as edge:
        fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
        meta = edge.meta_call("uic-answered", folder=tmp_path)
        assert meta.passed, meta.errors
        assert fs.wait(15) == 0, fs.log_tail()
        edge.reload_credentials()
        return names(scrape(f"http://127.0.0.1:{edge.ports.metrics}/metrics"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    folder = tmp_path_factory.mktemp("dashboard")
    return edge_metric_names(folder) | asyncio.run(controller_metric_names(folder))


# Kamailio's tls statistics: not in 5.6, where HAProxy holds Meta's TLS connections anyway
# (README, Supported Kamailio: the dashboard's TLS panel stays empty there).
TLS_STATISTICS = {"wasip_edge_tls_opened_connections", "wasip_edge_tls_max_connections"}


def test_every_panel_query_names_a_metric_that_exists(exported: set[str]) -> None:
    missing = []
    expected = queried_metrics() - (set() if INSTALLED_KAMAILIO.tls_faces_internet
                                    else TLS_STATISTICS)
    for name in sorted(expected):
        if name.endswith(".*"):
            prefix = name.rstrip(".*")
            if not any(e.startswith(prefix) for e in exported):
                missing.append(name)
        elif name not in exported:
            missing.append(name)
    assert not missing, f"panels query metrics no exporter has: {missing}"

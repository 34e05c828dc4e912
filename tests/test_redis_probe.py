"""provision doctor's [media.rtpengine] redis check against a real Debian redis-server on
loopback: absent, at its default (no keyspace events: no standby would hear of a call), and
set as the cluster lab sets it (K$g)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.processes import free_port
from provisioning.doctor import Level, rtpengine_redis_findings
from provisioning.redis_probe import RedisProbeError, keyspace_events, standby_ready
from siteconfig.model import SiteConfig
from tests.test_render import example_with


def config_for(port: int) -> SiteConfig:
    return example_with({"media": {"anchor": "rtpengine", "rtpengine": {
        "interface": "127.0.0.1", "redis": f"redis://127.0.0.1:{port}/1",
        "standby": [{"interface": "127.0.0.2", "redis_db": 2}]}}})


@pytest.fixture()
def redis_port(tmp_path: Path) -> Iterator[int]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server (Debian's redis-server; make test installs it)")
    port = free_port()
    process = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                keyspace_events("127.0.0.1", port, timeout_s=0.5)
                break
            except RedisProbeError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_redis_at_its_default_is_a_warning_naming_the_setting(redis_port: int) -> None:
    (finding,) = rtpengine_redis_findings(config_for(redis_port))
    assert finding.level is Level.WARN
    assert "notify-keyspace-events is ''" in finding.cause
    assert "K$g" in finding.fix


def test_redis_with_keyspace_events_passes(redis_port: int) -> None:
    subprocess.run(["redis-cli", "-p", str(redis_port), "CONFIG", "SET",
                    "notify-keyspace-events", "K$g"], check=True, capture_output=True)
    (finding,) = rtpengine_redis_findings(config_for(redis_port))
    assert finding.level is Level.PASS, finding


def test_no_redis_is_a_warning() -> None:
    port = free_port()  # nothing listens there
    (finding,) = rtpengine_redis_findings(config_for(port))
    assert finding.level is Level.WARN and "replicated" in finding.cause


@pytest.mark.parametrize(("events", "ready"), [
    ("", False), ("K", False), ("K$", False), ("$gK", True), ("KA", True), ("EA", False)])
def test_what_a_standby_needs(events: str, ready: bool) -> None:
    assert standby_ready(events) is ready

"""[media.rtpengine] redis and standby: rtpengine's own replication between the edges of a site.

What it keeps alive is measured by the cluster lab's edge-killed drill (tests/cluster); here the
site config's rules and the rendered rtpengine.conf, which Debian's rtpengine must start from
(with Redis not there yet: media must not wait for Redis).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from provisioning.render import render_kamailio
from siteconfig.model import MediaSection
from tests.test_render import example_with
from tests.test_render_rtpengine import ng_ping

EDGE_A = {"ng_listen": "127.0.0.1:22224", "interface": "127.0.0.1", "port_min": 41200,
          "port_max": 41300, "redis": "redis://127.0.0.1:6399/1",
          "standby": [{"interface": "127.0.0.2", "redis_db": 2}]}


def rtpengine_with(section: dict[str, Any]) -> dict[str, Any]:
    return {"media": {"anchor": "rtpengine", "rtpengine": section}}


def rendered(tmp_path: Path, section: dict[str, Any]) -> configparser.SectionProxy:
    render_kamailio(example_with(rtpengine_with(section)), tmp_path / "out")
    conf = configparser.ConfigParser()
    conf.read(tmp_path / "out" / "rtpengine" / "rtpengine.conf")
    return conf["rtpengine"]


def test_redis_renders_one_named_interface_per_edge_and_the_other_edges_keyspaces(
        tmp_path: Path) -> None:
    section = rendered(tmp_path, EDGE_A)
    # this edge's own interface first (new calls), named after its database on every edge
    assert section["interface"] == "db1/127.0.0.1;db2/127.0.0.2"
    assert section["redis"] == "127.0.0.1:6399/1"
    assert section["subscribe-keyspace"] == "2"
    assert section["active-switchover"] == "true"
    assert section["no-redis-required"] == "true"
    # a DTLS call's keys written at Meta's first packet, not 3 s after the answer
    assert section["endpoint-learning"] == "immediate"
    assert int(section["redis-cmd-timeout"]) <= 500  # a stalled Redis must not stall media long


def test_the_other_edge_renders_the_mirror_image(tmp_path: Path) -> None:
    edge_b = {**EDGE_A, "interface": "127.0.0.2", "redis": "redis://127.0.0.1:6399/2",
              "advertise": "192.0.2.2",
              "standby": [{"interface": "127.0.0.1", "advertise": "192.0.2.1", "redis_db": 1}]}
    section = rendered(tmp_path, edge_b)
    assert section["interface"] == "db2/127.0.0.2!192.0.2.2;db1/127.0.0.1!192.0.2.1"
    assert section["subscribe-keyspace"] == "1"


def test_without_redis_the_file_is_as_before(tmp_path: Path) -> None:
    section = rendered(tmp_path, {"interface": "127.0.0.1"})
    assert section["interface"] == "127.0.0.1"
    assert not {"redis", "subscribe-keyspace", "active-switchover", "endpoint-learning"} & set(
        section)


@pytest.mark.parametrize(("changes", "message"), [
    ({"redis": "redis://secret@10.0.0.5:6379/1"}, "RTPENGINE_REDIS_AUTH_PW"),
    ({"redis": "redis://8.8.8.8:6379/1"}, "SRTP master keys"),
    ({"redis": "redis://redis.internal:6379/1"}, "IP literal"),
    ({"redis": "10.0.0.5:6379/1"}, "redis://IP:PORT/DB"),
    ({"redis": "redis://10.0.0.5:6379/1", "standby": [{"interface": "10.0.0.2", "redis_db": 1}]},
     "database of its own"),
    ({"redis": "redis://10.0.0.5:6379/1", "interface": "10.0.0.2",
      "standby": [{"interface": "10.0.0.2", "redis_db": 2}]}, "floating media address"),
    ({"standby": [{"interface": "10.0.0.2", "redis_db": 2}]}, "standby needs redis"),
])
def test_replication_settings_are_refused_with_the_reason(changes: dict[str, Any],
                                                          message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MediaSection.model_validate({"rtpengine": changes})


def test_rtpengine_starts_from_the_replicating_file_with_redis_not_there(tmp_path: Path) -> None:
    binary = shutil.which("rtpengine")
    if binary is None:
        pytest.skip("no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
    rendered(tmp_path, EDGE_A)  # Redis at 127.0.0.1:6399: nothing listens there
    conf = tmp_path / "out" / "rtpengine" / "rtpengine.conf"
    process = subprocess.Popen([binary, f"--config-file={conf}", "--config-section=rtpengine",
                                "--foreground", "--log-stderr", f"--pidfile={tmp_path}/rtpe.pid"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not answer:
            try:
                answer = ng_ping(22224)
            except OSError:
                time.sleep(0.1)
        assert answer == b"c00kie d6:result4:ponge"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert "Starting with no initial connection to Redis" in output, output[-2000:]
    assert "Startup complete" in output

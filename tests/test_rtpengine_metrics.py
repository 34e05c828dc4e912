"""rtpengine's own Prometheus endpoint ([media.rtpengine] metrics_listen), through the real rtpengine.

rtpengine 10.5 serves GET /metrics on its HTTP listener; the bundle renders that listener on a
loopback or private address only (it also takes CLI commands), Prometheus and the dashboard read
it, and doctor checks it. A call over ng with media both ways must show in the figures.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from lab.metrics_scrape import names, parse_exposition, value
from lab.processes import free_port
from lab.rtpengine import media_port_range, start_rtpengine
from provisioning.doctor import Level, media_findings
from provisioning.render import render_kamailio
from provisioning.rtpengine_metrics import MetricsError, fetch_metrics
from provisioning.rtpengine_ng import command
from siteconfig.model import MediaSection
from tests.test_dashboard import queries
from tests.test_render import example_with

RTPENGINE_METRIC = re.compile(r"(?<!\$)\brtpengine_[a-z0-9_]*[a-z0-9]")


def site(ng_port: int, http_port: int | None) -> dict[str, object]:
    low, high = media_port_range()
    rtp: dict[str, object] = {"ng_listen": f"127.0.0.1:{ng_port}", "interface": "127.0.0.1",
                              "port_min": low, "port_max": high}
    if http_port is not None:
        rtp["metrics_listen"] = f"127.0.0.1:{http_port}"
    return {"media": {"anchor": "rtpengine", "rtpengine": rtp}}


@pytest.mark.parametrize("address", ["8.8.8.8:9096", "0.0.0.0:9096", "[::]:9096",
                                     "[2001:4860::8888]:9096"])
def test_the_metrics_listener_is_never_public(address: str) -> None:
    with pytest.raises(ValidationError, match="loopback or private"):
        MediaSection.model_validate({"rtpengine": {"metrics_listen": address}})


def test_listen_http_is_rendered_only_when_asked(tmp_path: Path) -> None:
    render_kamailio(example_with(site(2223, None)), tmp_path / "off")
    assert "listen-http" not in (tmp_path / "off" / "rtpengine" / "rtpengine.conf").read_text()
    render_kamailio(example_with(site(2223, 9096)), tmp_path / "on")
    text = (tmp_path / "on" / "rtpengine" / "rtpengine.conf").read_text()
    assert "\nlisten-http = 127.0.0.1:9096\n" in text


def test_the_same_port_as_the_edge_metrics_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"metrics\.edge_listen too"):
        example_with({**site(2223, 9095), "metrics": {"edge_listen": "127.0.0.1:9095"}})


def test_nothing_serving_the_metrics_is_a_one_line_error() -> None:
    with pytest.raises(MetricsError):
        fetch_metrics(f"127.0.0.1:{free_port()}", timeout_s=0.5)


def plain_sdp(origin: str, port: int, payloads: str, maps: list[str]) -> str:
    lines = ["v=0", f"o={origin} 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} RTP/AVP {payloads}", *maps, "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def media_port(sdp: str) -> int:
    found = re.search(r"^m=audio (\d+) ", sdp, re.M)
    assert found, sdp
    return int(found.group(1))


def test_a_call_shows_in_rtpengine_s_metrics(tmp_path: Path) -> None:
    if shutil.which("rtpengine") is None:
        pytest.skip("no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
    ng_port, http_port = free_port(socket.SOCK_DGRAM), free_port()
    cfg = example_with(site(ng_port, http_port))
    render_kamailio(cfg, tmp_path / "out")
    rtpengine = start_rtpengine(tmp_path / "out" / "rtpengine" / "rtpengine.conf",
                                cfg.media.rtpengine.ng_listen, tmp_path)
    meta = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    business = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        # Bound to the loopback address it was given, not to every address of the host.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.2", http_port), timeout=1).close()
        for sock in (meta, business):
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
        ng = ("127.0.0.1", ng_port)
        opus = ["a=rtpmap:111 opus/48000/2"]
        offer = command(*ng, {"command": "offer", "call-id": "metrics-1", "from-tag": "m",
                              "sdp": plain_sdp("meta", meta.getsockname()[1], "111", opus)})
        answer = command(*ng, {"command": "answer", "call-id": "metrics-1", "from-tag": "m",
                               "to-tag": "b", "sdp": plain_sdp(
                                   "business", business.getsockname()[1], "111", opus)})
        to_business, to_meta = media_port(offer["sdp"]), media_port(answer["sdp"])
        for sequence in range(20):
            header = bytes([0x80, 111]) + sequence.to_bytes(2, "big") + bytes(8)
            meta.sendto(header + b"\x01" * 20, ("127.0.0.1", to_meta))
            business.sendto(header + b"\x02" * 20, ("127.0.0.1", to_business))
            time.sleep(0.005)
        assert business.recv(2048) and meta.recv(2048)
        during = parse_exposition(fetch_metrics(cfg.media.rtpengine.metrics_listen or ""))
        assert value(during, "rtpengine_sessions", type="own") == 1
        assert value(during, "rtpengine_packets_total", type="userspace") >= 20
        (ping, scraped) = media_findings(cfg)
        assert ping.level is Level.PASS and scraped.level is Level.PASS, scraped
        # Every rtpengine_ series the dashboard draws is one rtpengine serves.
        asked = {name for expr in queries() for name in RTPENGINE_METRIC.findall(expr)}
        assert asked and not asked - names(during), asked - names(during)
        command(*ng, {"command": "delete", "call-id": "metrics-1", "delete-delay": 0})
        after = parse_exposition(fetch_metrics(cfg.media.rtpengine.metrics_listen or ""))
        assert value(after, "rtpengine_sessions", type="own") == 0
        assert value(after, "rtpengine_closed_sessions_total", reason="terminated") == 1
        assert value(after, "rtpengine_packets_total", type="userspace") >= 40
    finally:
        meta.close()
        business.close()
        rtpengine.stop()
    stopped = media_findings(cfg)
    assert stopped[0].level is Level.FAIL  # ng gone too: doctor says so first

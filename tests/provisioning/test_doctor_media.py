"""doctor's media finding: with rtpengine as the anchor, a silent or foreign ng socket fails."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from provisioning.doctor import Level, media_findings
from siteconfig.model import SiteConfig
from tests.test_render import example_with


@pytest.fixture
def responder() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP socket that answers the next datagram with what the test puts in the list."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    replies: list[bytes] = []

    def serve() -> None:
        sock.settimeout(5)
        try:
            data, peer = sock.recvfrom(4096)
        except OSError:
            return
        cookie = data.split(b" ", 1)[0]
        sock.sendto(cookie + b" " + replies[0], peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], replies
    sock.close()
    thread.join(timeout=5)


def config(port: int) -> SiteConfig:
    return example_with({"media": {"anchor": "rtpengine",
                                   "rtpengine": {"ng_listen": f"127.0.0.1:{port}"}}})


def test_freeswitch_anchor_needs_no_rtpengine() -> None:
    (finding,) = media_findings(example_with({"media": {"anchor": "freeswitch"}}))
    assert finding.level is Level.PASS and "patch 0001" in finding.cause


def test_pong_passes(responder: tuple[int, list[bytes]]) -> None:
    port, replies = responder
    replies.append(b"d6:result4:ponge")
    (finding,) = media_findings(config(port))
    assert finding.level is Level.PASS


def test_a_foreign_answer_fails(responder: tuple[int, list[bytes]]) -> None:
    port, replies = responder
    replies.append(b"d6:result5:errore")
    (finding,) = media_findings(config(port))
    assert finding.level is Level.FAIL and "not pong" in finding.cause


def test_silence_fails_with_what_it_means() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))  # bound, never answers
        (finding,) = media_findings(config(quiet.getsockname()[1]))
    assert finding.level is Level.FAIL
    assert "did not answer" in finding.cause and "rtpengine_unreachable" in finding.cause

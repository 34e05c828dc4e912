"""rtpengine's own Prometheus endpoint ([media.rtpengine] metrics_listen): read once, by doctor.

rtpengine (10.5 in Debian 12) serves ``GET /metrics`` on its HTTP listener (``listen-http``) with
its session, packet, error, MOS and transcoding counters, so nothing of ours relays them:
Prometheus scrapes rtpengine itself. Doctor only checks that the endpoint answers as rtpengine.
"""

from __future__ import annotations

import http.client

from siteconfig.listen_address import parse_listen_address

MARKER = "rtpengine_sessions"
"""A gauge rtpengine 10.5 always serves (own/foreign sessions): the answer is rtpengine's."""


class MetricsError(Exception):
    """The endpoint did not answer, or not as rtpengine's /metrics."""


def fetch_metrics(listen: str, timeout_s: float = 2.0) -> str:
    """The text of ``GET http://listen/metrics``; MetricsError when it is not rtpengine's."""
    host, port = parse_listen_address(listen)
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read(1 << 20).decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException) as error:
        raise MetricsError(f"GET /metrics on {listen}: {error or type(error).__name__}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise MetricsError(f"GET /metrics on {listen}: HTTP {response.status}")
    if MARKER not in body:
        raise MetricsError(f"GET /metrics on {listen}: no {MARKER} in the answer (not rtpengine?)")
    return body

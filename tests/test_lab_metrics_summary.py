"""`make lab`'s closing check: both endpoints' calls compared with the calls placed."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab.metrics_scrape import parse_exposition, value
from lab.metrics_summary import summarize

EDGE = """# TYPE wasip_edge_calls_total counter
wasip_edge_calls_total{direction="uic", outcome="answered"} 2 1795946042371
wasip_edge_calls_total{direction="bic", outcome="declined"} 1 1795946042371
wasip_edge_calls_total{direction="bic", outcome="daily_limit"} 0 1795946042371
wasip_edge_digest_total{result="accepted"} 2
wasip_edge_shmem_free_size 60000000 1795946042371
wasip_edge_tls_opened_connections 1
"""
ESL = """wasip_esl_calls_total{direction="uic",outcome="answered"} 2.0
wasip_esl_calls_total{direction="bic",outcome="declined"} 1.0
wasip_esl_calls_active{direction="uic"} 0.0
wasip_esl_uic_setup_seconds_bucket{le="0.01"} 1.0
wasip_esl_uic_setup_seconds_bucket{le="0.05"} 2.0
wasip_esl_uic_setup_seconds_bucket{le="+Inf"} 2.0
"""


@pytest.fixture
def endpoints() -> Iterator[dict[str, str]]:
    pages = {"/edge": EDGE, "/esl": ESL}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"edge": f"{base}/edge", "esl": f"{base}/esl", "missing": f"{base}/nothing"}
    finally:
        server.shutdown()
        server.server_close()


def test_kamailios_format_is_read() -> None:
    samples = parse_exposition(EDGE)
    assert value(samples, "wasip_edge_calls_total", direction="uic", outcome="answered") == 2
    assert value(samples, "wasip_edge_shmem_free_size") == 60000000


def test_counts_matching_the_calls_pass(endpoints: dict[str, str]) -> None:
    expected = Counter({("uic", "answered"): 2, ("bic", "declined"): 1})
    summary = summarize(endpoints["edge"], endpoints["esl"], expected)
    assert summary.passed, summary.problems
    assert "edge " + endpoints["edge"] + ": calls bic declined 1, uic answered 2" in summary.lines
    assert any("setup p50 <= 10 ms, p99 <= 50 ms" in line for line in summary.lines)


def test_a_call_the_metrics_missed_fails_the_check(endpoints: dict[str, str]) -> None:
    expected = Counter({("uic", "answered"): 3, ("bic", "declined"): 1})
    summary = summarize(endpoints["edge"], endpoints["esl"], expected)
    assert not summary.passed
    assert summary.problems[0].startswith("edge counted bic declined 1, uic answered 2; the lab "
                                          "placed bic declined 1, uic answered 3")
    assert summary.problems[1].startswith("wa-esl counted")


def test_an_endpoint_that_does_not_answer_fails_the_check(endpoints: dict[str, str]) -> None:
    summary = summarize(endpoints["missing"], endpoints["esl"], Counter())
    assert not summary.passed and "HTTP 404" in summary.problems[0]

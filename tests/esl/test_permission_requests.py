"""The permission requests sent, counted for wa-esl's metrics: recorded in the CDR database
(tests/provisioning/test_permission_request_log.py: by `provision permission request`), read
by wa-esl's /metrics from the file at scrape time with Meta's replies; a retry of the same
message counts once, and an unreadable file makes the metric absent rather than a made-up 0."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from esl.call_permissions import CallPermission, CallPermissionStore
from esl.permission_requests import PermissionRequestLog, permission_counts
from esl.prometheus import ControllerMetrics

BUSINESS = "+15550100001"
USER = "+15551230000"


def scraped(metrics: ControllerMetrics) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name.startswith("wasip_esl_permission")}


def test_a_request_is_counted_once_by_message_id(tmp_path: Path) -> None:
    log = PermissionRequestLog(tmp_path / "cdr.sqlite3")
    try:
        assert log.record("wamid.1", BUSINESS, USER[1:], 1_700_000_000)
        assert not log.record("wamid.1", BUSINESS, USER[1:], 1_700_000_005)  # the same message
        assert log.record("wamid.2", BUSINESS, USER[1:], 1_700_000_100)
        assert log.last_sent(BUSINESS, USER[1:]) == 1_700_000_100
        assert log.last_sent(BUSINESS, "15550000000") is None
    finally:
        log.close()
    assert permission_counts(tmp_path / "cdr.sqlite3") == (2, 0)


def test_metrics_read_requests_and_replies_from_the_database(tmp_path: Path) -> None:
    database = tmp_path / "cdr.sqlite3"
    metrics = ControllerMetrics()
    metrics.count_permission_requests(database)
    assert scraped(metrics) == {}  # no file yet: absent, not 0
    sqlite3.connect(database).close()  # an empty database: no tables yet
    assert scraped(metrics) == {"wasip_esl_permission_requests_sent_total": 0.0,
                                "wasip_esl_permission_replies_received_total": 0.0}
    log = PermissionRequestLog(database)
    log.record("wamid.1", BUSINESS, USER[1:], 1_700_000_000)
    log.close()
    store = CallPermissionStore(database)
    reply = CallPermission(BUSINESS, USER[1:], "granted", 1_700_600_000, False, "user_action",
                           "webhook", 1_700_000_060)
    assert store.record(reply, event_id="wamid.reply")
    assert not store.record(reply, event_id="wamid.reply")  # Meta's retry
    store.close()
    assert scraped(metrics) == {"wasip_esl_permission_requests_sent_total": 1.0,
                                "wasip_esl_permission_replies_received_total": 1.0}


@pytest.mark.parametrize("garbage", [b"not a database at all, just text" * 64])
def test_an_unreadable_file_is_an_error_for_the_scrape(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / "cdr.sqlite3").write_bytes(garbage)
    with pytest.raises(sqlite3.Error):
        permission_counts(tmp_path / "cdr.sqlite3")

"""The permission store: newest wins, Meta's retries count once, two processes share the file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from esl.call_permissions import CallPermission, CallPermissionStore, PermissionStoreError

NUMBER = "+15550100001"
USER = "15551234567"


def permission(status: str = "granted", *, at: int = 1_000, expires: int | None = 2_000,
               permanent: bool = False, source: str = "webhook") -> CallPermission:
    return CallPermission(NUMBER, USER, status, expires, permanent, "user_action", source, at)


def test_usable_only_while_granted_and_unexpired() -> None:
    assert permission().usable(1_999)
    assert not permission().usable(2_000)
    assert permission(expires=None, permanent=True).usable(10**12)
    assert not permission("rejected").usable(1_500)
    assert not permission("no_permission", expires=None).usable(1_500)


def test_round_trip_and_newest_wins(tmp_path: Path) -> None:
    store = CallPermissionStore(tmp_path / "cdr.sqlite")
    assert store.current(NUMBER, USER) is None
    assert store.record(permission(at=1_000))
    assert store.current(NUMBER, USER) == permission(at=1_000)
    assert store.record(permission("rejected", at=1_100, expires=None))
    # A slower, older answer (a Graph lookup that started before the reply) does not win.
    assert store.record(permission("granted", at=1_050, source="graph"))
    current = store.current(NUMBER, USER)
    assert current is not None and current.status == "rejected"


def test_retry_with_same_event_id_is_seen_once(tmp_path: Path) -> None:
    store = CallPermissionStore(tmp_path / "cdr.sqlite")
    assert store.record(permission(at=1_000), event_id="wamid.A")
    assert not store.record(permission("rejected", at=1_200), event_id="wamid.A")
    current = store.current(NUMBER, USER)
    assert current is not None and current.status == "granted"


def test_bad_status_refused_and_nothing_written(tmp_path: Path) -> None:
    store = CallPermissionStore(tmp_path / "cdr.sqlite")
    with pytest.raises(PermissionStoreError):
        store.record(permission("maybe"), event_id="wamid.B")
    assert store.record(permission(), event_id="wamid.B")  # the id was not burnt


def test_waits_for_the_other_writers_lock(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    store = CallPermissionStore(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        assert store.record(permission(), event_id="wamid.C")  # waits instead of failing
    finally:
        release.join()
    assert store.current(NUMBER, USER) is not None

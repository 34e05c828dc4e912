"""The SQLite credential store: file mode, write outcomes, HA1 digests, atomic batches."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from provisioning import credential_sql
from provisioning.credential_store import (
    META_REALM,
    Credential,
    CredentialStore,
    StoreError,
    WriteOutcome,
    credential_for,
    ha1,
    open_store,
)

REALM = "sip.example.com"
FIRST = "+15550100001"
SECOND = "+15550100002"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "lib" / "wa-sip" / "credentials.sqlite"


@pytest.fixture
def store(store_path: Path) -> Iterator[CredentialStore]:
    opened = open_store(store_path)
    try:
        yield opened
    finally:
        opened.close()


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read through a second connection: what Kamailio (or a crash survivor) would see."""
    connection = sqlite3.connect(path)
    try:
        return list(connection.execute(sql).fetchall())
    finally:
        connection.close()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_store_file_is_created_0600_with_its_parents(store: CredentialStore, store_path: Path) -> None:
    assert store_path.is_file()
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600
    assert store.path == store_path


def test_wal_side_files_are_not_world_readable(store: CredentialStore, store_path: Path) -> None:
    store.put(credential_for(FIRST, "pw", REALM), REALM)
    side_files = [p for p in store_path.parent.iterdir() if p != store_path]
    assert side_files, "WAL mode should leave -wal/-shm files while the store is open"
    for path in side_files:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_existing_store_keeps_its_mode_and_data(store_path: Path) -> None:
    first = open_store(store_path)
    first.put(credential_for(FIRST, "pw", REALM), REALM)
    first.close()
    again = open_store(store_path)
    try:
        assert again.get(FIRST) == credential_for(FIRST, "pw", REALM)
    finally:
        again.close()
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


def test_ha1_matches_md5_of_digits_realm_password() -> None:
    credential = credential_for(FIRST, "s3cret:pw", REALM)
    assert credential.business_number == FIRST
    assert credential.ha1 == md5(f"15550100001:{REALM}:s3cret:pw")
    assert credential.ha1_meta == md5("15550100001:wa.meta.vc:s3cret:pw")
    assert META_REALM == "wa.meta.vc"
    assert ha1("u", "r", "p") == md5("u:r:p")
    assert credential.ha1 != credential.ha1_meta
    assert credential.ha1_meta_sha256 == hashlib.sha256(
        b"15550100001:wa.meta.vc:s3cret:pw").hexdigest()
    assert ha1("u", "r", "p", "SHA-256") == hashlib.sha256(b"u:r:p").hexdigest()


def test_stored_keys_are_what_kamailio_reads(store: CredentialStore, store_path: Path) -> None:
    store.put(credential_for(FIRST, "pw", REALM), REALM)
    assert sorted(rows(store_path, "SELECT key_name, key_value, key_type, value_type FROM wa_creds")) == [
        ("15550100001:ha1", md5(f"15550100001:{REALM}:pw"), 0, 0),
        ("15550100001:ha1_meta", md5("15550100001:wa.meta.vc:pw"), 0, 0),
        ("15550100001:ha1_meta_sha256",
         hashlib.sha256(b"15550100001:wa.meta.vc:pw").hexdigest(), 0, 0),
    ]
    assert rows(store_path, "SELECT business_number, realm, meta_realm FROM wa_credential_meta") == [
        (FIRST, REALM, "wa.meta.vc")]


def test_put_created_unchanged_updated(store: CredentialStore, store_path: Path) -> None:
    assert store.get(FIRST) is None
    assert store.put(credential_for(FIRST, "pw-1", REALM), REALM) is WriteOutcome.CREATED
    assert store.put(credential_for(FIRST, "pw-1", REALM), REALM) is WriteOutcome.UNCHANGED
    assert store.history(FIRST) == []
    assert store.put(credential_for(FIRST, "pw-2", REALM), REALM, reason="rotate") is WriteOutcome.UPDATED
    assert store.get(FIRST) == credential_for(FIRST, "pw-2", REALM)

    history = store.history(FIRST)
    assert len(history) == 1
    retired_at, reason = history[0]
    assert reason == "rotate"
    assert retired_at[:2] == "20" and retired_at.endswith("+00:00")
    old = credential_for(FIRST, "pw-1", REALM)
    assert not any(secret in field for field in history[0]
                   for secret in ("pw-1", "pw-2", old.ha1, old.ha1_meta))
    assert len(rows(store_path, "SELECT * FROM wa_creds")) == 3


def test_realm_change_is_an_update(store: CredentialStore) -> None:
    store.put(credential_for(FIRST, "pw", REALM), REALM)
    outcome = store.put(credential_for(FIRST, "pw", "sip2.example.com"), "sip2.example.com")
    assert outcome is WriteOutcome.UPDATED


def test_no_plain_password_on_disk(store: CredentialStore, store_path: Path) -> None:
    store.put(credential_for(FIRST, "plain-text-password-x", REALM), REALM)
    store.put(credential_for(FIRST, "plain-text-password-y", REALM), REALM)
    store.close()
    for path in store_path.parent.iterdir():
        assert b"plain-text-password" not in path.read_bytes(), path


def test_put_many_reports_each_number(store: CredentialStore) -> None:
    store.put(credential_for(FIRST, "pw", REALM), REALM)
    outcomes = store.put_many([credential_for(FIRST, "pw", REALM),
                               credential_for(SECOND, "pw", REALM)], REALM)
    assert outcomes == {FIRST: WriteOutcome.UNCHANGED, SECOND: WriteOutcome.CREATED}


def test_put_many_is_atomic_on_a_database_error(store: CredentialStore, store_path: Path) -> None:
    broken = Credential(SECOND, cast(str, None), "x")  # NOT NULL key_value: the second write fails
    with pytest.raises(StoreError) as caught:
        store.put_many([credential_for(FIRST, "pw", REALM), broken], REALM)
    assert str(store_path) in str(caught.value)
    assert store.get(FIRST) is None
    assert rows(store_path, "SELECT * FROM wa_creds") == []
    assert rows(store_path, "SELECT * FROM wa_credential_meta") == []
    # The store is still usable afterwards.
    assert store.put(credential_for(FIRST, "pw", REALM), REALM) is WriteOutcome.CREATED


def test_put_many_is_atomic_on_any_exception(store: CredentialStore, store_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store.put(credential_for(FIRST, "old", REALM), REALM)
    real_now = credential_sql._now
    calls: list[str] = []

    def interrupted_now() -> str:
        """FIRST's history and meta rows are written; Ctrl-C lands on SECOND's meta row."""
        calls.append("now")
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_now()

    monkeypatch.setattr(credential_sql, "_now", interrupted_now)
    with pytest.raises(KeyboardInterrupt):
        store.put_many([credential_for(FIRST, "new", REALM), credential_for(SECOND, "pw", REALM)], REALM)
    assert len(calls) == 3
    monkeypatch.undo()
    assert store.get(FIRST) == credential_for(FIRST, "old", REALM)
    assert store.history(FIRST) == []
    assert rows(store_path, "SELECT business_number FROM wa_credential_meta") == [(FIRST,)]


def test_remove(store: CredentialStore, store_path: Path) -> None:
    store.put_many([credential_for(FIRST, "pw", REALM), credential_for(SECOND, "pw", REALM)], REALM)
    assert store.remove(FIRST) is True
    assert store.get(FIRST) is None
    assert store.get(SECOND) == credential_for(SECOND, "pw", REALM)
    assert sorted(str(r[0]) for r in rows(store_path, "SELECT key_name FROM wa_creds")) == [
        "15550100002:ha1", "15550100002:ha1_meta", "15550100002:ha1_meta_sha256"]
    assert rows(store_path, "SELECT business_number FROM wa_credential_meta") == [(SECOND,)]
    assert store.remove(FIRST) is False


def test_store_under_a_regular_file_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker / "credentials.sqlite"
    with pytest.raises(StoreError) as caught:
        open_store(path)
    assert str(path) in str(caught.value)


def test_store_that_is_not_sqlite_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "credentials.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as caught:
        open_store(path)
    assert str(path) in str(caught.value)


def test_write_to_a_closed_store_is_a_store_error(store: CredentialStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.put(credential_for(FIRST, "pw", REALM), REALM)

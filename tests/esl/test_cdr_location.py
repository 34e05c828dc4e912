"""`[esl] cdr_db` takes a SQLite path or a PostgreSQL URL; `[esl] node` names the media node.

No server needed: what the site config accepts, refuses (naming the key), and never prints.
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from esl.cdr import CallRecord, CdrStore
from esl.site import controller_settings, load_controller_settings
from siteconfig.controller import ControllerSettings, SettingsError, default_node_name
from siteconfig.database_url import PostgresUrl
from siteconfig.model import ConfigError, SiteConfig, parse_config
from tests.test_config import CONFIG_PATH, site_text

SECRET = "s3cr3t-pw"


def esl(**changes: object) -> str:
    return site_text({"esl": changes})


def test_a_relative_path_is_the_config_folders_sqlite_file() -> None:
    cfg = parse_config(esl(cdr_db="cdr.sqlite3"), CONFIG_PATH)
    assert cfg.esl.cdr_db == CONFIG_PATH.parent / "cdr.sqlite3"
    assert cfg.esl.node == default_node_name() and cfg.esl.node


def test_a_postgres_url_is_kept_whole_and_prints_without_its_password() -> None:
    url = f"postgresql://wasip:{SECRET}@db.internal:5432/wa"
    cfg = parse_config(esl(cdr_db=url, node="media-2", node_lost_after_s=20), CONFIG_PATH)
    location = cfg.esl.cdr_db
    assert isinstance(location, PostgresUrl) and location.secret_url == url
    assert str(location) == "postgresql://wasip:***@db.internal:5432/wa"
    assert SECRET not in f"{location} {location!r} {cfg.esl!r}"
    settings = controller_settings(cfg)
    assert settings.cdr_db == location and settings.node == "media-2"
    assert settings.node_lost_after_s == 20
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(("value", "words"), [
    (f"postgresql://wasip:{SECRET}@db.internal", "no database name"),
    (f"postgresql://wasip:{SECRET}@:5432/wa", "no host"),
    (f"postgresql://wasip:{SECRET}@db:99999/wa", "is not a TCP port"),
    ("postgresql://db.internal/wa", "no user"),
    ("mysql://wasip@db/wa", "mysql:// is not supported"),
    ("sqlite:///var/lib/cdr.sqlite3", "sqlite:// is not supported"),
])
def test_a_bad_location_names_the_key_and_never_the_password(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(esl(cdr_db=value), CONFIG_PATH)
    (problem,) = caught.value.problems
    assert problem.startswith("esl.cdr_db: ") and words in problem, problem
    assert SECRET not in str(caught.value)
    with pytest.raises(ValidationError) as raw:  # pydantic's own text hides the input too
        SiteConfig.model_validate(tomllib.loads(esl(cdr_db=value)))
    assert SECRET not in str(raw.value)


@pytest.mark.parametrize("node", ["", "media 1", "-media", "x" * 64, "média"])
def test_a_bad_node_name_is_refused(node: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(esl(node=node), CONFIG_PATH)
    assert caught.value.problems[0].startswith("esl.node: ")


def test_an_esl_only_file_takes_the_url_too(tmp_path: Path) -> None:
    path = tmp_path / "esl.toml"
    path.write_text(f'cdr_db = "postgres://wasip:{SECRET}@10.0.0.9/wa"\nnode = "media1"\n',
                    encoding="utf-8")
    settings = load_controller_settings(path)
    assert isinstance(settings.cdr_db, PostgresUrl) and settings.node == "media1"
    path.write_text(f'cdr_db = "postgresql://wasip:{SECRET}@10.0.0.9"\n', encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_controller_settings(path)
    assert "cdr_db" in str(caught.value) and SECRET not in str(caught.value)


def test_the_url_round_trips_through_the_settings_model() -> None:
    url = f"postgresql://wasip:{SECRET}@db/wa?sslmode=require"
    settings = ControllerSettings.model_validate({"cdr_db": url})
    assert ControllerSettings.model_validate(settings.model_dump()).cdr_db == settings.cdr_db


def test_sqlite_keeps_the_node_and_heartbeat_too(tmp_path: Path) -> None:
    """One node on its own file: same columns, same heartbeat (call show reads it alike)."""
    path = tmp_path / "cdr.sqlite3"
    CdrStore(path).close()
    old = sqlite3.connect(path)  # made a database from before nodes were recorded
    old.execute("DROP INDEX cdr_active")
    old.execute("ALTER TABLE cdr DROP COLUMN node")
    old.execute("DROP TABLE esl_node")
    old.execute("INSERT INTO cdr (call_uuid) VALUES ('older')")
    old.commit()
    old.close()
    store = CdrStore(path, node="media1")
    try:
        store.upsert(CallRecord(call_uuid="new", media_timeout=True))
        assert (store.get("new") or CallRecord("x")).node == "media1"
        assert (store.get("older") or CallRecord("x", node="?")).node is None
        assert sorted(store.active_calls()) == ["new", "older"]  # no node: this node's
        store.heartbeat(esl_up=True)
        (status,) = store.nodes().values()
        assert status.node == "media1" and status.esl_up and 0 <= status.age_s < 5
        assert status.explain(15) is None and "lost" in (status.explain(-1) or "")
    finally:
        store.close()

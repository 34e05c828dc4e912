"""The [graph] section and the PostgreSQL store URL in the site config."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioning.graph_token import TokenError, load_token
from siteconfig.model import ConfigError, load_config
from tests.provisioning.conftest import site_toml


@pytest.mark.parametrize(("old", "new", "key"), [
    ('api_version = "v21.0"', 'api_version = "v16.0"', "graph.api_version"),
    ('api_version = "v21.0"', 'api_version = "21"', "graph.api_version"),
    ('base_url = "http://127.0.0.1:1"', 'base_url = "ftp://graph"', "graph.base_url"),
    ("concurrency = 8", 'app_id = "my-app"', "graph.app_id"),
    ("concurrency = 8", "concurrency = 0", "graph.concurrency"),
    ("concurrency = 8", 'tokn_env = "X"', "graph.tokn_env")])
def test_bad_graph_settings_name_the_key(tmp_path: Path, old: str, new: str, key: str) -> None:
    path = site_toml(tmp_path, "http://127.0.0.1:1")
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems[0].startswith(f"{key}: ")


def test_postgres_store_url_and_relative_token_file(tmp_path: Path) -> None:
    cfg = load_config(site_toml(tmp_path, "http://127.0.0.1:1", graph='token_file = "secrets/token"',
                                store="postgresql://wasip:pw@db:5432/wa"))
    assert cfg.credentials.is_postgres
    assert cfg.credentials.kamailio_db_url() == "postgres://wasip:pw@db:5432/wa"
    assert cfg.graph.token_file == tmp_path.resolve() / "secrets" / "token"


def test_token_sources(tmp_path: Path) -> None:
    assert load_token("WA_T", None, {"WA_T": " tok \n"}) == ("tok", [])
    with pytest.raises(TokenError) as raised:
        load_token("WA_T", None, {})
    assert "WA_T" in str(raised.value)
    open_file = tmp_path / "token"
    open_file.write_text("secret-token")
    open_file.chmod(0o644)
    token, warnings = load_token("WA_T", open_file, {})
    assert token == "secret-token" and "chmod 600" in warnings[0]
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(TokenError, match="empty"):
        load_token("WA_T", empty, {})
    with pytest.raises(TokenError) as missing:
        load_token("WA_T", tmp_path / "nope", {})
    assert "nope" in str(missing.value)

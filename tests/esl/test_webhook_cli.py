"""``wa-esl webhook`` refuses to start without what it needs, in one line, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from esl.cli import app
from esl.site import WebhookSetupError, webhook_config

SITE = """
[site]
sip_domain = "sip.example.com"
[tls]
certificate = "fullchain.pem"
private_key = "privkey.pem"
[freeswitch]
[[freeswitch.sets]]
id = 1
nodes = [{ uri = "sip:127.0.0.1:5080" }]
[[numbers]]
business_number = "+15550100001"
phone_number_id = "106540352242922"
[esl]
cdr_db = "cdr.sqlite3"
"""


def site(tmp_path: Path, webhook: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE + webhook, encoding="utf-8")
    return path


def test_no_listen_is_a_clear_refusal(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["webhook", "--config", str(site(tmp_path, ""))])
    assert result.exit_code == 2
    assert "[webhook] listen is not set" in result.output
    assert "Traceback" not in result.output


def test_missing_secret_names_the_variable_never_a_value(tmp_path: Path) -> None:
    path = site(tmp_path, '[webhook]\nlisten = "127.0.0.1:8443"\n')
    with pytest.raises(WebhookSetupError, match="WA_APP_SECRET"):
        webhook_config(path, environ={"WA_WEBHOOK_VERIFY_TOKEN": "t"})
    with pytest.raises(WebhookSetupError, match="WA_WEBHOOK_VERIFY_TOKEN"):
        webhook_config(path, environ={"WA_APP_SECRET": "s3cret-value"})


def test_secrets_from_files_and_numbers_by_id(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret-value\n")
    (tmp_path / "secret").chmod(0o644)
    (tmp_path / "token").write_text("verify-me\n")
    (tmp_path / "token").chmod(0o600)
    path = site(tmp_path, '[webhook]\nlisten = "127.0.0.1:8443"\napp_secret_file = "secret"\n'
                          'verify_token_file = "token"\n')
    setup = webhook_config(path, environ={})
    assert (setup.config.app_secret, setup.config.verify_token) == ("s3cret-value", "verify-me")
    assert setup.config.numbers_by_id == {"106540352242922": "+15550100001"}
    assert setup.config.database == tmp_path / "cdr.sqlite3"
    assert setup.listen == ("127.0.0.1", 8443)
    assert any("readable by others" in w for w in setup.warnings)
    assert not any("s3cret" in w for w in setup.warnings)

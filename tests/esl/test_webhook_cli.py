"""``wa-esl webhook`` refuses to start without what it needs, in one line, naming the key."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from esl.call_permissions import CallPermissionStore
from esl.cli import _webhook, app
from esl.site import WebhookSetupError, webhook_config
from esl.webhook_signature import HEADER, sign
from lab.graph_standin.webhook_post import call_permission_reply

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


async def test_the_service_serves_posts_and_metrics_and_stops_on_sigterm(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The command's serving path (port 0 in place of the config's port) never logs a secret."""
    path = site(tmp_path, '[webhook]\nlisten = "127.0.0.1:8443"\nmetrics_listen = "127.0.0.1:9095"\n')
    setup = webhook_config(path, environ={"WA_APP_SECRET": "s3cret-value",
                                          "WA_WEBHOOK_VERIFY_TOKEN": "verify-me"})
    setup = dataclasses.replace(setup, listen=("127.0.0.1", 0), metrics_listen=("127.0.0.1", 0))
    caplog.set_level(logging.INFO)
    service = asyncio.create_task(_webhook(setup))
    ports: dict[str, int] = {}
    for _ in range(200):  # bounded: 10 s
        for record in caplog.records:
            found = re.search(r"(webhook receiver|metrics) on http://127\.0\.0\.1:(\d+)/",
                              record.getMessage())
            if found:
                ports[found[1]] = int(found[2])
        if len(ports) == 2 or service.done():
            break
        await asyncio.sleep(0.05)
    assert len(ports) == 2, caplog.text
    body = call_permission_reply(message_id="wamid.S", phone_number_id="106540352242922",
                                 business_number="+15550100001", user_wa_id="15551234567")
    url = f"http://127.0.0.1:{ports['webhook receiver']}/webhook"
    async with httpx.AsyncClient(timeout=10) as client:
        stored = await client.post(url, content=body, headers={HEADER: sign(body, "s3cret-value")})
        forged = await client.post(url, content=body, headers={HEADER: sign(body, "guess")})
        metrics = await client.get(f"http://127.0.0.1:{ports['metrics']}/metrics")
    assert (stored.status_code, forged.status_code) == (200, 403)
    assert 'wasip_webhook_refused_total{reason="forged"} 1.0' in metrics.text
    assert 'wasip_webhook_permission_replies_total{response="accept"} 1.0' in metrics.text
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(service, 10)
    assert CallPermissionStore(tmp_path / "cdr.sqlite3").current(
        "+15550100001", "15551234567") is not None
    assert "s3cret" not in caplog.text and "verify-me" not in caplog.text

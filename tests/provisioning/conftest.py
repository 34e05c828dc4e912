"""Fixtures for the Graph-facing provision commands: the Graph stand-in on loopback and a site
config pointing at it, with the credential store in the test's own folder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lab.graph_standin import GraphStandin
from provisioning.cli import app

TOKEN = "EAAG-test-token-for-app-one-0123456789"
OTHER_TOKEN = "EAAG-test-token-for-app-two-9876543210"
APP_ID = "700000000000001"
OTHER_APP_ID = "700000000000002"
SIP_DOMAIN = "sip.example.com"
NUMBERS = [("+15550100001", "100000000000001"), ("+15550100002", "100000000000002"),
           ("+15550100003", "100000000000003")]


@pytest.fixture
def standin() -> Iterator[GraphStandin]:
    with GraphStandin({TOKEN: APP_ID, OTHER_TOKEN: OTHER_APP_ID}) as server:
        for _, phone_number_id in NUMBERS:
            server.state.add_number(phone_number_id)
        yield server


def site_toml(folder: Path, base_url: str, numbers: list[tuple[str, str]] | None = None,
              graph: str = "", number_extra: dict[str, str] | None = None, store: str | None = None) -> Path:
    """A site config (from the example's shape) whose Graph is the stand-in."""
    entries = []
    for business_number, phone_number_id in numbers if numbers is not None else NUMBERS:
        extra = (number_extra or {}).get(business_number, "")
        entries.append(f'[[numbers]]\nbusiness_number = "{business_number}"\n'
                       f'phone_number_id = "{phone_number_id}"\n{extra}\n')
    store_url = store or f"sqlite:///{folder / 'store' / 'credentials.sqlite'}"
    text = f"""
[site]
sip_domain = "{SIP_DOMAIN}"

[tls]
certificate = "/etc/wa-sip/tls/fullchain.pem"
private_key = "/etc/wa-sip/tls/privkey.pem"

[credentials]
store = "{store_url}"

[graph]
base_url = "{base_url}"
api_version = "v21.0"
concurrency = 8
timeout_s = 2.0
{graph}

[freeswitch]
[[freeswitch.sets]]
id = 1
nodes = [{{ uri = "sip:127.0.0.1:5080" }}]

{"".join(entries)}
"""
    path = folder / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def provision(*args: str, token: str | None = TOKEN, env: dict[str, str] | None = None) -> Run:
    """Run `provision ARGS` in-process, the token in WA_GRAPH_TOKEN (as an operator would)."""
    environment = {"WA_GRAPH_TOKEN": token or "", "COLUMNS": "200", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=environment)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run(result.exit_code, result.stdout, result.stderr)

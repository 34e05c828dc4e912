"""Where the Graph access token comes from: a file or an environment variable, never argv.

Command-line arguments are visible to every user on the machine (`ps`, /proc/*/cmdline) and end
up in shell history and cron mail, so `provision` accepts only a path or a variable name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from siteconfig.secret_source import SecretError, load_secret

DEFAULT_TOKEN_ENV = "WA_GRAPH_TOKEN"


TokenError = SecretError
"""No usable token; the message says where it was looked for (never the token itself)."""


def load_token(token_env: str, token_file: Path | None,
               environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Return (token, warnings): `token_file` first if given, else the variable `token_env`."""
    return load_secret(
        "Graph access token", token_env, token_file,
        "or graph.token_file in the site config, or pass --token-file PATH", environ)


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` (a last line of defence for error text from outside)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text

"""Where the Graph access token comes from: a file or an environment variable, never argv.

Command-line arguments are visible to every user on the machine (`ps`, /proc/*/cmdline) and end
up in shell history and cron mail, so `provision` accepts only a path or a variable name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

DEFAULT_TOKEN_ENV = "WA_GRAPH_TOKEN"


class TokenError(Exception):
    """No usable token; the message says where it was looked for (never the token itself)."""


def load_token(token_env: str, token_file: Path | None,
               environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Return (token, warnings): `token_file` first if given, else the variable `token_env`."""
    warnings: list[str] = []
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise TokenError(f"token file {token_file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise TokenError(f"token file {token_file}: not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"token file {token_file} is readable by others: chmod 600 it")
        if not token:
            raise TokenError(f"token file {token_file} is empty")
        _check_header_safe(token, f"token file {token_file}")
        return token, warnings
    token = (environ if environ is not None else os.environ).get(token_env, "").strip()
    if not token:
        raise TokenError(f"no Graph access token: set the environment variable {token_env} "
                         "or graph.token_file in the site config, or pass --token-file PATH")
    _check_header_safe(token, f"environment variable {token_env}")
    return token, warnings


def _check_header_safe(token: str, where: str) -> None:
    """The token goes into an HTTP header: one word of printable ASCII (never quoted back)."""
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise TokenError(f"{where}: the token must be one line of printable ASCII without spaces "
                         "(is it the right file or variable?)")


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret in `text` (a last line of defence for error text from outside)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text

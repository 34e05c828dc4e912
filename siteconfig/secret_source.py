"""Where a secret comes from: a file or an environment variable, never the command line.

Command-line arguments are visible to every user on the machine (`ps`, /proc/*/cmdline) and end
up in shell history and cron mail, so every secret the bundle takes (the Graph token, the app
secret that signs Meta's webhooks, the webhook verify token) is read here, from a path or a
variable name. In siteconfig because both `provision` and `wa-esl` read secrets.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path


class SecretError(Exception):
    """No usable secret; the message says where it was looked for (never the secret itself)."""


def load_secret(what: str, env_name: str, path: Path | None, missing_hint: str,
                environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """Return (secret, warnings) from the file `path` if given, else the variable `env_name`.

    One reader for every secret the bundle takes (the Graph token, the app secret that signs
    Meta's webhooks, the webhook verify token): never from argv, a file readable by others is
    warned about, and no message ever quotes the secret.
    """
    warnings: list[str] = []
    if path is not None:
        try:
            mode = path.stat().st_mode
            secret = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SecretError(f"{what} file {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise SecretError(f"{what} file {path}: not UTF-8 text") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.append(f"{what} file {path} is readable by others: chmod 600 it")
        if not secret:
            raise SecretError(f"{what} file {path} is empty")
        _check_header_safe(secret, f"{what} file {path}")
        return secret, warnings
    secret = (environ if environ is not None else os.environ).get(env_name, "").strip()
    if not secret:
        raise SecretError(f"no {what}: set the environment variable {env_name} {missing_hint}")
    _check_header_safe(secret, f"environment variable {env_name}")
    return secret, warnings


def _check_header_safe(token: str, where: str) -> None:
    """The token goes into an HTTP header: one word of printable ASCII (never quoted back)."""
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise SecretError(f"{where}: it must be one line of printable ASCII without spaces "
                         "(is it the right file or variable?)")

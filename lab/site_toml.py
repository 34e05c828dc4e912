"""Writing a site config back to TOML, so the lab can hand `wa-esl` a file as a user would.

The lab builds its site config as a dict (the user's file with ports and paths moved onto
loopback); `wa-esl run --config FILE` and `wa-esl originate --config FILE` read a file. The
standard library reads TOML but does not write it, and a site config only holds strings,
numbers, booleans, lists and tables, so every table is written inline: one line per top-level
key, which tomllib reads back to the same dict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def toml_value(value: object) -> str:
    """A TOML literal for the JSON-like values a site config holds (inline tables only)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(key)} = {toml_value(value)}\n" for key, value in data.items())


def write_site_toml(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as TOML to `path` (mode 0600: it holds the Event Socket password)."""
    staging = path.with_suffix(".tmp")
    staging.write_text(toml_text(data), encoding="utf-8")
    staging.chmod(0o600)
    staging.replace(path)
    return path

"""Where the Jinja2 templates and the credential schema live.

The bundle runs from its checkout (templates/ beside the Python packages); WA_SIP_TEMPLATES
points elsewhere for packaged installs.
"""

from __future__ import annotations

import os
from pathlib import Path

KEMI_DIR = Path(__file__).resolve().parent.parent / "kemi"


def templates_dir() -> Path:
    override = os.environ.get("WA_SIP_TEMPLATES")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "templates"


def credentials_schema() -> str:
    """The SQL that creates the credential store; shared by the renderer and the store."""
    return (templates_dir() / "kamailio" / "credentials-schema.sql").read_text(encoding="utf-8")

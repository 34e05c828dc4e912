"""Meta's webhook signature: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(body, app secret)>``.

Kept apart from the service so the one check every post passes through is small enough to read
at a glance and tested on its own (a missing, malformed, wrong-algorithm or forged header each
gives its own reason, which the service counts and logs without the header's content).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Hub-Signature-256"
PREFIX = "sha256="


def sign(body: bytes, app_secret: str) -> str:
    """The header value Meta sends for ``body`` (the lab's poster uses the same function)."""
    return PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(body: bytes, header: str | None, app_secret: str) -> str | None:
    """``None`` when ``header`` signs ``body`` with ``app_secret``; else the refusal reason."""
    if header is None:
        return "unsigned"
    if not header.startswith(PREFIX):
        return "malformed"
    given = header[len(PREFIX):].strip().lower()
    if len(given) != 64 or any(c not in "0123456789abcdef" for c in given):
        return "malformed"
    if not hmac.compare_digest(given, sign(body, app_secret)[len(PREFIX):]):
        return "forged"
    return None

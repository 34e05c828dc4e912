"""Which Kamailio binary the bundle runs: one answer for the lab, the tests, the benches and
`provision render --check`.

wa-sip needs Kamailio 6.0 or later (Debian 12's 5.6.3 crashes under a TLS scan with OpenSSL 3 and
lacks auth.pv_www_authenticate). `scripts/install-kamailio` puts 6.1.4 in /opt/kamailio when no
supported one is installed; this module looks in the same places, in the same order:
$WA_SIP_KAMAILIO, $KAMAILIO_PREFIX/sbin/kamailio (default /opt/kamailio), then `kamailio` on PATH.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

MINIMUM = (6, 0)
DEFAULT_PREFIX = "/opt/kamailio"
_VERSION = re.compile(r"^version: kamailio (\d+)\.(\d+)\.(\d+)", re.MULTILINE)


class KamailioNotFound(RuntimeError):
    """No supported Kamailio: the message says what was found and how to get one."""


def version_of(binary: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) that `binary -v` reports, or None when it does not run."""
    try:
        done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(done.stdout + done.stderr)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def candidates() -> list[str]:
    """Where to look, first match wins (mirrors scripts/install-kamailio)."""
    named = os.environ.get("WA_SIP_KAMAILIO")
    if named:
        return [named]  # a binary the user names is the only answer: never a silent fallback
    prefix = os.environ.get("KAMAILIO_PREFIX", DEFAULT_PREFIX)
    found = [str(Path(prefix) / "sbin" / "kamailio")]
    on_path = shutil.which("kamailio")
    if on_path:
        found.append(on_path)
    return found


@functools.cache
def kamailio_binary() -> str:
    """The path of a supported Kamailio binary; raises KamailioNotFound with what to do."""
    seen = []
    for binary in candidates():
        if not os.access(binary, os.X_OK):
            continue
        version = version_of(binary)
        if version is not None and version[:2] >= MINIMUM:
            return binary
        seen.append(f"{binary} ({'.'.join(map(str, version)) if version else 'does not run'})")
    found = f"found only {', '.join(seen)}; " if seen else ""
    raise KamailioNotFound(
        f"no Kamailio 6.0 or later: {found}run scripts/install-kamailio (make test does), install "
        "Kamailio's own 6.1 packages, or set WA_SIP_KAMAILIO to a kamailio binary")


def kamailio_available() -> bool:
    """For tests that skip without one (make test installs it, so CI never skips)."""
    try:
        kamailio_binary()
    except KamailioNotFound:
        return False
    return True

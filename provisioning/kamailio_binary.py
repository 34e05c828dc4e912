"""Which Kamailio binary the bundle runs: one answer for the lab, the tests, the benches and
`provision render --check`.

wa-sip needs Kamailio 6.0 or later (Debian 12's 5.6.3 crashes under a TLS scan with OpenSSL 3 and
lacks auth.pv_www_authenticate). `scripts/install-kamailio` puts 6.1.4 in /opt/kamailio when no
supported one is installed; this module looks in the same places, in the same order:
$WA_SIP_KAMAILIO, $KAMAILIO_PREFIX/sbin/kamailio (default /opt/kamailio), then `kamailio` on PATH.
"""

from __future__ import annotations

import functools
import re

from provisioning.installed_binary import InstalledPart, PartNotFound

MINIMUM = (6, 0)
DEFAULT_PREFIX = "/opt/kamailio"

KAMAILIO = InstalledPart(
    name="Kamailio", command="kamailio", binary_env="WA_SIP_KAMAILIO",
    prefix_env="KAMAILIO_PREFIX", default_prefix=DEFAULT_PREFIX, relative="sbin/kamailio",
    version_flag="-v",
    version_pattern=re.compile(r"^version: kamailio (\d+)\.(\d+)\.(\d+)", re.MULTILINE),
    minimum=MINIMUM,
    advice="run scripts/install-kamailio (make test does), install Kamailio's own 6.1 packages, "
           "or set WA_SIP_KAMAILIO to a kamailio binary")

KamailioNotFound = PartNotFound


def version_of(binary: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) that `binary -v` reports, or None when it does not run."""
    return KAMAILIO.version_of(binary)


def candidates() -> list[str]:
    """Where to look, first match wins (mirrors scripts/install-kamailio)."""
    return KAMAILIO.candidates()


@functools.cache
def kamailio_binary() -> str:
    """The path of a supported Kamailio binary; raises KamailioNotFound with what to do."""
    return KAMAILIO.find()


def kamailio_available() -> bool:
    """For tests that skip without one (make test installs it, so CI never skips)."""
    try:
        kamailio_binary()
    except KamailioNotFound:
        return False
    return True

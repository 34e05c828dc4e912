"""Which Kamailio binary the bundle runs: one answer for the lab, the tests, the benches and
`provision render --check`.

wa-sip runs on Kamailio 5.6 or later: Debian 12's packages (5.6.3), Debian 13's (6.0.1), or a
newer one the user installed (Kamailio's own repository deb.kamailio.org, a build of their own).
What 5.6 lacks (401 challenges, a tls module safe toward the Internet, a per-source connection
limit) is said by `scripts/install-kamailio` and covered outside Kamailio (README, "Supported
Kamailio"). This module looks in the same places, in the same order, as that script:
$WA_SIP_KAMAILIO (the only answer when set), $KAMAILIO_PREFIX/sbin/kamailio when set, `kamailio`
on PATH, then /usr/sbin/kamailio (Debian's packages; not on a non-root user's PATH).
"""

from __future__ import annotations

import functools
import re

from provisioning.installed_binary import InstalledPart, PartNotFound

MINIMUM = (5, 6)
DEBIAN_BINARY = "/usr/sbin/kamailio"

KAMAILIO = InstalledPart(
    name="Kamailio", command="kamailio", binary_env="WA_SIP_KAMAILIO",
    prefix_env="KAMAILIO_PREFIX", relative="sbin/kamailio", fallbacks=(DEBIAN_BINARY,),
    version_flag="-v",
    version_pattern=re.compile(r"^version: kamailio (\d+)\.(\d+)\.(\d+)", re.MULTILINE),
    minimum=MINIMUM,
    advice="run scripts/install-kamailio (make test does: it installs Debian's kamailio "
           "packages), or set WA_SIP_KAMAILIO to a kamailio binary or KAMAILIO_PREFIX to its "
           "install folder")

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
    """For tests that skip without one (make test installs Debian's, so CI never skips)."""
    try:
        kamailio_binary()
    except KamailioNotFound:
        return False
    return True

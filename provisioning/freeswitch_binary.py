"""Which FreeSWITCH binary the lab, the tests and the benches start.

Debian ships no FreeSWITCH; `scripts/install-freeswitch` puts one in /opt/freeswitch when none
is installed. This module looks in the same places, in the same order: $WA_SIP_FREESWITCH,
$FREESWITCH_PREFIX/bin/freeswitch (default /opt/freeswitch), then `freeswitch` on PATH.
"""

from __future__ import annotations

import functools
import re

from provisioning.installed_binary import InstalledPart, PartNotFound

FREESWITCH = InstalledPart(
    name="FreeSWITCH", command="freeswitch", binary_env="WA_SIP_FREESWITCH",
    prefix_env="FREESWITCH_PREFIX", default_prefix="/opt/freeswitch", relative="bin/freeswitch",
    version_flag="-version",
    version_pattern=re.compile(r"^FreeSWITCH version: (\d+)\.(\d+)\.(\d+)", re.MULTILINE),
    minimum=(1, 10),
    advice="run scripts/install-freeswitch (make test does), install SignalWire's FreeSWITCH "
           "packages, or set WA_SIP_FREESWITCH to a freeswitch binary")

FreeswitchNotFound = PartNotFound


@functools.cache
def freeswitch_binary() -> str:
    """The path of a FreeSWITCH binary that runs; raises FreeswitchNotFound with what to do."""
    return FREESWITCH.find()


def freeswitch_available() -> bool:
    """For tests that skip without one (make test installs it, so CI never skips)."""
    try:
        freeswitch_binary()
    except FreeswitchNotFound:
        return False
    return True

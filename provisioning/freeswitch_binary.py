"""Which FreeSWITCH binary the lab, the tests and the benches start.

FreeSWITCH is the user's: Debian ships none and wa-sip installs none. It comes from SignalWire's
packages (/usr/bin/freeswitch) or a build of the user's own (with patches/freeswitch/ applied for
DTLS numbers, recorded in <prefix>/share/wa-sip/freeswitch-patches: provisioning/freeswitch_patch.py).
`scripts/install-freeswitch` reports what it finds; this module looks in the same places, in the
same order: $WA_SIP_FREESWITCH (the only answer when set), $FREESWITCH_PREFIX/bin/freeswitch when
set, `freeswitch` on PATH, then /usr/bin/freeswitch, /usr/local/freeswitch/bin/freeswitch and
/opt/freeswitch/bin/freeswitch. Where none is found, the tests that need one are skipped
(marker `needs_freeswitch`, counted in the test summary).
"""

from __future__ import annotations

import functools
import re

from provisioning.installed_binary import InstalledPart, PartNotFound

FREESWITCH = InstalledPart(
    name="FreeSWITCH", command="freeswitch", binary_env="WA_SIP_FREESWITCH",
    prefix_env="FREESWITCH_PREFIX", relative="bin/freeswitch",
    fallbacks=("/usr/bin/freeswitch", "/usr/local/freeswitch/bin/freeswitch",
               "/opt/freeswitch/bin/freeswitch"),
    version_flag="-version",
    version_pattern=re.compile(r"^FreeSWITCH version: (\d+)\.(\d+)\.(\d+)", re.MULTILINE),
    minimum=(1, 10),
    advice="install SignalWire's FreeSWITCH packages or your own build, and name it with "
           "FREESWITCH_PREFIX or WA_SIP_FREESWITCH (scripts/install-freeswitch says what it finds)")

FreeswitchNotFound = PartNotFound


@functools.cache
def freeswitch_binary() -> str:
    """The path of a FreeSWITCH binary that runs; raises FreeswitchNotFound with what to do."""
    return FREESWITCH.find()


def freeswitch_available() -> bool:
    """For tests that skip without one (marker `needs_freeswitch`, tests/conftest.py)."""
    return freeswitch_missing() is None


def freeswitch_missing() -> str | None:
    """Why there is no FreeSWITCH to test with (the skip reason), or None when there is one."""
    try:
        freeswitch_binary()
    except FreeswitchNotFound as missing:
        return str(missing)
    return None


def freeswitch_version() -> str | None:
    """The version of the binary found ("1.10.12"), or None."""
    if freeswitch_missing() is not None:
        return None
    version = FREESWITCH.version_of(freeswitch_binary())
    return ".".join(map(str, version)) if version else None

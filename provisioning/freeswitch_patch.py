"""Whether a FreeSWITCH install carries wa-sip's patches (patches/freeswitch/*.patch).

A FreeSWITCH the user built with them records the patch set in
`<prefix>/share/wa-sip/freeswitch-patches` (`sha256sum` lines, README "FreeSWITCH patch"; wa-sip
builds none, scripts/install-freeswitch reads the same file). `provision doctor` asks it of a
site that lets FreeSWITCH face Meta with DTLS numbers ([media] anchor = "freeswitch"): stock
FreeSWITCH never starts DTLS with an ICE-lite peer such as Meta (see 0001's header). The lab and
the tests ask it too, to skip the DTLS media tests on a stock FreeSWITCH.
"""

from __future__ import annotations

import hashlib
from enum import Enum
from pathlib import Path

PATCHES = Path(__file__).resolve().parent.parent / "patches" / "freeswitch"
MARKER = Path("share/wa-sip/freeswitch-patches")
ICE_LITE_PATCH = "0001-ice-lite-peer-controlling-and-ready.patch"
"""The patch DTLS numbers need on the direct path: ICE CONTROLLING against a lite peer, and
DTLS started once our own check succeeds."""


class PatchState(Enum):
    CARRIED = "carried"      # recorded with this checkout's content
    OTHER = "other"          # recorded, but another version of the patch
    MISSING = "missing"      # no marker, or a marker without it: a stock FreeSWITCH


def patch_set() -> str:
    """What a patched install records: one `sha256  name` line per patch, sorted by name."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(PATCHES.glob("*.patch"))]
    return "\n".join(lines)


def marker_of(binary: str) -> Path:
    """`<prefix>/share/wa-sip/freeswitch-patches` of `<prefix>/bin/freeswitch`."""
    return Path(binary).resolve().parent.parent / MARKER


def recorded_patches(binary: str) -> dict[str, str]:
    """name -> sha256 of each patch the install of `binary` records (empty: none, or no marker)."""
    try:
        text = marker_of(binary).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found = {}
    for line in text.splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            found[name.strip()] = digest
    return found


def is_patched(binary: str) -> bool:
    """`binary` is `<prefix>/bin/freeswitch` of an install built with exactly these patches."""
    try:
        return marker_of(binary).read_text(encoding="utf-8").strip() == patch_set()
    except (OSError, UnicodeDecodeError):
        return False


def patch_state(binary: str, name: str = ICE_LITE_PATCH) -> PatchState:
    """Whether the install of `binary` carries the patch `name` (by default 0001) as shipped
    here; where the patch file itself is absent (an install without patches/), its name alone."""
    digest = recorded_patches(binary).get(name)
    if digest is None:
        return PatchState.MISSING
    shipped = PATCHES / name
    if not shipped.is_file() or hashlib.sha256(shipped.read_bytes()).hexdigest() == digest:
        return PatchState.CARRIED
    return PatchState.OTHER

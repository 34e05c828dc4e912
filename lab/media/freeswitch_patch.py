"""Whether a FreeSWITCH install carries wa-sip's patches (patches/freeswitch/*.patch).

A FreeSWITCH the user built with them records the patch set in
`<prefix>/share/wa-sip/freeswitch-patches` (`sha256sum` lines, README "FreeSWITCH patch"; wa-sip
builds none, scripts/install-freeswitch reads the same file); the DTLS media tests need it,
because stock FreeSWITCH never starts DTLS with an ICE-lite peer (see the patch's header).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PATCHES = Path(__file__).resolve().parents[2] / "patches" / "freeswitch"
MARKER = Path("share/wa-sip/freeswitch-patches")


def patch_set() -> str:
    """What a patched install records: one `sha256  name` line per patch, sorted by name."""
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in sorted(PATCHES.glob("*.patch"))]
    return "\n".join(lines)


def is_patched(binary: str) -> bool:
    """`binary` is `<prefix>/bin/freeswitch` of an install built with exactly these patches."""
    marker = Path(binary).resolve().parent.parent / MARKER
    try:
        return marker.read_text(encoding="utf-8").strip() == patch_set()
    except OSError:
        return False

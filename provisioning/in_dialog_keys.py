"""The site's in-dialog MAC key file ([edge] in_dialog_key_file, kemi/dialog_mac.py): created
when missing, rotated with the old key still verifying for a while, checked by the doctor.

Every edge of a site needs the same file: create it on one, copy it (0600, owned by Kamailio's
user) to the others. Each edge's workers notice a changed file within a second, no reload.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kemi.dialog_mac import KeyFileError, KeyRing, new_key_file, new_key_id, read_key_file
from provisioning.doctor import Finding, Level
from siteconfig.atomic_file import replace_file

CHECK = "edge.in_dialog_key"
DAY = 86400.0


@dataclass(frozen=True)
class Rotation:
    key_id: str
    kept: list[str]  # the older keys that still verify, and until when (epoch seconds)
    until: float


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 0600 from its first byte: a worker re-reading the
    file never sees half of it, and the secrets are never readable by others."""
    replace_file(path, text, 0o600, create_folder=True)


def ensure_key_file(path: Path) -> bool:
    """Create the key file with one fresh key when there is none; True when it was created.
    An existing file is left as it is (a bad one is for the doctor to report)."""
    if path.exists():
        return False
    write_private(path, new_key_file(None, new_key_id(), 0))
    return True


def rotate_key_file(path: Path, keep_seconds: float, now: float | None = None) -> Rotation:
    """A new current key; the old ones verify `keep_seconds` more (expired ones are dropped).
    KeyFileError when the file is missing or bad: rotation never starts a new key ring over a
    file it cannot read (calls signed with the old keys would end)."""
    moment = time.time() if now is None else now
    existing = read_key_file(path)
    key_id = new_key_id(moment)
    write_private(path, new_key_file(existing, key_id, keep_seconds, moment))
    ring = read_key_file(path)
    kept = sorted(k for k in ring.secrets if k != key_id)
    return Rotation(key_id, kept, moment + keep_seconds)


def key_findings(path: Path, max_age_days: int, now: float | None = None) -> list[Finding]:
    """The doctor's view: the file exists, is 0600, parses; the current key is not too old."""
    moment = time.time() if now is None else now
    subject = str(path)
    fix = "provision render creates it; provision rotate-in-dialog-key replaces the key"
    try:
        ring: KeyRing = read_key_file(path)
    except KeyFileError as error:
        return [Finding(CHECK, Level.FAIL, subject, f"{error}: Kamailio will not start", fix)]
    made = ring.created.get(ring.current)
    if made is None:
        return [Finding(CHECK, Level.WARN, subject, f"current key {ring.current} says not when "
                        "it was made", "provision rotate-in-dialog-key")]
    age_days = (moment - made) / DAY
    if age_days > max_age_days:
        return [Finding(CHECK, Level.WARN, subject, f"current key {ring.current} is "
                        f"{age_days:.0f} days old (edge.in_dialog_key_max_age_days = "
                        f"{max_age_days})", "provision rotate-in-dialog-key")]
    others = len(ring.secrets) - 1
    return [Finding(CHECK, Level.PASS, subject, f"current key {ring.current}, "
                    f"{age_days:.0f} days old; {others} older key(s) still verifying")]

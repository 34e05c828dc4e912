"""Replacing a file in one rename: what every writer of a file that a running process re-reads needs.

Kamailio's workers re-read the in-dialog key file, the nftables loader the Meta ranges, an
operator's script the CDR export: none may ever see half a file, and a failed write must leave
the old one. It lives on the ground floor because both sides (`provision`, `wa-esl`) write such
files and neither may import the other.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def replace_file(path: Path, text: str, mode: int = 0o644, create_folder: bool = False) -> None:
    """Replace `path` with `text`: a temporary file beside it (0600 from its first byte, so a
    secret is never readable by others even for a moment), flushed to disk, given `mode`, then
    renamed over `path`. On any error the temporary file is removed, the old file is untouched
    and the OSError reaches the caller, which names the file in its own words. The folder is
    made only when asked (`create_folder`): a mistyped export path should fail, not grow one."""
    if create_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise

"""Finding a part the bundle runs (Kamailio, FreeSWITCH) where the user or Debian's packages put
it: one lookup order shared by the scripts (scripts/install-kamailio, scripts/install-freeswitch)
and the Python side. Nothing here installs anything.

Order: the binary the user names ($WA_SIP_<PART>: the only answer, never a silent fallback),
then <prefix>/<relative> when $<PART>_PREFIX is set (a build of the user's own), then the name on
PATH, then the usual install places (`fallbacks`: e.g. /usr/sbin/kamailio, not on a non-root
user's PATH). A binary counts only when it runs and reports a version at or above the minimum,
so a broken or too-old install is reported, not used.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InstalledPart:
    """How one part is found and judged."""

    name: str  # "Kamailio"
    command: str  # "kamailio": the name on PATH
    binary_env: str  # "WA_SIP_KAMAILIO"
    prefix_env: str  # "KAMAILIO_PREFIX"
    relative: str  # "sbin/kamailio"
    fallbacks: tuple[str, ...]  # after PATH, in order: ("/usr/sbin/kamailio",)
    version_flag: str  # "-v"
    version_pattern: re.Pattern[str]  # three groups: major, minor, patch
    minimum: tuple[int, int]
    advice: str  # how to get one, ends the "not found" message

    def version_of(self, binary: str) -> tuple[int, int, int] | None:
        """(major, minor, patch) that the binary reports, or None when it does not run."""
        try:
            done = subprocess.run([binary, self.version_flag], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        match = self.version_pattern.search(done.stdout + done.stderr)
        return (int(match[1]), int(match[2]), int(match[3])) if match else None

    def candidates(self) -> list[str]:
        """Where to look, first match wins (mirrors the script)."""
        named = os.environ.get(self.binary_env)
        if named:
            # A directory named where the binary is meant is taken as the prefix (the script says so).
            return [str(Path(named) / self.relative) if Path(named).is_dir() else named]
        found = []
        prefix = os.environ.get(self.prefix_env)
        if prefix:
            found.append(str(Path(prefix) / self.relative))
        on_path = shutil.which(self.command)
        if on_path:
            found.append(on_path)
        found.extend(path for path in self.fallbacks if path not in found)
        return found

    def find(self) -> str:
        """The path of a supported binary; raises PartNotFound saying what was seen and what to do."""
        seen = []
        for binary in self.candidates():
            if not os.access(binary, os.X_OK):
                continue
            version = self.version_of(binary)
            if version is not None and version[:2] >= self.minimum:
                return binary
            seen.append(f"{binary} ({'.'.join(map(str, version)) if version else 'does not run'})")
        found = f"found only {', '.join(seen)}; " if seen else ""
        minimum = ".".join(map(str, self.minimum))
        raise PartNotFound(f"no {self.name} {minimum} or later: {found}{self.advice}")


class PartNotFound(RuntimeError):
    """No supported binary of a part: the message says what was found and how to get one."""

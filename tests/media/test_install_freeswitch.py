"""scripts/install-freeswitch tells a user whose FreeSWITCH lacks wa-sip's patch what that
costs, and recognises a patched install by the patch set it records (no build is started
here: a binary named by WA_SIP_FREESWITCH is always used as it is)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.media.freeswitch_patch import MARKER, is_patched, patch_set

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-freeswitch"


def fake_freeswitch(prefix: Path, marker: str | None) -> Path:
    binary = prefix / "bin" / "freeswitch"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\necho 'FreeSWITCH version: 1.10.12-release~64bit'\n")
    binary.chmod(0o755)
    if marker is not None:
        (prefix / MARKER).parent.mkdir(parents=True)
        (prefix / MARKER).write_text(marker + "\n")
    return binary


def run(binary: Path, **env: str) -> str:
    result = subprocess.run([str(SCRIPT)], env={**os.environ, "WA_SIP_FREESWITCH": str(binary), **env},
                            capture_output=True, text=True, timeout=60, check=True)
    return result.stdout + result.stderr


def test_unpatched_freeswitch_is_used_with_a_warning(tmp_path: Path) -> None:
    out = run(fake_freeswitch(tmp_path, None))
    assert "WARNING" in out and "lacks wa-sip's FreeSWITCH patch" in out
    assert "DTLS calls with WhatsApp (ICE-lite) will get no audio" in out
    assert "named by WA_SIP_FREESWITCH" in out


def test_a_stale_patch_set_counts_as_unpatched(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path, "0" * 64 + "  0001-old.patch")
    assert not is_patched(str(binary))
    assert "WARNING" in run(binary)


def test_patched_freeswitch_is_recognised(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path, patch_set())
    assert is_patched(str(binary))
    out = run(binary)
    assert "WARNING" not in out and "patched" in out


def test_stock_chosen_on_purpose_is_not_warned_about(tmp_path: Path) -> None:
    out = run(fake_freeswitch(tmp_path, None), WA_SIP_FREESWITCH_STOCK="1")
    assert "WARNING" not in out and "named by WA_SIP_FREESWITCH" in out

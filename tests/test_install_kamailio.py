"""scripts/install-kamailio's choice, without network: a kamailio named by WA_SIP_KAMAILIO is the
only answer, used when it is 5.6 or later (the script says what that version lacks) and refused
clearly when older. Fake binaries; nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-kamailio"


def fake_kamailio(folder: Path, version: str) -> Path:
    binary = folder / "sbin" / "kamailio"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho 'version: kamailio {version} (x86_64/linux) '\n"
                      "echo 'flags: USE_TCP, USE_TLS'\n")
    binary.chmod(0o755)
    return binary


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("WA_SIP_KAMAILIO", "KAMAILIO_PREFIX")}
    return subprocess.run(["bash", str(SCRIPT), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_a_named_61_is_used_and_lacks_nothing(tmp_path: Path) -> None:
    binary = fake_kamailio(tmp_path, "6.1.4")
    done = run(WA_SIP_KAMAILIO=str(binary))
    assert done.returncode == 0, done.stderr
    assert f"using {binary} (kamailio 6.1.4): named by WA_SIP_KAMAILIO" in done.stdout
    assert "what kamailio 6.1 lacks: nothing" in done.stdout
    assert "apt-get" not in done.stdout + done.stderr


def test_a_named_56_is_used_and_what_it_lacks_is_said(tmp_path: Path) -> None:
    binary = fake_kamailio(tmp_path, "5.6.3")
    done = run(WA_SIP_KAMAILIO=str(binary))
    assert done.returncode == 0, done.stderr
    lacks = [line for line in done.stdout.splitlines() if "what kamailio 5.6 lacks" in line]
    assert len(lacks) == 1, done.stdout
    assert "no 401 challenges (auth.challenge_code=401 needs 6.0)" in lacks[0]
    assert "HAProxy" in lacks[0] and "nftables" in lacks[0]


def test_a_prefix_is_preferred_to_the_one_on_path(tmp_path: Path) -> None:
    binary = fake_kamailio(tmp_path / "k61", "6.1.4")
    done = run("--prefix", str(tmp_path / "k61"))
    assert done.returncode == 0, done.stderr
    assert f"using {binary} (kamailio 6.1.4): the prefix" in done.stdout


def test_a_named_55_is_refused_clearly(tmp_path: Path) -> None:
    binary = fake_kamailio(tmp_path, "5.5.0")
    done = run(WA_SIP_KAMAILIO=str(binary))
    assert done.returncode == 1
    assert f"WA_SIP_KAMAILIO={binary} is kamailio 5.5.0; wa-sip needs 5.6 or later" in done.stderr


def test_a_named_path_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    done = run(WA_SIP_KAMAILIO=str(tmp_path / "missing"))
    assert done.returncode == 1 and "is not an executable" in done.stderr


def test_a_named_binary_that_reports_no_version_is_refused(tmp_path: Path) -> None:
    binary = fake_kamailio(tmp_path, "5.6.3")
    binary.write_text("#!/bin/sh\nexit 3\n")
    done = run(WA_SIP_KAMAILIO=str(binary))
    assert done.returncode == 1 and "does not run" in done.stderr, done.stderr

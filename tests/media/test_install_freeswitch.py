"""scripts/install-freeswitch only finds the user's FreeSWITCH (it installs none): it reports the
version and whether the install carries wa-sip's patches (the marker a patched build records),
and where there is none it says the FreeSWITCH tests and lab calls will be skipped and exits 0.
Fake binaries on a temporary PATH; nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lab.media.freeswitch_patch import MARKER, is_patched, patch_set

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-freeswitch"
VERSION_LINE = "FreeSWITCH version: 1.10.12-release~64bit (-release 64bit)"


def fake_freeswitch(prefix: Path, marker: str | None = None, line: str = VERSION_LINE) -> Path:
    binary = prefix / "bin" / "freeswitch"
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho '{line}'\n")
    binary.chmod(0o755)
    if marker is not None:
        (prefix / MARKER).parent.mkdir(parents=True)
        (prefix / MARKER).write_text(marker + "\n")
    return binary


def bare_path(tmp_path: Path, *extra: Path) -> str:
    """A PATH with the tools the script uses but no freeswitch from this machine."""
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("sh", "bash", "sed", "head", "cat", "dirname", "readlink", "sha256sum", "id"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                               text=True, check=True).stdout.strip()
        if not (tools / tool).exists():
            (tools / tool).symlink_to(found)
    return os.pathsep.join([*map(str, extra), str(tools)])


def run(tmp_path: Path, *args: str, path_dirs: tuple[Path, ...] = (),
        **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("WA_SIP_FREESWITCH", "FREESWITCH_PREFIX")}
    return subprocess.run(["bash", str(SCRIPT), *args],
                          env={**clean, "PATH": bare_path(tmp_path, *path_dirs), **env},
                          capture_output=True, text=True, timeout=60, check=False)


def only_in_fallbacks() -> bool:
    """Whether a real FreeSWITCH sits in a place the script looks at after PATH."""
    return any(Path(p).exists() for p in ("/usr/bin/freeswitch", "/usr/local/freeswitch/bin/freeswitch",
                                          "/opt/freeswitch/bin/freeswitch"))


def test_one_on_path_is_found_and_reported_as_stock(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path / "fs")
    done = run(tmp_path, path_dirs=(binary.parent,))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"using {binary} (FreeSWITCH 1.10.12-release): on PATH" in out
    assert "stock: DTLS numbers need patches/freeswitch/0001 or the rtpengine anchor" in out


def test_the_prefix_is_looked_at_first_and_a_patched_build_is_recognised(tmp_path: Path) -> None:
    on_path = fake_freeswitch(tmp_path / "other")
    binary = fake_freeswitch(tmp_path / "fs", marker=patch_set())
    assert is_patched(str(binary))
    done = run(tmp_path, "--prefix", str(tmp_path / "fs"), path_dirs=(on_path.parent,))
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"using {binary} (FreeSWITCH 1.10.12-release): the prefix" in out
    assert "patched: carries patches/freeswitch/0001" in out and "stock" not in out


def test_a_stale_patch_set_is_said_to_differ(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path / "fs", marker="0" * 64 + "  0001-old.patch")
    assert not is_patched(str(binary))
    done = run(tmp_path, WA_SIP_FREESWITCH=str(binary))
    assert done.returncode == 0 and "another patch set than this checkout's" in done.stdout


def test_a_named_binary_that_is_not_executable_is_a_clear_error(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path / "fs")
    binary.chmod(0o644)
    done = run(tmp_path, WA_SIP_FREESWITCH=str(binary))
    assert done.returncode == 1
    assert f"WA_SIP_FREESWITCH={binary} is not an executable" in done.stderr


def test_a_named_binary_that_is_too_old_is_a_clear_error(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path / "fs", line="FreeSWITCH version: 1.8.7-release")
    done = run(tmp_path, WA_SIP_FREESWITCH=str(binary))
    assert done.returncode == 1 and "older than 1.10" in done.stderr, done.stderr


def test_none_found_is_one_line_and_exit_0(tmp_path: Path) -> None:
    if only_in_fallbacks():
        pytest.skip("a FreeSWITCH is installed on this machine")
    done = run(tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, lines
    assert "no FreeSWITCH 1.10 or later installed" in lines[0]
    assert "the FreeSWITCH tests and lab calls will be skipped" in lines[0]
    assert "SignalWire's FreeSWITCH packages" in lines[0] and "--prefix DIR" in lines[0]


def test_one_that_does_not_run_is_named_in_the_none_found_line(tmp_path: Path) -> None:
    if only_in_fallbacks():
        pytest.skip("a FreeSWITCH is installed on this machine")
    binary = fake_freeswitch(tmp_path / "fs", line="")
    binary.write_text("#!/bin/sh\nexit 1\n")
    done = run(tmp_path, path_dirs=(binary.parent,))
    assert done.returncode == 0, done.stderr
    assert f"found only {binary} (does not run)" in done.stdout
    assert "will be skipped" in done.stdout


def test_a_named_directory_is_taken_as_the_prefix_and_said_plainly(tmp_path: Path) -> None:
    binary = fake_freeswitch(tmp_path / "fs")
    done = run(tmp_path, WA_SIP_FREESWITCH=str(tmp_path / "fs"))
    assert done.returncode == 0, done.stderr
    assert "is a directory: taking it as the prefix" in done.stdout
    assert f"using {binary}" in done.stdout


def test_a_named_directory_without_a_binary_says_what_the_variables_name(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = run(tmp_path, WA_SIP_FREESWITCH=str(tmp_path / "empty"))
    assert done.returncode == 1
    assert "is a directory with no bin/freeswitch" in done.stderr
    assert "WA_SIP_FREESWITCH names the freeswitch binary, FREESWITCH_PREFIX the prefix" in done.stderr

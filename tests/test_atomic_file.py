"""siteconfig.atomic_file.replace_file: all of the new text or all of the old, never half."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from siteconfig.atomic_file import replace_file


def test_replaces_with_the_mode_asked_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "keys.json"
    replace_file(target, "one", 0o600, create_folder=True)
    assert target.read_text() == "one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    replace_file(target, "two", 0o644)
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["keys.json"]


def test_no_folder_is_made_unless_asked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        replace_file(tmp_path / "missing" / "cdr.csv", "x")
    assert not (tmp_path / "missing").exists()


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ranges.txt"
    target.write_text("old")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        replace_file(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["ranges.txt"]


def test_the_temporary_is_private_from_its_first_byte(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_fsync = os.fsync

    def look(fd: int) -> None:
        seen.append(stat.S_IMODE(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", look)
    replace_file(tmp_path / "secret", "s3cret", 0o600)
    assert seen == [0o600]

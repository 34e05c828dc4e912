"""The in-dialog MAC key file: created 0600, rotated with the old key verifying, doctor's view,
and `provision rotate-in-dialog-key` / `provision render` on it."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kemi.dialog_mac import KeyFileError, read_key_file, sign, verify
from lab.edge import EXAMPLE_CONFIG
from provisioning.doctor import Level
from provisioning.in_dialog_keys import (
    DAY,
    ensure_key_file,
    key_findings,
    rotate_key_file,
)
from tests.provisioning.conftest import provision

CALL = ("u", "call@meta", "tag", "127.0.0.1:5080:udp")


def test_created_once_private_and_parsing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    assert ensure_key_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ring = read_key_file(path)
    text = path.read_text()
    assert ensure_key_file(path) is False
    assert path.read_text() == text  # an existing file is never replaced
    assert list(ring.secrets) == [ring.current] and ring.current in ring.created


def test_rotation_keeps_the_old_key_verifying_then_drops_it(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ensure_key_file(path)
    old = read_key_file(path)
    token = sign(old, *CALL)
    rotation = rotate_key_file(path, keep_seconds=60, now=1_000_000.0)
    new = read_key_file(path)
    assert new.current == rotation.key_id != old.current and rotation.kept == [old.current]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert verify(new, token, *CALL[1:], now=1_000_059.0)
    assert not verify(new, token, *CALL[1:], now=1_000_060.0)
    assert verify(new, sign(new, *CALL), *CALL[1:])
    rotate_key_file(path, keep_seconds=60, now=1_000_100.0)  # the first key has expired: gone
    assert old.current not in read_key_file(path).secrets


def test_rotation_refuses_a_missing_or_bad_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        rotate_key_file(tmp_path / "absent.json", 60)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError):
        rotate_key_file(bad, 60)
    assert bad.read_text() == "{}"


def test_doctor_findings(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    assert key_findings(path, 180)[0].level is Level.FAIL  # missing
    ensure_key_file(path)
    made = read_key_file(path).created[read_key_file(path).current]
    assert key_findings(path, 180, now=made + DAY)[0].level is Level.PASS
    old = key_findings(path, 180, now=made + 181 * DAY)[0]
    assert old.level is Level.WARN and "181 days old" in old.cause
    path.chmod(0o644)
    readable = key_findings(path, 180)[0]
    assert readable.level is Level.FAIL and "must be 0600" in readable.cause
    path.chmod(0o600)
    raw = json.loads(path.read_text())
    raw["keys"][raw["current"]].pop("created")
    path.write_text(json.dumps(raw))
    assert key_findings(path, 180)[0].level is Level.WARN


def site_with_key(tmp_path: Path, key: Path) -> Path:
    config = tmp_path / "site.toml"
    default = 'in_dialog_key_file = "/etc/wa-sip/in-dialog-keys.json"'
    text = EXAMPLE_CONFIG.read_text()
    assert text.count(default) == 1
    config.write_text(text.replace(default, f'in_dialog_key_file = "{key}"'))
    return config


def test_rotate_command_creates_then_rotates(tmp_path: Path) -> None:
    key = tmp_path / "keys.json"
    config = site_with_key(tmp_path, key)
    first = provision("rotate-in-dialog-key", "-c", str(config))
    assert first.exit_code == 0 and "created" in first.stdout
    current = read_key_file(key).current
    second = provision("rotate-in-dialog-key", "-c", str(config), "--keep-hours", "2")
    assert second.exit_code == 0, second.stdout
    ring = read_key_file(key)
    assert ring.current != current and current in ring.secrets
    assert ring.verify_until[current] is not None
    key.chmod(0o644)
    refused = provision("rotate-in-dialog-key", "-c", str(config))
    assert refused.exit_code == 1 and stat.S_IMODE(key.stat().st_mode) == 0o644


def test_render_says_when_the_key_file_is_missing_and_never_writes_it(tmp_path: Path) -> None:
    key = tmp_path / "keys.json"
    result = provision("render", "-c", str(site_with_key(tmp_path, key)), "-o",
                       str(tmp_path / "out"))
    assert result.exit_code == 0, result.stdout
    assert "no in-dialog key file" in result.stdout and not key.exists()
    settings = json.loads((tmp_path / "out" / "kamailio" / "edge-settings.json").read_text())
    assert settings["in_dialog_key_file"] == str(key)

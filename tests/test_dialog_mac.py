"""kemi/dialog_mac.py: the Record-Route MAC refuses every forgery and survives a key rotation."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kemi import dialog_mac
from kemi.dialog_mac import KeyFileError, KeyWatch, parse_key_file, sign, verify

CALL = ("u", "call-1@meta", "tag-meta", "127.0.0.1:5080:udp")


def ring(key_id: str = "k1") -> dialog_mac.KeyRing:
    return parse_key_file(dialog_mac.new_key_file(None, key_id, 3600))


def test_valid_token_verifies() -> None:
    keys = ring()
    assert verify(keys, sign(keys, *CALL), *CALL[1:])


@pytest.mark.parametrize("change", [
    ("other-call@meta", "tag-meta", "127.0.0.1:5080:udp"),
    ("call-1@meta", "tag-other", "127.0.0.1:5080:udp"),
    ("call-1@meta", "tag-meta", "127.0.0.1:5081:udp"),
    ("call-1@meta", "tag-meta", "127.0.0.1:5080:tcp"),
])
def test_token_of_another_call_tag_or_hop_is_refused(change: tuple[str, str, str]) -> None:
    keys = ring()
    assert not verify(keys, sign(keys, *CALL), *change)


@pytest.mark.parametrize("token", ["", "k1", "k1.u.", "k1.u.AAAAAAAAAAAAAAAAAAAAAA",
                                   "k9.u.AAAAAAAAAAAAAAAAAAAAAA", "k1.x.AAAA", "é.u.é"])
def test_missing_or_made_up_token_is_refused(token: str) -> None:
    assert not verify(ring(), token, *CALL[1:])


def test_direction_is_signed() -> None:
    keys = ring()
    token = sign(keys, *CALL)
    assert not verify(keys, token.replace(".u.", ".b.", 1), *CALL[1:])


def test_other_site_key_is_refused() -> None:
    assert not verify(ring(), sign(ring(), *CALL), *CALL[1:])


def test_rotation_keeps_old_key_until_its_time_then_refuses() -> None:
    old = ring("k1")
    token = sign(old, *CALL)
    rotated = parse_key_file(dialog_mac.new_key_file(old, "k2", 60, now=1000.0))
    assert rotated.current == "k2"
    assert verify(rotated, token, *CALL[1:], now=1059.0)
    assert not verify(rotated, token, *CALL[1:], now=1060.0)
    again = parse_key_file(dialog_mac.new_key_file(rotated, "k3", 60, now=2000.0))
    assert "k1" not in again.secrets  # rotated out: dropped from the file


def test_key_file_must_be_private_and_well_formed(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(dialog_mac.new_key_file(None, "k1", 60))
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError, match="must be 0600"):
        dialog_mac.read_key_file(path)
    os.chmod(path, 0o600)
    assert dialog_mac.read_key_file(path).current == "k1"
    raw = json.loads(path.read_text())
    secret = raw["keys"]["k1"]["secret"]
    raw["keys"]["k1"]["secret"] = "c2hvcnQ"
    path.write_text(json.dumps(raw))
    with pytest.raises(KeyFileError) as error:
        dialog_mac.read_key_file(path)
    assert secret not in str(error.value)


def test_watch_picks_up_a_rotated_file_and_keeps_the_old_ring_on_a_bad_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    path.write_text(dialog_mac.new_key_file(None, "k1", 60))
    os.chmod(path, 0o600)
    watch = KeyWatch(path)
    first = watch.current()
    path.write_text(dialog_mac.new_key_file(first, "k2", 60))
    assert watch.current().current == "k1"  # checked at most once a second
    monkeypatch.setattr(dialog_mac, "RECHECK_SECONDS", 0.0)
    time.sleep(0.01)
    assert watch.current().current == "k2"
    path.write_text("{")
    assert watch.current().current == "k2" and watch.problem


def test_route_token_only_from_the_first_route_entry() -> None:
    first = "<sip:127.0.0.1:5061;transport=tls;r2=on;lr;ftag=a;wamac=k1.u.MAC>"
    assert dialog_mac.route_token(f"{first}, <sip:127.0.0.1:5060;r2=on;lr>") == "k1.u.MAC"
    assert dialog_mac.route_token("<sip:127.0.0.1:5061;lr>, <sip:x;lr;wamac=k1.u.MAC>") is None
    assert dialog_mac.route_token("sip:127.0.0.1;wamac=k1.u.MAC") is None
    assert dialog_mac.route_token("<sip:127.0.0.1;lr;wamac=>") is None


# ---- a business-initiated call's CSeq step (the route FreeSWITCH learns) ---------------------


RING_K1 = ring()


def test_cseq_step_verifies_only_for_its_call_and_tag_and_value() -> None:
    value = dialog_mac.sign_cseq_step(RING_K1, "call-1", "fs-tag", 1)
    assert value.startswith("1.k1.")
    assert dialog_mac.verify_cseq_step(RING_K1, value, "call-1", "fs-tag") == 1
    assert dialog_mac.verify_cseq_step(RING_K1, value, "call-2", "fs-tag") is None
    assert dialog_mac.verify_cseq_step(RING_K1, value, "call-1", "other") is None
    changed = "7" + value[1:]
    assert dialog_mac.verify_cseq_step(RING_K1, changed, "call-1", "fs-tag") is None
    for made_up in ("", "1", "1.k1", "x.k1.AAAA", "10.k1." + value.split(".")[2], "1.k9.AAAA"):
        assert dialog_mac.verify_cseq_step(RING_K1, made_up, "call-1", "fs-tag") is None


def test_cseq_step_is_not_a_route_token() -> None:
    """The step's MAC is over the direction "cseq": it cannot pass for a route token of the
    same call (nor the other way round), whatever it is placed as."""
    value = dialog_mac.sign_cseq_step(RING_K1, "call-1", "fs-tag", 1)
    _, key_id, mac = value.split(".")
    for direction in ("u", "b"):
        assert not verify(RING_K1, f"{key_id}.{direction}.{mac}", "call-1", "fs-tag", "1")
    token = sign(RING_K1, "b", "call-1", "fs-tag", "1")
    assert dialog_mac.verify_cseq_step(RING_K1, "1." + token.split(".", 2)[0] + "."
                                       + token.split(".")[2], "call-1", "fs-tag") is None
    with pytest.raises(ValueError):
        dialog_mac.sign_cseq_step(RING_K1, "call-1", "fs-tag", 10)


def test_route_param_reads_the_first_entry_only() -> None:
    route = "<sip:10.0.0.1;lr;wamac=t;wacs=1.k1.m>, <sip:10.0.0.2;lr;wacs=9.k1.x>"
    assert dialog_mac.route_param(route, "wacs") == "1.k1.m"
    assert dialog_mac.route_param("<sip:10.0.0.1;lr>, <sip:10.0.0.2;wacs=1.k1.m>", "wacs") is None

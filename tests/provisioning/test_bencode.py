"""provisioning/bencode.py: rtpengine's ng encoding, strict on what it reads."""

from __future__ import annotations

import pytest

from provisioning.bencode import MAX_DEPTH, BencodeError, decode, encode


def test_round_trip_of_what_rtpengine_sends() -> None:
    value = {"result": "ok", "calls": ["a@b", "c"], "totals": {"RTP": {"packets": 12}}, "n": -3}
    assert decode(encode(value)) == value
    assert encode({"b": 1, "a": "x"}) == b"d1:a1:x1:bi1ee"  # keys sorted, as bencode wants


def test_binary_strings_stay_bytes() -> None:
    assert decode(b"2:\xff\xfe") == b"\xff\xfe"


@pytest.mark.parametrize("data", [
    b"", b"i12", b"ixe", b"5:abc", b"l1:a", b"d1:ae", b"di1e1:ae", b"x", b"1:ab", b"-1:a",
    b"l" * (MAX_DEPTH + 2) + b"e" * (MAX_DEPTH + 2),
])
def test_what_is_not_bencode_is_an_error(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_booleans_and_other_types_are_refused() -> None:
    for value in (True, 1.5, None):
        with pytest.raises(BencodeError):
            encode(value)

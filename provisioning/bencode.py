"""Bencode, as rtpengine's ng control protocol carries it (integers, byte strings, lists,
dictionaries). Its own module so `doctor`, the lab and the metrics read rtpengine's answers with
one strict decoder: an answer that is not well-formed bencode is an error, never half-read."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32


class BencodeError(ValueError):
    """Not bencode (or nested deeper than MAX_DEPTH)."""


def encode(value: Any) -> bytes:
    """bytes of `value` (int, str (UTF-8), bytes, list, dict with str keys, sorted)."""
    if isinstance(value, bool):
        raise BencodeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(encode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise BencodeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    """The value `data` holds; strings as str where they are UTF-8, else bytes."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise BencodeError("unterminated integer")
        try:
            return int(data[at + 1:end]), end + 1
        except ValueError:
            raise BencodeError("bad integer") from None
    if kind in (b"l", b"d"):
        at += 1
        items: list[Any] = []
        while data[at:at + 1] != b"e":
            if at >= len(data):
                raise BencodeError("unterminated list or dictionary")
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        if len(items) % 2:
            raise BencodeError("dictionary with a key and no value")
        keys = items[0::2]
        if not all(isinstance(k, str) for k in keys):
            raise BencodeError("dictionary key not a string")
        return dict(zip(keys, items[1::2], strict=True)), at + 1
    colon = data.find(b":", at)
    if not kind.isdigit() or colon < 0 or not data[at:colon].isdigit():
        raise BencodeError(f"unexpected byte {kind!r} at {at}")
    start = colon + 1
    end = start + int(data[at:colon])
    if end > len(data):
        raise BencodeError("string longer than the data")
    raw = data[start:end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return raw, end

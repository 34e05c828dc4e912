"""A keyed MAC in the edge's Record-Route: in-dialog trust that any edge of a site can check.

The edge signs what makes its route unforgeable and tied to one call: the Call-ID, the
caller's From tag as known at INVITE time (in Meta's later requests it is the From tag of a
user-initiated call, the To tag of a business-initiated one: the direction is signed too), and
the business-side hop Meta's in-dialog requests go to. Any edge holding the site's key can
verify it, so no per-call state is needed and a restarted edge still relays Meta's BYE.

Token (one rr parameter value): ``KID.DIR.MAC`` with DIR ``u`` or ``b`` and MAC the first 128
bits of HMAC-SHA256, base64url without padding; compared in constant time.

A business-initiated call needs one more fact in the route: after the edge answered Meta's 407,
Meta's dialog runs one CSeq above FreeSWITCH's (RFC 3261 8.1.3.5), so every request of the
business side must leave the edge renumbered by that step, and its answers come back renumbered
down. The edge writes the step into the Record-Route FreeSWITCH learns (the 2xx it relays to
FreeSWITCH, never the INVITE Meta sees) as ``CSEQ_PARAM=STEP.KID.MAC``, MAC over the key id, the
Call-ID, the caller's (FreeSWITCH's) From tag and the step: any edge holding the site's key reads
it back from FreeSWITCH's Route, and a step changed in transit does not verify.

The key file (JSON, 0600, written by `provision`): ``{"format": FORMAT, "current": KID,
"keys": {KID: {"secret": B64URL, "verify_until": EPOCH|null, "created": EPOCH}}}``. The current
key signs; every key whose verify_until is null or in the future verifies (rotation keeps calls
up); "created" (optional) lets `provision doctor` say when the current key is old.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import importlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "wa-sip-in-dialog-keys/1"
PARAM = "wamac"  # the Record-Route parameter's name
CSEQ_PARAM = "wacs"  # a business-initiated call's CSeq step, in the route toward the business
MAX_CSEQ_STEP = 9  # the edge answers one 407 per call: its step is 0 or 1
MAC_BYTES = 16
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
MIN_SECRET_BYTES = 32
RECHECK_SECONDS = 1.0  # a changed key file is noticed at most this late (one stat per second)


class KeyFileError(Exception):
    """The key file is missing, not private, or not in FORMAT; the message names which."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    current: str
    secrets: dict[str, bytes]
    verify_until: dict[str, float | None]
    created: dict[str, float] = field(default_factory=dict)  # keys that say when they were made

    def verifying(self, key_id: str, now: float) -> bytes | None:
        """The secret of `key_id` when it may still verify at `now`, else None."""
        until = self.verify_until.get(key_id)
        if key_id not in self.secrets or (until is not None and now >= until):
            return None
        return self.secrets[key_id]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_key_file(text: str) -> KeyRing:
    """The key ring in `text`; KeyFileError (never the secret in its message) when malformed."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise KeyFileError("not JSON") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise KeyFileError(f"format is not {FORMAT}")
    keys = raw.get("keys")
    current = raw.get("current")
    if not isinstance(keys, dict) or not isinstance(current, str) or current not in keys:
        raise KeyFileError("'current' names no key of 'keys'")
    secrets: dict[str, bytes] = {}
    until: dict[str, float | None] = {}
    created: dict[str, float] = {}
    for key_id, entry in keys.items():
        if not KEY_ID.fullmatch(key_id) or not isinstance(entry, dict):
            raise KeyFileError(f"bad key id {key_id[:20]!r}")
        try:
            secret = base64.urlsafe_b64decode(str(entry["secret"]) + "==")
        except (KeyError, ValueError):
            raise KeyFileError(f"key {key_id}: secret is not base64url") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyFileError(f"key {key_id}: secret shorter than {MIN_SECRET_BYTES} bytes")
        limit = entry.get("verify_until")
        if limit is not None and not isinstance(limit, (int, float)):
            raise KeyFileError(f"key {key_id}: verify_until is not a number")
        made = entry.get("created")
        if made is not None and not isinstance(made, (int, float)):
            raise KeyFileError(f"key {key_id}: created is not a number")
        secrets[key_id] = secret
        until[key_id] = None if key_id == current or limit is None else float(limit)
        if made is not None:
            created[key_id] = float(made)
    return KeyRing(current, secrets, until, created)


def read_key_file(path: Path) -> KeyRing:
    """The key ring of `path`, refused unless only its owner can read it (0600 or stricter)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KeyFileError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") \
            from None
    if mode & 0o077:
        raise KeyFileError(f"{path}: mode {mode & 0o777:o}, must be 0600")
    try:
        return parse_key_file(text)
    except KeyFileError as error:
        raise KeyFileError(f"{path}: {error}") from None


def new_key_file(existing: KeyRing | None, key_id: str, keep_seconds: float,
                 now: float | None = None) -> str:
    """Key file text with a fresh current key `key_id`; the old keys verify `keep_seconds` more
    (already expired ones are dropped)."""
    if not KEY_ID.fullmatch(key_id):
        raise KeyFileError(f"bad key id {key_id[:20]!r}")
    moment = time.time() if now is None else now
    keys: dict[str, dict[str, object]] = {}
    if existing is not None:
        for old_id, secret in existing.secrets.items():
            until = existing.verify_until[old_id]
            until = moment + keep_seconds if until is None else min(until, moment + keep_seconds)
            if until > moment and old_id != key_id:
                keys[old_id] = {"secret": _b64(secret), "verify_until": until,
                                **({"created": existing.created[old_id]}
                                   if old_id in existing.created else {})}
    keys[key_id] = {"secret": _b64(os.urandom(MIN_SECRET_BYTES)), "verify_until": None,
                    "created": moment}
    return json.dumps({"format": FORMAT, "current": key_id, "keys": keys}, indent=2) + "\n"


def new_key_id(now: float | None = None) -> str:
    """A key id unlikely to repeat: "k", the time in hex seconds, 4 random hex digits."""
    moment = int(time.time() if now is None else now)
    return f"k{moment:x}{os.urandom(2).hex()}"


def hop_text(host: str, port: int, transport: str) -> str:
    """The signed form of a next hop (host lower-case without brackets, transport lower-case)."""
    return f"{host.strip('[]').lower()}:{port}:{transport.lower()}"


def contact_uri(value: str) -> str:
    """The URI of the first entry of a Contact header value ("" when there is none)."""
    first = value.strip()
    if first.startswith("<") or "<" in first.split(",", 1)[0]:
        start = first.find("<")
        end = first.find(">", start)
        return first[start + 1:end].strip() if end > start else ""
    return first.split(",", 1)[0].split(";", 1)[0].strip()


def _builtin_sha256() -> Callable[..., Any]:
    """Python's own SHA-256 (no OpenSSL), else hashlib's.

    Inside Kamailio, OpenSSL allocates from Kamailio's shared memory (the tls module installs
    its allocator with CRYPTO_set_mem_functions), under a lock every worker takes: an OpenSSL
    HMAC there cost ~40 us (perf on the bench, 5.6.3; most of it in qm_shm_malloc), against
    ~2 us with Python's built-in SHA-256, whose objects live in the worker's own heap.
    `_sha256` in Python 3.11, `_sha2` from 3.12; both are CPython's standard build."""
    for name in ("_sha256", "_sha2"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


_SHA256 = _builtin_sha256()


@functools.lru_cache(maxsize=16)
def _keyed(secret: bytes) -> hmac.HMAC:
    """The standard library's HMAC keyed once per secret on `_SHA256` (its inner and outer pads
    hashed here); each MAC works on a copy, this one is never updated."""
    return hmac.new(secret, digestmod=_SHA256)


def _hmac_sha256(secret: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of `message` (the bytes hmac.digest(secret, message, "sha256") gives)."""
    mac = _keyed(secret).copy()
    mac.update(message)
    return mac.digest()


def _mac(secret: bytes, key_id: str, direction: str, call_id: str, tag: str, hop: str) -> str:
    message = "\n".join((key_id, direction, call_id, tag, hop)).encode("utf-8")
    return _b64(_hmac_sha256(secret, message)[:MAC_BYTES])


def sign(ring: KeyRing, direction: str, call_id: str, tag: str, hop: str) -> str:
    """The token for a call: `direction` "u" (Meta called) or "b"; `hop` the normalised
    business-side next hop ("host:port:transport")."""
    key_id = ring.current
    return f"{key_id}.{direction}.{_mac(ring.secrets[key_id], key_id, direction, call_id, tag, hop)}"


def token_direction(token: str) -> str | None:
    """"u" or "b" from a well-formed token (which tag to check it with), else None."""
    parts = token.split(".")
    return parts[1] if len(parts) == 3 and parts[1] in ("u", "b") else None


def verify(ring: KeyRing, token: str, call_id: str, tag: str, hop: str,
           now: float | None = None) -> bool:
    """True only when `token` was made by a key still verifying, for this Call-ID, tag and hop."""
    parts = token.split(".")
    if len(parts) != 3 or parts[1] not in ("u", "b"):
        return False
    key_id, direction, mac = parts
    secret = ring.verifying(key_id, time.time() if now is None else now)
    if secret is None:
        return False
    expected = _mac(secret, key_id, direction, call_id, tag, hop)
    return hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace"))


class KeyWatch:
    """The key ring of one file for one worker, re-read when the file changes (checked by
    stat at most once per RECHECK_SECONDS); a bad new file keeps the old ring (and says so)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ring = read_key_file(path)  # the edge refuses to start without a good key file
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self.problem: str | None = None

    def _file_stamp(self) -> tuple[int, int, int]:
        stat = self.path.stat()
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def current(self) -> KeyRing:
        now = time.monotonic()
        if now - self._checked < RECHECK_SECONDS:
            return self.ring
        self._checked = now
        try:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self.ring = read_key_file(self.path)
                self._stamp = stamp
                self.problem = None
        except (OSError, KeyFileError) as error:
            self.problem = str(error)
        return self.ring


def route_param(route_value: str, wanted: str) -> str | None:
    """The `wanted` parameter's value in the first entry of a Route header value (the entry
    loose_route checks is this edge), else None. Only the first entry counts: a value further
    down a forged route set proves nothing."""
    first = route_value.split(",", 1)[0].strip()
    if not first.startswith("<") or ">" not in first:
        return None
    uri = first[1:first.index(">")]
    for param in uri.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == wanted:
            return value.strip() or None
    return None


def route_token(route_value: str) -> str | None:
    """The PARAM (MAC token) of the first entry of a Route header value, else None."""
    return route_param(route_value, PARAM)


def sign_cseq_step(ring: KeyRing, call_id: str, tag: str, step: int) -> str:
    """The CSEQ_PARAM value for a business-initiated call whose requests toward Meta go `step`
    above FreeSWITCH's CSeq (`tag`: FreeSWITCH's From tag)."""
    if not 0 <= step <= MAX_CSEQ_STEP:
        raise ValueError(f"CSeq step {step} out of range")
    key_id = ring.current
    return f"{step}.{key_id}.{_mac(ring.secrets[key_id], key_id, 'cseq', call_id, tag, str(step))}"


def verify_cseq_step(ring: KeyRing, value: str, call_id: str, tag: str,
                     now: float | None = None) -> int | None:
    """The step of a CSEQ_PARAM value made by a key still verifying for this Call-ID and tag,
    else None (the direction field "cseq" keeps it apart from every route token)."""
    parts = value.split(".")
    if len(parts) != 3 or parts[0] not in {str(n) for n in range(MAX_CSEQ_STEP + 1)}:
        return None
    step, key_id, mac = parts
    secret = ring.verifying(key_id, time.time() if now is None else now)
    if secret is None:
        return None
    expected = _mac(secret, key_id, "cseq", call_id, tag, step)
    if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii", "replace")):
        return None
    return int(step)

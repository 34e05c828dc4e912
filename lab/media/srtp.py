"""SRTP and SRTCP for one call, keyed by SDES (RFC 4568) or by DTLS (RFC 5764).

libsrtp through pylibsrtp: the same library FreeSWITCH links, so both ends of a lab call agree
on every byte (replay windows, SRTCP index, authentication tag) the way they do in the field.
Only AES_CM_128_HMAC_SHA1_80 is offered, as Meta does.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

import pylibsrtp

SUITE = "AES_CM_128_HMAC_SHA1_80"
DTLS_PROFILE = b"SRTP_AES128_CM_SHA1_80"
KEY_LENGTH = 16
SALT_LENGTH = 14


@dataclass(frozen=True)
class SrtpKeys:
    """Master key + salt for what we send and for what we receive (30 bytes each)."""

    local: bytes
    remote: bytes


def new_master_key() -> bytes:
    return os.urandom(KEY_LENGTH + SALT_LENGTH)


def inline_key(master: bytes) -> str:
    """`inline:` key parameter of an `a=crypto` line."""
    return "inline:" + base64.b64encode(master).decode("ascii")


def parse_inline_key(key_params: str) -> bytes:
    """Master key + salt from `inline:<base64>[|lifetime][|MKI:len]`; ValueError otherwise."""
    if not key_params.startswith("inline:"):
        raise ValueError(f"crypto key parameters not inline: {key_params!r}")
    encoded = key_params[len("inline:"):].split("|", 1)[0]
    try:
        master = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError("crypto key is not base64") from None
    if len(master) != KEY_LENGTH + SALT_LENGTH:
        raise ValueError(f"crypto key is {len(master)} bytes, {SUITE} needs 30")
    return master


def dtls_srtp_keys(material: bytes, is_server: bool) -> SrtpKeys:
    """Split RFC 5764 4.2 keying material: client key, server key, client salt, server salt."""
    if len(material) != 2 * (KEY_LENGTH + SALT_LENGTH):
        raise ValueError("DTLS-SRTP keying material has the wrong length")
    client_key = material[:KEY_LENGTH]
    server_key = material[KEY_LENGTH:2 * KEY_LENGTH]
    client_salt = material[2 * KEY_LENGTH:2 * KEY_LENGTH + SALT_LENGTH]
    server_salt = material[2 * KEY_LENGTH + SALT_LENGTH:]
    client, server = client_key + client_salt, server_key + server_salt
    return SrtpKeys(local=server, remote=client) if is_server else SrtpKeys(local=client, remote=server)


class SrtpSession:
    """Protects what we send, unprotects what we receive, and counts what fails to authenticate."""

    def __init__(self, keys: SrtpKeys) -> None:
        self._tx = pylibsrtp.Session(pylibsrtp.Policy(key=keys.local,
                                                      ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self._rx = pylibsrtp.Session(pylibsrtp.Policy(key=keys.remote,
                                                      ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        self.auth_failures = 0
        self.rtcp_auth_failures = 0

    def protect(self, rtp: bytes) -> bytes:
        return bytes(self._tx.protect(rtp))

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return bytes(self._tx.protect_rtcp(rtcp))

    def unprotect(self, srtp: bytes) -> bytes | None:
        """The plain RTP packet, or None (counted) when it fails authentication or replay."""
        try:
            return bytes(self._rx.unprotect(srtp))
        except pylibsrtp.Error:
            self.auth_failures += 1
            return None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes | None:
        try:
            return bytes(self._rx.unprotect_rtcp(srtcp))
        except pylibsrtp.Error:
            self.rtcp_auth_failures += 1
            return None

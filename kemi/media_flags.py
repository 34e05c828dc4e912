"""The rtpengine flags for each leg of a WhatsApp call, when rtpengine anchors the media.

Why a table in plain code: which profile each side gets is the whole of the media design (Meta's
side DTLS-SRTP with ICE or SDES, exactly as the number is set at Meta; FreeSWITCH's side plain
RTP), and a wrong flag shows only as a silent call. Tests walk every direction, leg and mode.
Standard library only (runs inside Kamailio).

The strings are Kamailio's rtpengine module syntax (space-separated; ``key=value`` becomes an ng
dictionary entry, ``SDES-x`` and ``rtcp-mux-x`` go to their lists), checked against Debian 12's
rtpengine 10.5 (../shared/spec/rtpengine.md):
- toward Meta, DTLS: ``UDP/TLS/RTP/SAVPF ICE=force SDES-off rtcp-mux-offer rtcp-mux-require``
  gives one component, rtcp-mux, ICE and ``a=setup:actpass`` with no ``a=crypto`` lines (without
  ``SDES-off`` rtpengine also offers every SDES suite, NULL ones included). Answering Meta's
  offer needs no transport flag: rtpengine answers in the offer's profile (``a=setup:active``,
  ICE, rtcp-mux), and as DTLS client it starts the handshake although Meta, ICE-lite, never
  sends a Binding request;
- toward Meta, SDES: ``RTP/SAVP`` with every suite the number does not use turned off
  (``SDES-no-<suite>``: 10.5 has no ``only``), DTLS off, no ICE;
- toward FreeSWITCH: ``RTP/AVP`` (or ``RTP/SAVP`` when the site keeps SRTP inside), ICE removed,
  rtcp-mux demultiplexed (FreeSWITCH's plain profile expects a separate RTCP port).
``trust-address``: the SDP's own address is right on both sides (Meta's media servers are not its
SIP servers, and behind HAProxy the SIP source is loopback); ``replace-origin`` and
``replace-session-connection`` make rtpengine's address the one each side sees.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMON = ("trust-address", "replace-origin", "replace-session-connection")

RTPENGINE_SUITES = (
    "AEAD_AES_256_GCM", "AEAD_AES_128_GCM",
    "AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32",
    "AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
    "F8_128_HMAC_SHA1_80", "F8_128_HMAC_SHA1_32",
    "NULL_HMAC_SHA1_80", "NULL_HMAC_SHA1_32",
)
"""Every suite rtpengine 10.5 offers by default (RFC 4568 / RFC 6188 / RFC 7714 names)."""

_FREESWITCH_NAMES = {
    "AES_CM_192_HMAC_SHA1_80": "AES_192_CM_HMAC_SHA1_80",
    "AES_CM_192_HMAC_SHA1_32": "AES_192_CM_HMAC_SHA1_32",
    "AES_CM_256_HMAC_SHA1_80": "AES_256_CM_HMAC_SHA1_80",
    "AES_CM_256_HMAC_SHA1_32": "AES_256_CM_HMAC_SHA1_32",
}
"""The site config spells suites as FreeSWITCH does; rtpengine uses the RFC 6188 names."""


class MediaFlagsError(ValueError):
    """A number's media settings rtpengine cannot be asked for (unknown mode or suite)."""


@dataclass(frozen=True)
class NumberMedia:
    """What rtpengine needs of one business number (from the edge settings)."""

    srtp_mode: str  # "DTLS" or "SDES": as set at Meta (srtp_key_exchange_protocol)
    sdes_suites: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80",)


def rtpengine_suite(name: str) -> str:
    suite = _FREESWITCH_NAMES.get(name, name)
    if suite not in RTPENGINE_SUITES:
        raise MediaFlagsError(f"SDES suite {name!r} is not one rtpengine offers")
    return suite


def toward_meta_offer(number: NumberMedia) -> str:
    """Business-initiated call: FreeSWITCH's offer becomes the one Meta expects of the number."""
    if number.srtp_mode == "DTLS":
        return _join("UDP/TLS/RTP/SAVPF", "ICE=force", "SDES-off", "rtcp-mux-offer",
                     "rtcp-mux-require")
    if number.srtp_mode == "SDES":
        wanted = {rtpengine_suite(s) for s in number.sdes_suites}
        if not wanted:
            raise MediaFlagsError("an SDES number needs at least one suite")
        unwanted = [f"SDES-no-{s}" for s in RTPENGINE_SUITES if s not in wanted]
        return _join("RTP/SAVP", "ICE=remove", "DTLS=off", "rtcp-mux-offer", "rtcp-mux-require",
                     *unwanted)
    raise MediaFlagsError(f"unknown srtp_mode {number.srtp_mode!r}")


def toward_meta_answer(number: NumberMedia) -> str:
    """User-initiated call: FreeSWITCH's answer goes back to Meta in Meta's offer's profile."""
    if number.srtp_mode not in ("DTLS", "SDES"):
        raise MediaFlagsError(f"unknown srtp_mode {number.srtp_mode!r}")
    return _join()


def toward_freeswitch(inside: str) -> str:
    """Either direction, offer or answer: what FreeSWITCH's plain profile takes."""
    if inside == "RTP":
        return _join("RTP/AVP", "ICE=remove", "DTLS=off", "rtcp-mux-demux")
    if inside == "SDES":
        return _join("RTP/SAVP", "ICE=remove", "DTLS=off", "rtcp-mux-demux")
    raise MediaFlagsError(f"unknown inside profile {inside!r} (RTP or SDES)")


def _join(*flags: str) -> str:
    return " ".join((*COMMON, *flags))

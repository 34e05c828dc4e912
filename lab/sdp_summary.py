"""One line saying what an SDP body negotiates: what the lab prints beside each call.

For SDES numbers Meta needs `RTP/SAVP` with an `a=crypto` line of a suite it supports; for DTLS
numbers `UDP/TLS/RTP/SAVPF` with a fingerprint, `a=setup:active` on FreeSWITCH's answer (it is
the DTLS client) and ICE candidates. The line names exactly those, plus the codecs.
"""

from __future__ import annotations

import re


def sdp_body(message: str) -> str:
    """The body of a SIP message (after the blank line), or "" without one."""
    _, _, body = message.replace("\r\n", "\n").partition("\n\n")
    return body if "m=" in body else ""


def describe_sdp(body: str) -> str:
    """`RTP/SAVP, crypto AES_CM_128_HMAC_SHA1_80, opus/48000/2 telephone-event/8000`-style."""
    media = re.search(r"^m=audio \d+ (\S+)", body, re.MULTILINE)
    if media is None:
        return "no audio offer/answer"
    parts = [media[1]]
    suites = re.findall(r"^a=crypto:\d+ (\S+)", body, re.MULTILINE)
    if suites:
        parts.append("crypto " + " ".join(suites))
    fingerprint = re.search(r"^a=fingerprint:(\S+) (\S+)", body, re.MULTILINE)
    if fingerprint:
        value = fingerprint[2]
        parts.append(f"fingerprint {fingerprint[1]} {value[:11]}…{value[-5:]}"
                     if len(value) > 20 else f"fingerprint {fingerprint[1]} {value}")
    setup = re.search(r"^a=setup:(\S+)", body, re.MULTILINE)
    if setup:
        parts.append(f"setup:{setup[1]}")
    candidates = re.findall(r"^a=candidate:\S+ (\d) (\S+) \d+ (\S+) (\d+) typ (\S+)", body,
                            re.MULTILINE)
    if candidates:
        shown = ", ".join(f"{ip}:{port} {kind} (component {component})"
                          for component, _, ip, port, kind in candidates)
        parts.append(f"{len(candidates)} candidate{'s' if len(candidates) > 1 else ''} {shown}")
    if re.search(r"^a=rtcp-mux", body, re.MULTILINE):
        parts.append("rtcp-mux")
    codecs = re.findall(r"^a=rtpmap:\d+ (\S+)", body, re.MULTILINE)
    if codecs:
        parts.append(" ".join(codecs))
    return ", ".join(parts)

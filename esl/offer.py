"""Which SRTP key exchange an SDP offer asks for, so a mismatch with the number is refused.

Meta offers the mode set on the number (``srtp_key_exchange_protocol``): DTLS-SRTP
(``UDP/TLS/RTP/SAVPF`` with ``a=fingerprint``) or SDES (``RTP/SAVP`` with ``a=crypto``). When
that differs from the number's ``srtp_mode`` here, FreeSWITCH would answer anyway with whatever
its channel variables allow, and the call fails later as silence or a media timeout; refusing
the offer with 488 and saying why is what an integrator can act on at once.
"""

from __future__ import annotations

from typing import Literal

OfferedMode = Literal["SDES", "DTLS", "RTP"]


def offered_srtp_mode(sdp: str | None) -> OfferedMode | None:
    """The key exchange of the offer's first audio stream; None when there is no audio offer.

    DTLS: a fingerprint (session or media level) on a ``.../TLS/...`` or ``SAVP(F)`` profile;
    SDES: ``a=crypto`` on an ``RTP/SAVP(F)`` profile; RTP: neither (plain, unencrypted).
    """
    if not sdp:
        return None
    session_fingerprint = False
    profile: str | None = None
    fingerprint = crypto = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if profile is not None:
                break  # only the first audio stream counts; Meta sends one
            fields = line[2:].split()
            if len(fields) >= 3 and fields[0] == "audio":
                profile = fields[2].upper()
            continue
        if line.startswith("a=fingerprint:"):
            if profile is None:
                session_fingerprint = True
            else:
                fingerprint = True
        elif line.startswith("a=crypto:") and profile is not None:
            crypto = True
    if profile is None:
        return None
    if "TLS" in profile or ("SAVP" in profile and (fingerprint or session_fingerprint)
                            and not crypto):
        return "DTLS"
    if "SAVP" in profile and crypto:
        return "SDES"
    return "RTP"

"""Channel variables that make a call acceptable to Meta, per number's SRTP mode.

- SDES: ``rtp_secure_media*=mandatory:<suite>:<suite>`` (suites joined by ``:`` as
  switch_core_media.c splits them).
- DTLS: an inbound ``UDP/TLS/RTP/SAVPF`` offer with a fingerprint is taken automatically and,
  answering Meta's ``actpass``, FreeSWITCH takes ``active`` (the DTLS client role Meta needs);
  BIC offers need ``media_webrtc=true`` (AVPF + ICE) and ``rtp_use_dtls=true``, and
  ``sdp_udp_tls_rtp_savpf=true`` (patches/freeswitch/0001) to write Meta's UDP/TLS/RTP/SAVPF.
- DTMF: Meta takes RFC 4733 telephone-event at 8000 Hz only; ``sdp_telephone_event_rate=8000``
  (patches/freeswitch/0002) makes a BIC offer carry telephone-event/8000 alone (stock offers one
  per codec rate: ``telephone-event/48000`` beside Opus) and FreeSWITCH count the events it sends
  in 8000 Hz units on both directions.
- BIC offers carry the number's codecs only: OPUS, plus PCMU/PCMA where the number enables them
  (Meta's ``audio.additional_codecs``); behind rtpengine PCMU as well, for the telephone-event/8000
  it brings (``bic_codecs``; the edge removes PCMU again); a UIC answer picks from
  ``[esl.media] codecs`` among what Meta offered, except for a number with G.711 enabled, whose
  answer takes G.711 first (``uic_codecs``: G.711 end to end, no transcoding anywhere).
- Always: OPUS first in offers (and in answers but for G.711 numbers);
  no session timers and no hold, because Meta answers re-INVITEs with 500;
  silence while idle, and a media timeout shorter than Meta's 20 s so FreeSWITCH ends a dead
  call cleanly (cause MEDIA_TIMEOUT, flagged in the CDR) before Meta does.
"""

from __future__ import annotations

from siteconfig.controller import MediaSettings, NumberSettings, check_safe_argument

MULTISET_DELIMITER = "|"
TELEPHONE_EVENT_RATE = 8000
"""Meta's only DTMF clock rate (RFC 4733 telephone-event/8000)."""
DTMF_CLOCK_CODEC = "PCMU"
"""An 8000 Hz codec a stock FreeSWITCH needs in its offer to offer telephone-event/8000."""


def srtp_variables(number: NumberSettings, direction: str) -> list[tuple[str, str]]:
    """SRTP variables for one leg: ``direction`` is ``inbound`` (UIC) or ``outbound`` (BIC).

    ``RTP`` (rtpengine anchors Meta's media): none, the leg is plain RTP both ways, which a stock
    FreeSWITCH profile takes and offers without any DTLS or WebRTC setting.
    """
    if number.srtp_mode == "RTP":
        return []
    if number.srtp_mode == "SDES":
        value = "mandatory:" + ":".join(number.sdes_suites)
        return [("rtp_secure_media", value), (f"rtp_secure_media_{direction}", value)]
    if direction == "outbound":
        # sdp_udp_tls_rtp_savpf: patches/freeswitch/0001 offers UDP/TLS/RTP/SAVPF (as Meta does)
        # instead of the legacy RTP/SAVPF; stock FreeSWITCH ignores the variable
        return [("media_webrtc", "true"), ("rtp_use_dtls", "true"), ("sdp_udp_tls_rtp_savpf", "true")]
    return []


def dtmf_variables() -> list[tuple[str, str]]:
    """telephone-event at 8000 Hz only, in offers and in the events FreeSWITCH sends
    (patches/freeswitch/0002; stock FreeSWITCH ignores the variable)."""
    return [("sdp_telephone_event_rate", str(TELEPHONE_EVENT_RATE))]


def anchor_variables(number: NumberSettings) -> list[tuple[str, str]]:
    """Behind rtpengine: Meta's own SRTP mode (``wa_srtp_mode`` is FreeSWITCH's leg), so the
    CDR says what Meta's side used (esl/cdr.py)."""
    return [("wa_meta_srtp_mode", number.meta_srtp_mode)] if number.meta_srtp_mode else []


def bic_codecs(number: NumberSettings) -> str:
    """The codecs a BIC offer carries: OPUS, then what the number enables beside it.

    Behind rtpengine, a number without G.711 gets PCMU offered too, for its telephone-event:
    a stock FreeSWITCH offers one telephone-event per codec clock rate (OPUS alone: /48000
    only, which Meta does not take and rtpengine 10.5 cannot turn into /8000), so PCMU's
    8000 Hz brings ``telephone-event/8000``; the edge then removes PCMU and /48000 from the
    offer (kemi/sdp_codecs.py), Meta answers OPUS with /8000, and FreeSWITCH sends and reads
    DTMF on it. (The direct path has no edge filter: 0002's variable does it there.)
    """
    codecs: tuple[str, ...] = ("OPUS", *number.additional_codecs)
    if number.meta_srtp_mode is not None and not number.additional_codecs:
        codecs += (DTMF_CLOCK_CODEC,)
    return ",".join(codecs)


def uic_codecs(number: NumberSettings, media: MediaSettings) -> tuple[str, list[tuple[str, str]]]:
    """The codec list a UIC answer chooses from, and the variables that make FreeSWITCH keep
    its order.

    A number with ``additional_codecs`` asked Meta to offer G.711 so that calls can stay G.711
    end to end (to a PBX or carrier on G.711, with no transcoding anywhere); Meta still offers
    Opus first, and the profile's generous negotiation would follow Meta's order and answer
    Opus, leaving FreeSWITCH to transcode every packet. So for such a number the answer lists
    the number's G.711 codecs first, then ``[esl.media] codecs``, and ``rtp_codec_negotiation
    = greedy`` makes FreeSWITCH pick by that list (read when the answer is negotiated: the
    profile negotiates late). Every other number answers Opus as before.
    """
    if not number.additional_codecs:
        return ",".join(media.codecs), []
    preferred = list(number.additional_codecs)
    rest = [codec for codec in media.codecs if codec.upper() not in preferred]
    return ",".join(preferred + rest), [("rtp_codec_negotiation", "greedy")]


def common_variables(media: MediaSettings, codecs: str | None = None) -> list[tuple[str, str]]:
    """Variables for both directions; ``codecs`` (default: ``media.codecs``) is the codec list."""
    return [
        ("absolute_codec_string", codecs or ",".join(media.codecs)),
        *dtmf_variables(),
        ("sofia_session_timeout", "0"),
        ("sip_require_timer", "false"),
        ("rtp_disable_hold", "true"),
        ("send_silence_when_idle", str(media.idle_silence_level)),
        ("media_timeout", str(media.media_timeout_ms)),
    ]


def uic_variables(
    number: NumberSettings, media: MediaSettings, tags: dict[str, str]
) -> list[tuple[str, str]]:
    """All variables set before answering a user-initiated call, plus our ``wa_*`` tags."""
    codecs, negotiation = uic_codecs(number, media)
    variables = srtp_variables(number, "inbound") + common_variables(media, codecs) + negotiation
    variables.append(("wa_srtp_mode", number.srtp_mode))
    variables += anchor_variables(number)
    variables += sorted(tags.items())
    return variables


def multiset_argument(variables: list[tuple[str, str]]) -> str:
    """One ``multiset ^^|a=1|b=2`` argument: a single sendmsg instead of one per variable."""
    parts = []
    for name, value in variables:
        check_safe_argument(value, f"variable {name}")
        if MULTISET_DELIMITER in value or MULTISET_DELIMITER in name:
            raise ValueError(f"variable {name} must not contain {MULTISET_DELIMITER!r}")
        parts.append(f"{name}={value}")
    return "^^" + MULTISET_DELIMITER + MULTISET_DELIMITER.join(parts)


def silence_stream(media: MediaSettings) -> str:
    """``playback`` argument that puts a first RTP packet on the wire right after answer."""
    return f"silence_stream://{media.silence_on_answer_ms},1400"


def dial_variables(variables: list[tuple[str, str]]) -> str:
    """``{a=1,b=2}`` prefix of a dial string; commas inside values escaped as ``\\,``."""
    items = []
    for name, value in variables:
        check_safe_argument(value, f"variable {name}")
        items.append(f"{name}={value.replace(',', chr(92) + ',')}")
    return "{" + ",".join(items) + "}"

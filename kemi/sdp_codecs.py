"""Which payload types of FreeSWITCH's offer may go to Meta ([media] anchor = "rtpengine", BIC).

Why the edge chooses and not rtpengine: Meta takes Opus, DTMF as ``telephone-event/8000`` only,
and G.711 only when the number has it enabled (``audio.additional_codecs``). A stock FreeSWITCH
gateway offers more (``opus PCMU PCMA G722 telephone-event/48000 telephone-event/8000``).
Debian 12's rtpengine 10.5 cannot be asked for exactly that set: any ``codec`` flag (strip,
except, mask, offer, consume) engages its codec tracker, which drops ``telephone-event/8000``
once no 8 kHz codec is left and adds a ``telephone-event/48000`` of its own for Opus (checked
over ng: every combination gave ``opus telephone-event/48000``). Passed through without codec
flags, rtpengine keeps the offer's payload types as they are. So the edge names the payload types
to keep here, Kamailio's sdpops removes the rest from the body, and rtpengine then sees an offer
it need not touch: Opus passed through, no transcoding.

Standard library only (runs inside Kamailio).
"""

from __future__ import annotations

from dataclasses import dataclass

OPUS = "opus/48000"
DTMF = "telephone-event/8000"
G711 = {"PCMU": "pcmu/8000", "PCMA": "pcma/8000"}
STATIC = {"0": "pcmu/8000", "8": "pcma/8000"}
"""RFC 3551 static payload types that may come without an rtpmap line."""


@dataclass(frozen=True)
class CodecChoice:
    keep: tuple[str, ...]  # payload types of the first audio stream, in the offer's order
    dropped: tuple[str, ...]  # "PT encoding" of each one removed, for the log line
    voice: bool  # a codec Meta plays survives (not only DTMF): else the call is refused


def audio_encodings(sdp: str) -> list[tuple[str, str]]:
    """(payload type, lowercased "name/rate") of the first audio stream's m= line, in order.

    A payload type without an rtpmap is named from RFC 3551's static table when it is 0 or 8,
    else "" (unknown: never kept).
    """
    formats: list[str] = []
    names: dict[str, str] = {}
    in_audio = seen_audio = False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if seen_audio:
                break
            parts = line[2:].split()
            in_audio = seen_audio = len(parts) >= 4 and parts[0] == "audio"
            if in_audio:
                formats = parts[3:]
        elif in_audio and line.startswith("a=rtpmap:"):
            pt, _, encoding = line[len("a=rtpmap:"):].partition(" ")
            name_rate = "/".join(encoding.strip().lower().split("/")[:2])
            names[pt.strip()] = name_rate
    return [(pt, (names.get(pt) or STATIC.get(pt, "")) if _payload_type(pt) else "")
            for pt in formats]


def _payload_type(text: str) -> bool:
    """0..127 in decimal: anything else is never kept (its id goes to sdpops)."""
    return text.isascii() and text.isdigit() and len(text) <= 3 and int(text) <= 127


def toward_meta(sdp: str, additional_codecs: tuple[str, ...] = ()) -> CodecChoice:
    """The payload types of a business offer Meta takes for this number; the rest dropped.

    Kept: every Opus (48 kHz) payload type, PCMU/PCMA when the number has them enabled at Meta,
    and the first ``telephone-event/8000`` (Meta reads DTMF at 8000 Hz only; one is enough).
    """
    wanted = {OPUS} | {G711[c] for c in additional_codecs if c in G711}
    keep: list[str] = []
    dropped: list[str] = []
    dtmf_kept = voice = False
    for pt, encoding in audio_encodings(sdp):
        if encoding in wanted:
            keep.append(pt)
            voice = True
        elif encoding == DTMF and not dtmf_kept:
            keep.append(pt)
            dtmf_kept = True
        else:
            dropped.append(f"{pt} {encoding or 'unknown'}")
    return CodecChoice(tuple(keep), tuple(dropped), voice)

"""What rtpengine saw of a call's media, read at its end ([media] anchor = "rtpengine").

Why: with rtpengine anchoring, a silent call has three different causes an operator must tell
apart: Meta sent nothing, the business sent nothing (Meta then ends the call after 20 s), or
rtpengine lost the session mid-call (restarted: its ports no longer relay, both sides go quiet).
The edge asks rtpengine (``rtpengine_query_v``) just before it deletes the session and logs one
line from this: packets received from each side, or that rtpengine no longer knew the call.

Standard library only (runs inside Kamailio). rtpengine's answer is trusted no further than its
shape: anything unexpected counts as zero.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MAX_QUERY_TEXT = 256 * 1024


@dataclass(frozen=True)
class MediaSeen:
    from_meta: int  # RTP packets rtpengine received from Meta's side
    from_business: int  # ... from FreeSWITCH's side

    def line(self) -> str:
        return f"media from_meta={self.from_meta} from_business={self.from_business} packets"

    def diagnosis(self) -> str | None:
        """A code when a side sent nothing (the call was silent that way), else None."""
        if self.from_business == 0 and self.from_meta == 0:
            return "no_media"
        if self.from_business == 0:
            return "no_business_media"
        if self.from_meta == 0:
            return "no_meta_media"
        return None


def media_seen(query_json: str, meta_tag: str) -> MediaSeen | None:
    """Packets per side from ``rtpengine_query_v("j", ...)``'s JSON; None when unreadable.

    ``meta_tag``: the SIP tag of Meta's side of the dialog. Every other tag is the business's.
    """
    if not query_json or len(query_json) > MAX_QUERY_TEXT:
        return None
    try:
        answer = json.loads(query_json)
    except ValueError:
        return None
    tags = answer.get("tags") if isinstance(answer, dict) else None
    if not isinstance(tags, dict):
        return None
    meta = business = 0
    for tag, monologue in tags.items():
        packets = _rtp_packets(monologue)
        if tag == meta_tag:
            meta += packets
        else:
            business += packets
    return MediaSeen(meta, business)


def _rtp_packets(monologue: object) -> int:
    """Packets received on the RTP (not RTCP) streams of one side's media."""
    total = 0
    medias = monologue.get("medias") if isinstance(monologue, dict) else None
    for media in medias if isinstance(medias, list) else []:
        streams = media.get("streams") if isinstance(media, dict) else None
        for stream in streams if isinstance(streams, list) else []:
            flags = stream.get("flags") if isinstance(stream, dict) else None
            if not isinstance(flags, list) or "RTP" not in flags:
                continue  # an RTCP-only port (the demultiplexed side), or not a stream
            stats = stream.get("stats")
            packets = stats.get("packets") if isinstance(stats, dict) else 0
            if isinstance(packets, int) and packets > 0:
                total += packets
    return total

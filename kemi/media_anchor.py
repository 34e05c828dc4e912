"""rtpengine calls at the points of a call where media changes hands ([media] anchor = rtpengine).

Why its own module: the edge's routes say *when* (an INVITE in, an answer back, the call over);
this says *what* rtpengine is asked, with the flags kemi/media_flags.py chooses per number and
direction. With anchor = "freeswitch" every method is a no-op that succeeds, so the routes read
the same for both anchors.

Sessions never leak: the routes call ``end`` on BYE, CANCEL and every final failure; rtpengine's
own timeouts (rendered from [media.rtpengine]) catch the rest.
"""

from __future__ import annotations

import KSR

from kemi.media_flags import (
    MediaFlagsError,
    NumberMedia,
    toward_freeswitch,
    toward_meta_answer,
    toward_meta_offer,
)
from kemi.media_stats import MediaSeen, media_seen
from kemi.sdp_codecs import CodecChoice, toward_meta
from kemi.settings import EdgeSettings

SDP = "application/sdp"
DELETE_FLAGS = "delete-delay=0"
QUERY_VAR = "$var(wa_rtpengine_query)"


class MediaAnchor:
    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.active = settings.media.rtpengine

    def _number(self, digits: str) -> NumberMedia:
        number = self.settings.numbers[digits]
        return NumberMedia(number.srtp_mode, number.sdes_suites)

    def uic_offer(self) -> bool:
        """Meta's INVITE toward FreeSWITCH: Meta's DTLS/SDES offer becomes plain RTP."""
        if not self.active:
            return True
        return _ok(KSR.rtpengine.rtpengine_offer(toward_freeswitch(self.settings.media.inside)))

    def uic_answer(self, digits: str) -> bool:
        """FreeSWITCH's 18x/2xx with SDP toward Meta, in the profile Meta offered."""
        if not self.active or KSR.textops.has_body_type(SDP) < 0:
            return True
        try:
            flags = toward_meta_answer(self._number(digits))
        except (KeyError, MediaFlagsError):
            return False
        return _ok(KSR.rtpengine.rtpengine_answer(flags))

    def bic_codecs(self, digits: str) -> CodecChoice | None:
        """FreeSWITCH's offer cut to what Meta takes of this number (kemi/sdp_codecs.py says
        why the edge does it and not rtpengine): sdpops removes the other payload types and
        the body is rebuilt, so rtpengine_offer reads the cut offer. None when nothing needed
        cutting; a choice without voice means the call must be refused (no_common_codec)."""
        if not self.active or KSR.textops.has_body_type(SDP) < 0:
            return None
        body = KSR.pv.get("$rb")
        number = self.settings.numbers.get(digits)
        if not isinstance(body, str) or number is None:
            return None
        choice = toward_meta(body, number.additional_codecs)
        if choice.voice and choice.dropped:
            # KEMI name of sdp_keep_codecs_by_id (5.6.3 and 6.x): every other payload type goes
            KSR.sdpops.keep_codecs_by_id(",".join(choice.keep), "audio")
            KSR.textopsx.msg_apply_changes()
        return choice

    def bic_offer(self, digits: str) -> bool:
        """FreeSWITCH's plain offer toward Meta: DTLS-SRTP with ICE, or SDES, as the number is."""
        if not self.active:
            return True
        try:
            flags = toward_meta_offer(self._number(digits))
        except (KeyError, MediaFlagsError):
            return False
        return _ok(KSR.rtpengine.rtpengine_offer(flags))

    def bic_answer(self) -> bool:
        """Meta's 18x/2xx with SDP back to FreeSWITCH as plain RTP."""
        if not self.active or KSR.textops.has_body_type(SDP) < 0:
            return True
        return _ok(KSR.rtpengine.rtpengine_answer(toward_freeswitch(self.settings.media.inside)))

    def end(self) -> None:
        """The call is over (BYE, CANCEL, a final failure): rtpengine frees its ports now.

        ``delete-delay=0``: without it rtpengine 10.5 keeps a deleted session (and its ports)
        for another 30 s, so neither an operator nor a test could tell a leak from a call that
        just ended; a late retransmitted BYE then finds no session, which is harmless.
        """
        if self.active:
            KSR.rtpengine.rtpengine_delete(DELETE_FLAGS)

    def end_of_call(self, meta_tag: str) -> MediaSeen | None:
        """An answered call's BYE: what rtpengine saw of each side (kemi/media_stats.py), then
        the session deleted. None when rtpengine no longer knew the call (restarted, or not
        reachable): the caller logs that as the reason a call went silent."""
        if not self.active:
            return None
        seen = None
        if int(KSR.rtpengine.rtpengine_query_v("j", QUERY_VAR)) > 0:
            text = KSR.pv.get(QUERY_VAR)
            seen = media_seen(text if isinstance(text, str) else "", meta_tag)
        KSR.rtpengine.rtpengine_delete(DELETE_FLAGS)
        return seen


def _ok(result: int) -> bool:
    return int(result) > 0

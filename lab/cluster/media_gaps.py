"""What each media peer of the cluster lab received and when: the silent stretches in it.

A drill that kills a node mid-call wants to know, for each direction of each call up at the
fault, whether media came back and after how long, and which tone came back. `Arrivals` keeps
the packet arrival times' silent stretches (longer than GAP_S; the peers send every 20 ms), on
the monotonic clock every process of the machine shares (the business nodes are processes of
their own: they print their `Arrivals` at a call's end). `MeasuredMediaPeer` (Meta's side) and
`MeasuredPlainPeer` (the business's) are the lab's peers with one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.media.peer import MediaPeer, MediaReport
from lab.media.plain_peer import PlainReport, PlainRtpPeer
from lab.media.tone import dominant_frequency

GAP_S = 0.03  # 10 ms later than the next packet was due (the peers send every 20 ms)
MAX_GAPS = 32  # the longest ones are kept


@dataclass
class Gap:
    start: float  # the last packet before the silence (monotonic s)
    end: float  # the first one after it
    packets_at: int = 0  # packets received before the one that ended it
    audio_at: int = 0  # decoded audio (the peer's unit) before it
    heard_hz: float | None = None  # the tone of what came after it (to the call's end)
    packets_after: int = 0  # to the call's end

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000


@dataclass
class Arrivals:
    first_at: float | None = None
    last_at: float | None = None
    packets: int = 0
    gaps: list[Gap] = field(default_factory=list)

    def packet(self, now: float, audio_at: int = 0) -> None:
        """One packet arrived; `audio_at`: how much decoded audio the peer had before it."""
        if self.first_at is None:
            self.first_at = now
        elif self.last_at is not None and now - self.last_at > GAP_S:
            if len(self.gaps) >= MAX_GAPS:  # the shortest goes
                shortest = min(self.gaps, key=lambda g: g.end - g.start)
                if shortest.end - shortest.start < now - self.last_at:
                    self.gaps.remove(shortest)
            if len(self.gaps) < MAX_GAPS:
                self.gaps.append(Gap(self.last_at, now, self.packets, audio_at))
        self.last_at = now
        self.packets += 1

    def finish(self, audio_end: int,
               heard: Callable[[int, int], float | None]) -> None:
        """At the call's end: each gap's packets and tone (`heard(from, to)`) from it on."""
        for gap in self.gaps:
            gap.packets_after = self.packets - gap.packets_at
            gap.heard_hz = heard(gap.audio_at, audio_end)

    def around(self, at: float) -> tuple[float | None, Gap | None]:
        """The silence `at` fell into: (its length in ms, the gap) when media came back after
        it; (None, None) when nothing arrived after `at` (never came back); (0, None) when
        packets kept arriving across it (no gap longer than GAP_S)."""
        if self.last_at is None or self.last_at < at:
            return None, None
        for gap in self.gaps:
            if gap.start <= at <= gap.end:
                return gap.ms, gap
        return 0.0, None

    def to_json(self) -> dict[str, Any]:
        return {"first_at": self.first_at, "last_at": self.last_at, "packets": self.packets,
                "gaps": [[g.start, g.end, g.heard_hz, g.packets_after] for g in self.gaps]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Arrivals:
        return cls(data.get("first_at"), data.get("last_at"), int(data.get("packets", 0)),
                   [Gap(float(g[0]), float(g[1]), heard_hz=g[2], packets_after=int(g[3]))
                    for g in data.get("gaps", [])])


class MeasuredMediaPeer(MediaPeer):
    """Meta's media peer (SDES or DTLS) keeping the `Arrivals` of the business's audio."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals = Arrivals()
        self._frames = 0  # audio frames decoded so far (the peer keeps the latest ones)

    def _rtp_received(self, data: bytes) -> None:
        before, frames = self.report.packets_received, len(self._heard)
        super()._rtp_received(data)
        if self.report.packets_received > before:
            self.arrivals.packet(time.monotonic(), self._frames)
            if len(self._heard) != frames or len(self._heard) == self._heard.maxlen:
                self._frames += 1

    def finish_report(self) -> MediaReport:
        report = super().finish_report()
        kept = list(self._heard)
        first_kept = self._frames - len(kept)  # frame number of kept[0]

        def heard(start: int, end: int) -> float | None:
            start += 25  # half a second for the decoder to settle
            frames = kept[max(0, start - first_kept):max(0, end - first_kept)]
            return dominant_frequency(b"".join(frames), self.audio.rate)
        self.arrivals.finish(self._frames, heard)
        return report


class MeasuredPlainPeer(PlainRtpPeer):
    """The business's plain-RTP peer keeping the `Arrivals` of Meta's audio."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals = Arrivals()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        before, offset = self.report.packets_received, len(self._heard)
        super().datagram_received(data, addr)
        if self.report.packets_received > before:
            self.arrivals.packet(time.monotonic(), offset)

    async def close(self) -> PlainReport:
        report = await super().close()
        rate = self.audio.rate  # int16 mono: `rate` bytes are half a second

        def heard(start: int, end: int) -> float | None:
            # half a second after the gap for the decoder to settle, then the tone
            return dominant_frequency(bytes(self._heard[start + rate:end]), rate)
        self.arrivals.finish(len(self._heard), heard)
        return report

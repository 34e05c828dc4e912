"""What a receiver learns from one RTP stream's headers: packets lost and interarrival jitter.

The figures an RTCP receiver report carries (RFC 3550 6.4.1 and appendix A.1, A.3, A.8):
expected packets from the extended highest sequence number, lost = expected - received (late
duplicates can make it negative, as RFC 3550 allows; shown as zero), and the interarrival jitter
J += (|D| - J) / 16 in RTP timestamp units, D the change in transit time between two packets.
Only the audio payload type feeds the jitter: RFC 4733 events repeat one timestamp for a whole
digit and would read as jitter that is not there. A new SSRC starts a new source (FreeSWITCH
changes SSRC when a bridge or playback changes the stream) and the counts add up.
"""

from __future__ import annotations

from dataclasses import dataclass

SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1: a larger jump forward is a restarted sender, not loss


@dataclass
class _Source:
    ssrc: int
    base_seq: int
    max_seq: int
    cycles: int = 0
    received: int = 1
    last_transit: float | None = None
    jitter: float = 0.0  # in timestamp units

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base_seq + 1


class ReceiveStats:
    """Loss and jitter of the RTP a peer receives; `clock_rate` is the audio's RTP clock."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self._done: list[_Source] = []
        self._source: _Source | None = None

    def packet(self, ssrc: int, sequence: int, timestamp: int, arrival_s: float, *,
               audio: bool = True) -> None:
        """One authenticated RTP packet; `arrival_s` on a monotonic clock."""
        source = self._source
        if source is None or source.ssrc != ssrc:
            if source is not None:
                self._done.append(source)
            source = self._source = _Source(ssrc, sequence, sequence)
        else:
            source.received += 1
            delta = (sequence - source.max_seq) % SEQ_MOD
            if 0 < delta < MAX_DROPOUT:
                if sequence < source.max_seq:
                    source.cycles += SEQ_MOD
                source.max_seq = sequence
        if audio:
            transit = arrival_s * self.clock_rate - timestamp
            if source.last_transit is not None:
                d = abs(transit - source.last_transit)
                if d < (1 << 31):  # a timestamp wrap between two packets is not jitter
                    source.jitter += (d - source.jitter) / 16
            source.last_transit = transit

    def _sources(self) -> list[_Source]:
        return self._done + ([self._source] if self._source is not None else [])

    @property
    def expected(self) -> int:
        return sum(source.expected for source in self._sources())

    @property
    def received(self) -> int:
        return sum(source.received for source in self._sources())

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    @property
    def jitter_ms(self) -> float:
        """The current source's jitter (the one an RTCP report would carry), in milliseconds."""
        source = self._source
        return 0.0 if source is None else source.jitter * 1000 / self.clock_rate

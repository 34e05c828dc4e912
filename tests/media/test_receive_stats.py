"""RTP receive statistics (RFC 3550 A.1, A.3, A.8): what bench-media's loss and jitter rest on."""

from __future__ import annotations

from lab.media.receive_stats import ReceiveStats

CLOCK = 48000
STEP = 960  # 20 ms of 48 kHz


def feed(stats: ReceiveStats, sequences: list[int], *, ssrc: int = 7, late_every: int = 0) -> None:
    for index, sequence in enumerate(sequences):
        late = 0.005 if late_every and index % late_every == 1 else 0.0
        stats.packet(ssrc, sequence & 0xFFFF, (index * STEP) & 0xFFFFFFFF, index * 0.02 + late)


def test_sequence_gaps_count_as_lost_across_the_16_bit_wrap() -> None:
    stats = ReceiveStats(CLOCK)
    sequences = [s for s in range(65530, 65550) if s not in (65534, 65536, 65537)]
    feed(stats, sequences)
    assert stats.expected == 20
    assert stats.received == 17
    assert stats.lost == 3


def test_packets_on_time_have_no_jitter_and_late_ones_do() -> None:
    steady = ReceiveStats(CLOCK)
    feed(steady, list(range(100)))
    assert steady.jitter_ms < 0.01
    shaky = ReceiveStats(CLOCK)
    feed(shaky, list(range(100)), late_every=2)  # every other packet 5 ms late
    # |D| is 5 ms on every packet: J converges to 5 ms (RFC 3550 A.8)
    assert 4.5 < shaky.jitter_ms < 5.01


def test_a_new_ssrc_is_a_new_source_and_counts_add_up() -> None:
    stats = ReceiveStats(CLOCK)
    feed(stats, [1, 2, 4], ssrc=1)
    feed(stats, [100, 101, 102], ssrc=2)
    assert (stats.expected, stats.received, stats.lost) == (7, 6, 1)

"""The media peer's one-line report says when the business's first packet came, in words."""

from __future__ import annotations

from lab.media.peer import MediaReport


def test_a_packet_before_the_ack_is_said_to_come_before_it() -> None:
    # A business-initiated call: the business may send once Meta's 200 is out, before its ACK.
    report = MediaReport(mode="DTLS", first_packet_after_ack_ms=-0.4)
    assert "first business packet 0 ms after ACK" in report.line()
    report.first_packet_after_ack_ms = -12.6
    line = report.line()
    assert "first business packet 13 ms before ACK" in line and "-" not in line.split("packet")[1]


def test_a_packet_after_the_ack() -> None:
    report = MediaReport(mode="SDES", first_packet_after_ack_ms=129.2)
    assert "first business packet 129 ms after ACK" in report.line()

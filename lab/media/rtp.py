"""RTP and RTCP headers, and how one UDP port carries STUN, DTLS, RTP and RTCP (RFC 7983).

Meta multiplexes everything on one port (`a=rtcp-mux`), so every datagram is sorted by its
first byte: 0-3 STUN, 20-63 DTLS, 128-191 RTP or RTCP, RTCP when the second byte (marker + PT)
is 192-223 (RFC 5761 4).
"""

from __future__ import annotations

import enum
import struct
import time
from dataclasses import dataclass

RTP_HEADER = struct.Struct("!BBHII")
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


class Kind(enum.Enum):
    STUN = "stun"
    DTLS = "dtls"
    RTP = "rtp"
    RTCP = "rtcp"
    OTHER = "other"


def classify(datagram: bytes) -> Kind:
    """Which protocol a datagram on the multiplexed port belongs to (RFC 7983 7)."""
    if not datagram:
        return Kind.OTHER
    first = datagram[0]
    if first <= 3:
        return Kind.STUN
    if 20 <= first <= 63:
        return Kind.DTLS
    if 128 <= first <= 191 and len(datagram) >= 2:
        return Kind.RTCP if 192 <= datagram[1] <= 223 else Kind.RTP
    return Kind.OTHER


@dataclass(frozen=True)
class RtpHeader:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool = False

    def pack(self) -> bytes:
        return RTP_HEADER.pack(0x80, (0x80 if self.marker else 0) | self.payload_type,
                               self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)


def parse_rtp(packet: bytes) -> tuple[RtpHeader, bytes]:
    """Header and payload of a plain RTP packet (CSRCs, extension and padding handled);
    raises ValueError for anything that is not RTP version 2."""
    if len(packet) < RTP_HEADER.size:
        raise ValueError("RTP packet shorter than its header")
    first, second, sequence, timestamp, ssrc = RTP_HEADER.unpack_from(packet)
    if first >> 6 != 2:
        raise ValueError("not RTP version 2")
    offset = RTP_HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(packet) < offset + 4:
            raise ValueError("RTP extension header cut short")
        (words,) = struct.unpack_from("!H", packet, offset + 2)
        offset += 4 + 4 * words
    end = len(packet)
    if first & 0x20 and end > offset:  # padding
        end -= packet[-1]
    if offset > end:
        raise ValueError("RTP header longer than the packet")
    header = RtpHeader(second & 0x7F, sequence, timestamp, ssrc, bool(second & 0x80))
    return header, packet[offset:end]


def sender_report(ssrc: int, rtp_timestamp: int, packets: int, octets: int,
                  now: float | None = None) -> bytes:
    """An RTCP Sender Report with no report blocks (RFC 3550 6.4.1), what keeps a stream alive
    in the other side's eyes when there is nothing else to say."""
    wall = time.time() if now is None else now
    ntp_seconds = int(wall) + NTP_EPOCH_OFFSET
    ntp_fraction = int((wall % 1) * (1 << 32))
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_seconds & 0xFFFFFFFF, ntp_fraction,
                       rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


DTMF_EVENTS = "0123456789*#ABCD"


def telephone_event(digit: str, end: bool, volume: int = 10, duration: int = 800) -> bytes:
    """An RFC 4733 telephone-event payload for one DTMF digit (duration in 8 kHz units)."""
    if len(digit) != 1 or digit.upper() not in DTMF_EVENTS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return struct.pack("!BBH", DTMF_EVENTS.index(digit.upper()),
                       (0x80 if end else 0) | (volume & 0x3F), duration)


def parse_telephone_event(payload: bytes) -> tuple[str, bool, int]:
    """(digit, end bit, duration) of an RFC 4733 payload; ValueError if it is not a DTMF one."""
    if len(payload) < 4 or payload[0] >= len(DTMF_EVENTS):
        raise ValueError("not an RFC 4733 DTMF event")
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    return DTMF_EVENTS[event], bool(flags & 0x80), duration

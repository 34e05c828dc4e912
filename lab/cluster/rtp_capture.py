"""What reached a FreeSWITCH media node's RTP ports, and when: the business side's own
measurement when the business is a real FreeSWITCH (the plain side measures in its peer,
lab/cluster/media_gaps.py's MeasuredPlainPeer).

FreeSWITCH keeps no arrival times and the lab must not change it, so a packet socket (AF_PACKET,
made inside the node's namespace, read by a thread of the lab) sees every UDP datagram arriving
at the node's address and keeps, per destination port other than SIP's, each RTP packet's
arrival (monotonic clock, as every lab party's), payload type and payload. A call's media is the
packets to its FreeSWITCH port (the m= line of the answer FreeSWITCH sent, in its SIP trace)
from its answer on, up to the first silence longer than CALL_SILENCE_S (FreeSWITCH may give the
port to a later call); decoded (the answer's Opus payload type) and replayed into `Arrivals`, it
says what MeasuredPlainPeer says: the gaps, the packets and the tone after each.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass

from lab.cluster.media_gaps import Arrivals
from lab.cluster.topology import Node, inside
from lab.media.opus import SAMPLE_RATE, OpusDecoder
from lab.media.rtp import parse_rtp
from lab.media.tone import dominant_frequency

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
KEEP_PER_PORT = 6000  # two minutes of 20 ms packets: more than any drill's call
CALL_SILENCE_S = 10.0
READ_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class Received:
    at: float  # monotonic
    payload_type: int
    payload: bytes


class RtpCapture:
    """Packets arriving at `node`'s address, per UDP port (SIP's `sip_port` left out)."""

    def __init__(self, node: Node, sip_port: int) -> None:
        self.node = node
        self.sip_port = sip_port
        self._address = socket.inet_aton(node.address)
        self._ports: dict[int, deque[Received]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        with inside(node):  # the socket stays in the namespace it was made in
            self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                         socket.htons(ETH_P_IP))
        self._socket.settimeout(READ_TIMEOUT_S)
        self._thread = threading.Thread(target=self._read, name=f"rtp-{node.role}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=READ_TIMEOUT_S * 4)
        self._socket.close()

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                data, (_, _, kind, *_) = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if kind != PACKET_OUTGOING:
                self._packet(data, time.monotonic())

    def _packet(self, data: bytes, at: float) -> None:
        """One IPv4 datagram: kept when it is unfragmented UDP RTP to the node's address."""
        if len(data) < 28 or data[0] >> 4 != 4 or data[9] != socket.IPPROTO_UDP:
            return
        if data[16:20] != self._address or struct.unpack_from("!H", data, 6)[0] & 0x3FFF:
            return  # another address, or a fragment
        header = (data[0] & 0x0F) * 4
        (port,) = struct.unpack_from("!H", data, header + 2)
        if port == self.sip_port or port < 1024:
            return
        try:
            rtp, payload = parse_rtp(data[header + 8:])
        except ValueError:
            return
        if 72 <= rtp.payload_type <= 76:  # RTCP multiplexed on the port (RFC 5761)
            return
        with self._lock:
            kept = self._ports.setdefault(port, deque(maxlen=KEEP_PER_PORT))
            kept.append(Received(at, rtp.payload_type, payload))

    def _decoded(self, port: int, opus_pt: int,
                 answered_at: float) -> tuple[list[tuple[float, int]], bytes]:
        """The call's audio packets on `port` from `answered_at` on: (arrival, PCM bytes
        decoded before it) each, and the PCM (int16 mono 48 kHz)."""
        with self._lock:
            kept = list(self._ports.get(port, ()))
        marks: list[tuple[float, int]] = []
        pcm, decoder, last = bytearray(), OpusDecoder(), None
        for packet in kept:
            if packet.at < answered_at - 0.5:
                continue
            if last is not None and packet.at - last > CALL_SILENCE_S:
                break  # a later call on the same port
            last = packet.at
            if packet.payload_type != opus_pt:
                continue  # telephone-event, comfort noise
            marks.append((packet.at, len(pcm)))
            with contextlib.suppress(ValueError):
                pcm += decoder.decode(packet.payload)
        return marks, bytes(pcm)

    def call_media(self, port: int, opus_pt: int, answered_at: float) -> Arrivals | None:
        """The call's media on `port` from `answered_at` on (None: nothing arrived): its
        `Arrivals`, each gap's tone heard after it, as MeasuredPlainPeer reports them."""
        marks, pcm = self._decoded(port, opus_pt, answered_at)
        if not marks:
            return None
        arrivals = Arrivals()
        for at, offset in marks:
            arrivals.packet(at, offset)
        rate = SAMPLE_RATE  # int16 mono: `rate` bytes are half a second

        def heard(start: int, end: int) -> float | None:
            return dominant_frequency(pcm[start + rate:end], rate)
        arrivals.finish(len(pcm), heard)
        return arrivals

    def heard_hz(self, port: int, opus_pt: int, answered_at: float) -> float | None:
        """The tone of the call's media on `port` (after half a second of settling)."""
        _, pcm = self._decoded(port, opus_pt, answered_at)
        return dominant_frequency(pcm[SAMPLE_RATE:], SAMPLE_RATE)

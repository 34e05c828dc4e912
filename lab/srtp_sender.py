"""Meta's audio toward FreeSWITCH on an SDES call: SRTP (AES_CM_128_HMAC_SHA1_80) Opus silence.

Only what a long call needs to stay up honestly: FreeSWITCH ends a call that receives no media
for `media_timeout` (15 s, by design, before Meta's own 20 s), so a test that holds a call 40 s
must send media as Meta would. It sends one 20-ms Opus silence frame (`F8 FF FE`) every 20 ms,
protected per RFC 3711 with the key of Meta's own `a=crypto` offer (key derivation rate 0;
AES-128 counter mode, HMAC-SHA1 tag truncated to 80 bits). It does not read what FreeSWITCH
sends. A bounded thread: it stops on `stop()` or after `max_seconds`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import struct
import threading
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

OPUS_SILENCE = b"\xf8\xff\xfe"
PACKET_INTERVAL_S = 0.02
SAMPLES_PER_PACKET = 960  # 20 ms at Opus's 48 kHz RTP clock


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 4.3.1 with key_derivation_rate 0: x = (label << 48) XOR master_salt."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return _aes_ctr(master_key, (x << 16).to_bytes(16, "big"), bytes(length))


class SrtpContext:
    """Protects RTP packets of one SSRC with an `inline:` key (30 bytes: key + salt)."""

    def __init__(self, inline_key: str, ssrc: int) -> None:
        material = base64.b64decode(inline_key.split("|", 1)[0])
        if len(material) != 30:
            raise ValueError("AES_CM_128_HMAC_SHA1_80 needs 16 bytes of key and 14 of salt")
        master_key, master_salt = material[:16], material[16:]
        self.cipher_key = derive(master_key, master_salt, 0, 16)
        self.auth_key = derive(master_key, master_salt, 1, 20)
        self.salt = int.from_bytes(derive(master_key, master_salt, 2, 14), "big")
        self.ssrc = ssrc

    def protect(self, header: bytes, payload: bytes, index: int) -> bytes:
        """The SRTP packet for RTP `header` + `payload`; `index` = ROC * 65536 + sequence."""
        iv = (self.salt << 16) ^ (self.ssrc << 64) ^ (index << 16)
        encrypted = _aes_ctr(self.cipher_key, iv.to_bytes(16, "big"), payload)
        roc = struct.pack("!I", index >> 16)
        tag = hmac.new(self.auth_key, header + encrypted + roc, hashlib.sha1).digest()[:10]
        return header + encrypted + tag


class SrtpSender:
    """Sends SRTP Opus silence from 127.0.0.1:`local_port` to `target` until stopped."""

    def __init__(self, inline_key: str, target: tuple[str, int], local_port: int,
                 payload_type: int = 111, max_seconds: float = 120.0) -> None:
        self.ssrc = 0x5EED1234
        self.context = SrtpContext(inline_key, self.ssrc)
        self.target = target
        self.local_port = local_port
        self.payload_type = payload_type
        self.max_seconds = max_seconds
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srtp-sender", daemon=True)

    def start(self) -> SrtpSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", self.local_port))
            began = time.monotonic()
            sequence, timestamp = 1000, 0
            while not self._stop.is_set() and time.monotonic() - began < self.max_seconds:
                header = struct.pack("!BBHII", 0x80, self.payload_type, sequence & 0xFFFF,
                                     timestamp & 0xFFFFFFFF, self.ssrc)
                sock.sendto(self.context.protect(header, OPUS_SILENCE, sequence), self.target)
                self.sent += 1
                sequence += 1
                timestamp += SAMPLES_PER_PACKET
                # paced against the start, so a slow loop catches up instead of drifting
                next_at = began + self.sent * PACKET_INTERVAL_S
                self._stop.wait(max(0.0, next_at - time.monotonic()))

"""DTLS-SRTP (RFC 5763, 5764) over memory BIOs, so one UDP socket carries DTLS beside STUN/RTP.

Meta is the DTLS *server*: `a=setup:actpass` in its offers, `passive` in its answers; the
business (FreeSWITCH) is the client and sends the ClientHello. The certificate is self-signed
(ECDSA P-256, as browsers and Meta use) and identified only by its SHA-256 fingerprint in the
SDP, upper-case hex as Meta writes it. The peer's certificate must match the fingerprint the
peer's SDP announced; otherwise the handshake counts as failed (a wrong fingerprint must not
give keys). Keys come from the TLS exporter `EXTRACTOR-dtls_srtp` (RFC 5764 4.2).

pyOpenSSL (OpenSSL 3 underneath) is used because it exposes what this needs and Python's `ssl`
does not: DTLS, the `use_srtp` extension, keying-material export and DTLS retransmission timers.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from lab.media.srtp import DTLS_PROFILE, KEY_LENGTH, SALT_LENGTH, SrtpKeys, dtls_srtp_keys

MTU = 1200
EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"


class DtlsError(Exception):
    """The handshake failed or the peer is not who its SDP said."""


@dataclass(frozen=True)
class DtlsCertificate:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def fingerprint(self) -> str:
        """`AB:CD:...` SHA-256 of the DER certificate, upper case (Meta's form)."""
        return fingerprint_of(self.certificate)


def fingerprint_of(certificate: x509.Certificate) -> str:
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2)).upper()


def make_certificate(common_name: str = "wa-sip lab WhatsApp media") -> DtlsCertificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .sign(key, hashes.SHA256()))
    return DtlsCertificate(certificate, key)


def _accept_any(*_: object) -> bool:
    """Self-signed certificates are normal here; the SDP fingerprint is checked after."""
    return True


class DtlsEndpoint:
    """One side of a DTLS association fed by datagrams and read out as datagrams.

    `feed()` takes a received DTLS record and returns the records to send back; `poll()` does
    the retransmission a timer calls for. When `keys` is set the handshake is done.
    """

    def __init__(self, certificate: DtlsCertificate, *, server: bool,
                 remote_fingerprint: str | None) -> None:
        context = SSL.Context(SSL.DTLS_METHOD)
        context.use_certificate(certificate.certificate)
        context.use_privatekey(certificate.key)
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        context.set_tlsext_use_srtp(DTLS_PROFILE)
        context.set_options(SSL.OP_NO_QUERY_MTU)
        self._connection = SSL.Connection(context, None)
        self._connection.set_ciphertext_mtu(MTU)
        if server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()
        self.server = server
        self.remote_fingerprint = remote_fingerprint.upper() if remote_fingerprint else None
        self.keys: SrtpKeys | None = None
        self.failure: str | None = None
        self.started = False

    def start(self) -> list[bytes]:
        """The client's first flight (ClientHello); nothing for a server."""
        self.started = True
        return [] if self.server else self._step()

    def feed(self, record: bytes) -> list[bytes]:
        if self.failure is not None:
            return []
        self.started = True
        self._connection.bio_write(record)
        if self.keys is not None:
            return self._drain()  # e.g. a retransmitted Finished: OpenSSL answers it
        return self._step()

    def poll(self) -> list[bytes]:
        """Retransmit a lost flight when OpenSSL's timer says so (1 s, doubling)."""
        if not self.started or self.keys is not None or self.failure is not None:
            return []
        timeout = self._connection.DTLSv1_get_timeout()
        if timeout is not None and timeout <= 0 and self._connection.DTLSv1_handle_timeout():
            return self._drain()
        return []

    def next_timeout(self) -> float | None:
        if not self.started or self.keys is not None or self.failure is not None:
            return None
        timeout = self._connection.DTLSv1_get_timeout()
        return None if timeout is None else float(timeout)

    def _step(self) -> list[bytes]:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            return self._drain()
        except SSL.Error as error:
            self.failure = f"DTLS handshake failed: {error}"
            return self._drain()
        out = self._drain()
        self._finish()
        return out

    def _finish(self) -> None:
        peer = self._connection.get_peer_certificate(as_cryptography=True)
        if peer is None:
            self.failure = "DTLS peer sent no certificate"
            return
        seen = fingerprint_of(peer)
        if self.remote_fingerprint is not None and seen != self.remote_fingerprint:
            self.failure = (f"DTLS fingerprint mismatch: SDP said {self.remote_fingerprint}, "
                            f"certificate is {seen}")
            return
        profile = self._connection.get_selected_srtp_profile()
        if profile != DTLS_PROFILE:
            self.failure = f"DTLS-SRTP profile {profile!r} is not {DTLS_PROFILE.decode()}"
            return
        material = self._connection.export_keying_material(EXPORTER_LABEL,
                                                           2 * (KEY_LENGTH + SALT_LENGTH))
        self.keys = dtls_srtp_keys(material, self.server)

    def _drain(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self._connection.bio_read(65536))
            except SSL.WantReadError:
                return out

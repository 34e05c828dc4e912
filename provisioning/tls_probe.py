"""The TLS check Meta's FAQ asks for (`openssl s_client -verify_hostname HOST -connect HOST:PORT`).

Meta connects to the configured hostname, verifies the chain and that the certificate covers the
hostname, and must not be asked for a client certificate (it would present one whose name fails).
Python's ssl checks the chain and gives the certificate; whether the server sent a
CertificateRequest is not visible through Python's ssl, so that one fact comes from
`openssl s_client`'s report. No ALPN is offered (Meta's own edge refuses ALPN "sip").
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

CLIENT_CERT_MARKERS = ("Acceptable client certificate CA names", "Requested Signature Algorithms",
                       "Client Certificate Types")


@dataclass
class TlsProbe:
    host: str
    port: int
    server_name: str
    reachable: bool = False
    connect_error: str = ""
    handshake_error: str = ""
    chain_ok: bool | None = None
    chain_error: str = ""
    names: list[str] = field(default_factory=list)
    hostname_ok: bool | None = None
    not_after: datetime | None = None
    client_cert_requested: bool | None = None
    client_cert_note: str = ""

    def days_left(self, now: datetime | None = None) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - (now or datetime.now(UTC))).total_seconds() / 86400


def hostname_matches(hostname: str, names: list[str]) -> bool:
    """RFC 6125 matching as OpenSSL does it: exact, or a wildcard for the left-most label only."""
    hostname = hostname.lower().rstrip(".")
    for name in names:
        name = name.lower().rstrip(".")
        if name == hostname:
            return True
        if name.startswith("*.") and "." in hostname:
            first, rest = hostname.split(".", 1)
            if first and rest == name[2:] and "." in rest:
                return True
    return False


def certificate_names(der: bytes) -> tuple[list[str], datetime]:
    """DNS names (subject CN only when there is no SAN, as OpenSSL) and the expiry."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names, cert.not_valid_after_utc


def _handshake(host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as raw, \
            context.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
        if der is None:
            raise ssl.SSLError("the server sent no certificate")
        return der


def probe_tls(host: str, port: int, server_name: str, ca_file: Path | None = None,
              timeout: float = 5.0) -> TlsProbe:
    """Connect to host:port, present `server_name` (SNI), and record what Meta would see."""
    probe = TlsProbe(host, port, server_name)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        probe.reachable = True
    except OSError as error:
        probe.connect_error = error.strerror or str(error)
        return probe
    verifying = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    verifying.check_hostname = False  # the name is checked below, so both faults get reported
    der: bytes | None = None
    try:
        der = _handshake(host, port, server_name, verifying, timeout)
        probe.chain_ok = True
    except ssl.SSLCertVerificationError as error:
        probe.chain_ok, probe.chain_error = False, str(error.verify_message or error)
    except (OSError, ssl.SSLError) as error:
        probe.handshake_error = str(error)
        return probe
    if der is None:
        trusting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        trusting.check_hostname, trusting.verify_mode = False, ssl.CERT_NONE
        try:
            der = _handshake(host, port, server_name, trusting, timeout)
        except (OSError, ssl.SSLError) as error:
            probe.handshake_error = str(error)
            return probe
    probe.names, probe.not_after = certificate_names(der)
    probe.hostname_ok = hostname_matches(server_name, probe.names)
    probe.client_cert_requested, probe.client_cert_note = client_certificate_requested(
        host, port, server_name, ca_file, timeout)
    return probe


def client_certificate_requested(host: str, port: int, server_name: str, ca_file: Path | None,
                                 timeout: float) -> tuple[bool | None, str]:
    """Ask `openssl s_client` whether the server sent a CertificateRequest; None if unknown."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None, "openssl is not installed: client-certificate request not checked"
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    command = [openssl, "s_client", "-connect", target, "-servername", server_name,
               "-verify_hostname", server_name]
    if ca_file is not None:
        command += ["-CAfile", str(ca_file)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout + 5, check=False)
    except subprocess.TimeoutExpired:
        return None, "openssl s_client did not finish in time"
    output = done.stdout + done.stderr
    if "CONNECTED" not in output:
        return None, "openssl s_client could not connect"
    requested = any(marker in output for marker in CLIENT_CERT_MARKERS)
    return requested, ""

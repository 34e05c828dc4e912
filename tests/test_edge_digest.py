"""Digest edge cases that SIPp cannot produce: a replayed Proxy-Authorization.

The test plays Meta with a plain Python TLS client and computes the digest itself, as Meta
would; Kamailio's auth module on the other side decides.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time

from lab.edge import LAB_PASSWORD, EdgeLab

NUMBER = "+15550100001"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


class MetaTlsClient:
    """One TLS connection to the edge, sending INVITEs and reading responses by Call-ID."""

    def __init__(self, edge: EdgeLab) -> None:
        context = ssl.create_default_context(cafile=str(edge.ca.certificate))
        raw = socket.create_connection(("127.0.0.1", edge.ports.tls), timeout=10)
        self.sock = context.wrap_socket(raw, server_hostname=edge.config.site.sip_domain)
        self.domain = edge.config.site.sip_domain
        self.buffer = b""
        self.port = self.sock.getsockname()[1]

    def invite(self, call_id: str, cseq: int, authorization: str = "") -> str:
        uri = f"sip:{NUMBER}@{self.domain};transport=tls"
        lines = [
            f"INVITE {uri} SIP/2.0",
            f"Via: SIP/2.0/TLS 127.0.0.1:{self.port};branch=z9hG4bK{call_id}{cseq};rport",
            "Max-Forwards: 70",
            f"From: <sip:+15550123456@wa.meta.vc>;tag={call_id}",
            f"To: <sip:{NUMBER}@{self.domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: <sip:+15550123456@127.0.0.1:{self.port};transport=tls>",
        ]
        if authorization:
            lines.append(f"Proxy-Authorization: {authorization}")
        lines += ["Content-Length: 0", "", ""]
        self.sock.sendall("\r\n".join(lines).encode())
        return uri

    def response(self, call_id: str, skip_provisional: bool = True, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\r\n\r\n" in self.buffer:
                head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
                text = head.decode(errors="replace")
                length = int(re.search(r"(?im)^content-length:\s*(\d+)", text)[1])  # type: ignore[index]
                self.buffer = self.buffer[length:]
                if f"Call-ID: {call_id}" not in text:
                    continue
                if skip_provisional and text.startswith("SIP/2.0 1"):
                    continue
                return text
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            self.buffer += self.sock.recv(65536)
        raise AssertionError(f"no response for {call_id} within {timeout} s")

    def close(self) -> None:
        self.sock.close()


def digest(challenge: str, uri: str, password: str, realm_user: str) -> str:
    realm = re.search(r'realm="([^"]+)"', challenge)[1]  # type: ignore[index]
    nonce = re.search(r'nonce="([^"]+)"', challenge)[1]  # type: ignore[index]
    cnonce, nc = "0a4f113b", "00000001"
    ha1 = _md5(f"{realm_user}:{realm}:{password}")
    ha2 = _md5(f"INVITE:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (f'Digest username="{realm_user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, cnonce="{cnonce}", qop=auth, nc={nc}')


def test_replayed_credentials_are_challenged_again_as_stale(clean_edge: EdgeLab) -> None:
    client = MetaTlsClient(clean_edge)
    try:
        uri = client.invite("replay-a", 1)
        challenge = client.response("replay-a")
        assert challenge.startswith("SIP/2.0 407"), challenge
        credentials = digest(challenge, uri, LAB_PASSWORD, NUMBER[1:])
        client.invite("replay-a", 2, credentials)
        accepted = client.response("replay-a", skip_provisional=False)
        assert accepted.startswith("SIP/2.0 100"), accepted

        client.invite("replay-b", 1, credentials)
        replayed = client.response("replay-b")
        assert replayed.startswith("SIP/2.0 407"), replayed
        assert "stale=true" in replayed.lower(), replayed
    finally:
        client.close()


def test_digest_for_plus_prefixed_user_name_is_refused(clean_edge: EdgeLab) -> None:
    """Meta's user name is the digits only; '+digits' must not authenticate."""
    client = MetaTlsClient(clean_edge)
    try:
        uri = client.invite("plus-a", 1)
        challenge = client.response("plus-a")
        client.invite("plus-a", 2, digest(challenge, uri, LAB_PASSWORD, NUMBER))
        again = client.response("plus-a")
        assert again.startswith("SIP/2.0 407"), again
    finally:
        client.close()

"""Render HAProxy in front of the edge into OUT/haproxy/, where HAProxy terminates Meta's TLS.

Kamailio 5.6's tls module, with OpenSSL 3, dies of a double free under an ordinary TLS scan
(README, "Supported Kamailio"), so on 5.6 Meta's TLS port is HAProxy's (TCP mode) and Kamailio
takes the decrypted connections on a TCP socket, learning Meta's address from the PROXY
protocol (`tcp_accept_haproxy`). OUT/haproxy/ holds `haproxy.cfg` and `meta-tls.pem` (the
certificate chain and its private key in one file, as HAProxy's `crt` reads them; 0600).
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from provisioning.kamailio_features import KamailioFeatures
from siteconfig.model import SiteConfig

PEM_NAME = "meta-tls.pem"
CONFIG_NAME = "haproxy.cfg"
STICK_TABLE_SIZE = "100k"  # source addresses remembered for the per-source limit


class HaproxyRenderError(Exception):
    """The certificate or key cannot be read; the message names the key (never its text)."""


def socket_text(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_protocol_version(features: KamailioFeatures) -> int:
    """PROXY protocol v1 for Kamailio before 5.8: their v2 parser keeps the ports in network
    byte order (upstream issue 3683, fixed in 5.8.0), so $sp would be wrong; v1 is parsed right
    by every supported version. v2 (binary, no text parsing) from 5.8 on."""
    return 2 if features.version[:2] >= (5, 8) else 1


def pem_bundle(cfg: SiteConfig) -> str | None:
    """Certificate chain (leaf first) then private key, as HAProxy's `crt` wants them; None
    when either file does not exist yet (a render before the certificate is deployed:
    `haproxy -c` then names the missing PEM, and a render after deploying writes it)."""
    parts = []
    for key, path in (("tls.certificate", cfg.tls.certificate),
                      ("tls.private_key", cfg.tls.private_key)):
        if not Path(path).exists():
            return None
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "not PEM text"
            raise HaproxyRenderError(f"{key} {path}: cannot read it for HAProxy ({reason})") \
                from None
        if "-----BEGIN" not in text:
            raise HaproxyRenderError(f"{key} {path}: not a PEM file")
        parts.append(text if text.endswith("\n") else text + "\n")
    return "".join(parts)


def haproxy_files(cfg: SiteConfig, features: KamailioFeatures, target: Path,
                  env: jinja2.Environment) -> dict[str, str]:
    """{file name: text} for OUT/haproxy/ (target); the PEM is secret (write it 0600)."""
    tls_host, tls_port = cfg.listen.tls_socket()
    version = proxy_protocol_version(features)
    context = {
        "cfg": cfg,
        "kamailio": features,
        "out": str(target),
        "tls_bind": socket_text(tls_host, tls_port),
        "backend": socket_text(*cfg.listen.front_backend_socket()),
        "proxy_version": version,
        "send_proxy": "send-proxy-v2" if version == 2 else "send-proxy",
        "pem_name": PEM_NAME,
        "stick_size": STICK_TABLE_SIZE,
    }
    pem = pem_bundle(cfg)
    context["pem_missing"] = pem is None
    files = {CONFIG_NAME: env.get_template("haproxy/haproxy.cfg.j2").render(context)}
    if pem is not None:
        files[PEM_NAME] = pem
    return files

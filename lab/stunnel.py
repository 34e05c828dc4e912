"""stunnel4 as the TLS leg of Meta's side: Debian's SIPp has no TLS.

Client mode plays Meta connecting to the edge (and checks the edge's certificate for the SIP
domain, as Meta does); server mode plays Meta's own TLS listener with a `wa.meta.vc`
certificate, for requests the edge sends toward Meta.
"""

from __future__ import annotations

from pathlib import Path

from lab.processes import ManagedProcess, wait_for_tcp


def _write_conf(path: Path, body: str) -> Path:
    path.write_text("foreground = yes\npid =\ndebug = 4\n" + body, encoding="utf-8")
    return path


def stunnel_client(folder: Path, name: str, accept_port: int, connect_port: int, ca: Path,
                   check_host: str, source: str | None = None) -> ManagedProcess:
    """Plain TCP on 127.0.0.1:accept_port -> TLS to 127.0.0.1:connect_port, chain + name checked;
    `source`: the loopback address it connects from (another Meta address than 127.0.0.1)."""
    local = f"local = {source}\n" if source else ""
    conf = _write_conf(folder / f"{name}.conf", f"""
[{name}]
client = yes
accept = 127.0.0.1:{accept_port}
connect = 127.0.0.1:{connect_port}
{local}CAfile = {ca}
verifyChain = yes
checkHost = {check_host}
sni = {check_host}
""")
    process = ManagedProcess(f"stunnel {name}", ["stunnel4", str(conf)], folder / f"{name}.log")
    process.start()
    wait_for_tcp("127.0.0.1", accept_port, 10, process.name, process.log)
    return process


def stunnel_server(folder: Path, name: str, accept_port: int, connect_port: int,
                   certificate: Path, private_key: Path) -> ManagedProcess:
    """TLS on 127.0.0.1:accept_port (presenting `certificate`) -> plain TCP to connect_port."""
    conf = _write_conf(folder / f"{name}.conf", f"""
[{name}]
accept = 127.0.0.1:{accept_port}
connect = 127.0.0.1:{connect_port}
cert = {certificate}
key = {private_key}
""")
    process = ManagedProcess(f"stunnel {name}", ["stunnel4", str(conf)], folder / f"{name}.log")
    process.start()
    wait_for_tcp("127.0.0.1", accept_port, 10, process.name, process.log)
    return process

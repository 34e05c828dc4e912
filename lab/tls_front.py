"""HAProxy as the lab's Meta-facing TLS port, when the render has one (Kamailio 5.6).

Started in the foreground (`haproxy -db`) as its own lab process, stopped with the lab, so
every test that talks TLS to the edge goes through it exactly as a deployment would.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from lab.processes import LabError, ManagedProcess, wait_for_tcp


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists()
                                         else None)
    if binary is None:
        raise LabError("haproxy is not installed: run 'make lab' or 'make test' as root "
                       "(scripts/install-system-deps installs Debian's haproxy)")
    return binary


def check_haproxy_config(config: Path) -> None:
    """`haproxy -c -f CONFIG`; LabError with HAProxy's words when it refuses the file."""
    result = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True,
                            text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise LabError(f"haproxy refuses {config}:\n{(result.stdout + result.stderr)[-2000:]}")


def start_haproxy(config: Path, tls_port: int, log: Path) -> ManagedProcess:
    """HAProxy in the foreground on `config`, waited for until it listens on `tls_port`."""
    check_haproxy_config(config)
    process = ManagedProcess("haproxy", [haproxy_binary(), "-db", "-f", str(config)], log)
    process.start()
    try:
        wait_for_tcp("127.0.0.1", tls_port, 10, "haproxy (Meta's TLS port)", log)
    except LabError:
        process.stop()
        raise
    return process

"""Debian's rtpengine as the lab runs it: from the file `provision render` wrote, in userspace.

The lab starts exactly what a site runs (OUT/rtpengine/rtpengine.conf), in the foreground with
its log in the lab folder, and waits until the control socket answers ng ping.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lab.processes import LabError, ManagedProcess
from provisioning.rtpengine_ng import NgError, ping
from siteconfig.listen_address import parse_listen_address

LOCAL_PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def media_port_range(size: int = 40) -> tuple[int, int]:
    """A port range for rtpengine's media sockets below the kernel's ephemeral range.

    free_port() (and every socket bound to port 0) takes ports from the ephemeral range; a
    range inside it could hand rtpengine a port the lab is about to bind (seen: a SIP party's
    fixed port, EADDRINUSE). Below it, only other rtpengines share it, and rtpengine skips a
    port that is taken.
    """
    try:
        low = int(LOCAL_PORT_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = 10000
    span = max(size + 1, low - floor - size)
    start = floor + int.from_bytes(os.urandom(2), "big") % span
    return start, start + size


def rtpengine_binary() -> str:
    binary = shutil.which("rtpengine")
    if binary is None:
        raise LabError("rtpengine is not installed (Debian's rtpengine-daemon: run 'make lab' "
                       "or 'make test', which install it)")
    return binary


def start_rtpengine(config: Path, ng_listen: str, folder: Path) -> ManagedProcess:
    """rtpengine on `config`, waited for until its ng socket (`ng_listen`) answers ping."""
    process = ManagedProcess("rtpengine", [
        rtpengine_binary(), f"--config-file={config}", "--config-section=rtpengine",
        "--foreground", "--log-stderr", f"--pidfile={folder / 'rtpengine.pid'}"],
        folder / "rtpengine.log")
    process.start()
    host, port = parse_listen_address(ng_listen)
    deadline = time.monotonic() + 10
    while True:
        try:
            ping(host, port, timeout_s=0.3)
            return process
        except NgError as error:
            if not process.running() or time.monotonic() > deadline:
                process.stop()
                raise LabError(f"rtpengine did not start: {error}\n{process.log_tail()}") from None

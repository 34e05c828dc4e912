"""A real FreeSWITCH on loopback, started from the configuration `provision render` writes.

The lab and the tests render the site config with `render_freeswitch`, then start the stock
binary (`provisioning.freeswitch_binary`) with that folder as `-conf` and every folder it writes
to (logs, databases, pid file, DTLS certificate, temp, recordings...) inside `folder/run`, so
nothing under the install prefix is touched and several can run at once. It is stopped by its
own PID (ManagedProcess: SIGTERM, then SIGKILL after a grace period); `kill()` is the SIGKILL a
crash test needs.

FreeSWITCH makes a 4096-bit RSA DTLS certificate (`dtls-srtp.pem`) in its certificate folder on
the first start, ~10 s of CPU here. `dtls_certificate()` makes one the same way once and each
instance gets a copy.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from esl.client import connect_inbound
from esl.errors import EslError
from lab.processes import LabError, LabParty, ManagedProcess, free_port, wait_for_tcp
from provisioning.freeswitch_binary import FreeswitchNotFound, freeswitch_binary
from provisioning.render import RenderError
from provisioning.render_freeswitch import render_freeswitch
from siteconfig.model import SiteConfig

PROFILE = "wa-edge"
START_TIMEOUT_S = 60.0  # a loaded 2-core machine; a first start with a cached certificate takes ~2 s
STOP_GRACE_S = 15.0  # FreeSWITCH needs ~6 s to shut down cleanly
RUN_FOLDERS = ("log", "db", "run", "certs", "temp", "storage", "recordings", "cache", "sounds",
               "scripts", "grammar", "htdocs")
DTLS_PEM = "dtls-srtp.pem"


@dataclass
class FreeswitchPorts:
    """Loopback ports of one FreeSWITCH and its neighbours."""

    sip: int = field(default_factory=free_port)
    esl: int = field(default_factory=free_port)
    controller: int = field(default_factory=free_port)  # where the dialplan's socket connects


def loopback_overrides(ports: FreeswitchPorts, edge: str, password: str) -> dict[str, Any]:
    """Site-config changes that put the FreeSWITCH side on loopback.

    `edge` is host:port of whoever plays the edge (a Kamailio or a SIPp); it becomes the
    profile's only allowed SIP source and the BIC gateway's proxy. ICE candidates on loopback
    must pass the candidate ACL, so 127.0.0.0/8 is allowed there. Whoever plays the edge here
    offers Meta's SDES/DTLS straight to FreeSWITCH, so the anchor is "freeswitch" (the product's
    default, rtpengine, renders the plain profile); a caller wanting rtpengine merges over it.
    """
    return {
        "listen": {"internal": edge},
        "media": {"anchor": "freeswitch"},
        "freeswitch": {
            "sets": [{"id": 1, "nodes": [{"uri": f"sip:127.0.0.1:{ports.sip}"}]}],
            "profile": {"sip_ip": "127.0.0.1", "rtp_ip": "127.0.0.1", "sip_port": ports.sip,
                        "candidate_networks": ["127.0.0.0/8"]},
        },
        "esl": {"freeswitch": {"host": "127.0.0.1", "port": ports.esl, "password": password},
                "listen": {"host": "127.0.0.1", "port": ports.controller}},
    }


def dtls_certificate(path: Path) -> Path:
    """A DTLS certificate FreeSWITCH accepts without making its own: RSA 4096 (it regenerates
    anything shorter), key then certificate in one PEM, self-signed. Made once per path."""
    if path.exists():
        return path
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wa-sip lab FreeSWITCH")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_suffix(".tmp")
    staging.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM))
    staging.chmod(0o600)
    staging.replace(path)
    return path


class FreeswitchLab(LabParty):
    """One FreeSWITCH rendered from `config` into `folder`; use as a context manager."""

    def __init__(self, folder: Path, config: SiteConfig, dtls_pem: Path | None = None) -> None:
        self.folder = folder
        self.config = config
        self.dtls_pem = dtls_pem
        self.process: ManagedProcess | None = None
        esl = config.esl.freeswitch
        self.esl_host = esl.host
        self.esl_port = esl.port
        self.password = esl.password.get_secret_value()
        self.sip_ip = config.freeswitch.profile.sip_ip
        self.sip_port = config.freeswitch.profile.sip_port
        self.conf = folder / "out" / "freeswitch"
        self.run_dir = folder / "run"
        self.starts = 0

    @property
    def log(self) -> Path:
        """FreeSWITCH's own log (mod_logfile)."""
        return self.run_dir / "log" / "freeswitch.log"

    def render(self) -> Path:
        try:
            return render_freeswitch(self.config, self.folder / "out")
        except RenderError as error:
            raise LabError(f"FreeSWITCH configuration: {error}") from None

    def argv(self) -> list[str]:
        try:
            binary = freeswitch_binary()
        except FreeswitchNotFound as error:
            raise LabError(str(error)) from None
        argv = [binary, "-conf", str(self.conf)]
        for name in RUN_FOLDERS:
            argv += [f"-{name}", str(self.run_dir / name)]
        return [*argv, "-nonat", "-nonatmap", "-nc", "-nf"]

    def start(self) -> None:
        """Render, start, and wait until the Event Socket answers and the profile is RUNNING."""
        self.render()
        for name in RUN_FOLDERS:
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        if self.dtls_pem is not None and not (self.run_dir / "certs" / DTLS_PEM).exists():
            shutil.copy2(self.dtls_pem, self.run_dir / "certs" / DTLS_PEM)
        self.starts += 1
        self.process = ManagedProcess(
            "freeswitch", self.argv(), self.folder / f"freeswitch-stdout-{self.starts}.log").start()
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            wait_for_tcp(self.esl_host, self.esl_port, START_TIMEOUT_S, "FreeSWITCH's Event Socket",
                         self.log)
            while not self.profile_running():
                if time.monotonic() > deadline:
                    raise LabError(f"sofia profile {PROFILE} not RUNNING within "
                                   f"{START_TIMEOUT_S:.0f} s; see {self.log}")
                if not self.process.running():
                    raise LabError(f"FreeSWITCH exited; see {self.log}")
                time.sleep(0.2)
        except LabError:
            if not self.process.running():
                raise LabError(f"FreeSWITCH exited while starting; see {self.log} and "
                               f"{self.process.log}:\n{self.process.log_tail()}") from None
            raise

    def profile_running(self) -> bool:
        """`sofia status` lists the profile as RUNNING (sofia may still be binding its port)."""
        status = self.api("sofia status")
        return re.search(rf"^\s*{PROFILE}\s+profile\s+\S+\s+RUNNING", status, re.MULTILINE) is not None

    def stop(self) -> None:
        """SIGTERM to its PID, SIGKILL after the grace period."""
        if self.process is not None:
            self.process.stop(grace=STOP_GRACE_S)

    def kill(self) -> None:
        """SIGKILL, as a crash: no hangup events, no clean SIP goodbyes."""
        if self.process is not None:
            self.process.kill()

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    async def api_async(self, command: str, *, password: str | None = None,
                        timeout: float = 10.0) -> str:
        """One `api` command over a fresh inbound connection (the rendered password by default)."""
        connection = await connect_inbound(self.esl_host, self.esl_port,
                                           self.password if password is None else password,
                                           timeout=timeout)
        try:
            return await connection.api(command, timeout=timeout)
        finally:
            await connection.close()

    def api(self, command: str, *, timeout: float = 10.0) -> str:
        """`api_async` for synchronous callers (not from inside a running event loop)."""
        try:
            return asyncio.run(self.api_async(command, timeout=timeout))
        except EslError as error:
            raise LabError(f"FreeSWITCH api {command!r}: {error}") from None

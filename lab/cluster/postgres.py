"""The site's one PostgreSQL, inside its node's namespace, listening on the node's address.

Debian's server binaries refuse root, so as root the cluster is made and run as the `postgres`
system user. Trust authentication for the site's segment only (198.18.20.0/24, ours); fsync off
(nothing must survive the lab). `stop()` and `start()` are the drill's fault and its repair.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from lab.cluster.topology import PREFIX, Node, inside
from lab.processes import LabError, ManagedProcess, wait_for_tcp

DB_USER = "wasip"
DATABASE = "wa"
PORT = 5432


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class PostgresNode:
    def __init__(self, node: Node, log: Path) -> None:
        self.node = node
        # a folder of its own the postgres user can reach (a test's or the lab's scratch
        # folder is often 0700 root); its log goes to `log`
        self.folder = Path(tempfile.mkdtemp(prefix="wa-sip-cluster-pg-"))
        self.log = log
        self.data = self.folder / "data"
        self.process: ManagedProcess | None = None
        binaries = server_bin()
        if binaries is None:
            raise LabError("PostgreSQL server not installed (scripts/install-system-deps "
                           "installs Debian's postgresql)")
        self.binaries = binaries

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}@{self.node.address}:{PORT}/{DATABASE}"

    def create(self) -> PostgresNode:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        subprocess.run(_as_owner([str(self.binaries / "initdb"), "-D", str(self.data), "-A",
                                  "trust", "-U", DB_USER, "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        segment = ".".join(self.node.address.split(".")[:3]) + f".0/{PREFIX}"
        with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as hba:
            hba.write(f"host all all {segment} trust\n")
        self.start()
        done = subprocess.run(self.node.argv(*_as_owner([
            str(self.binaries / "createdb"), "-h", self.node.address, "-p", str(PORT), "-U",
            DB_USER, DATABASE])), capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise LabError(f"createdb: {done.stderr.strip()}")
        return self

    def start(self) -> None:
        self.process = ManagedProcess("postgres", self.node.argv(*_as_owner([
            str(self.binaries / "postgres"), "-D", str(self.data), "-p", str(PORT),
            "-k", str(self.folder), "-c", f"listen_addresses={self.node.address}",
            "-c", "fsync=off"])), self.log)
        self.process.start()
        with inside(self.node):
            try:
                wait_for_tcp(self.node.address, PORT, 30, "postgres", self.process.log)
            except LabError:
                raise LabError("postgres did not start:\n" + self.process.log_tail()) from None

    def stop(self) -> None:
        """SIGTERM (PostgreSQL's smart shutdown would wait for Kamailio's sessions: fast one)."""
        if self.process is None:
            return
        pid = self.process.pid
        if pid is not None and self.process.running():
            os.killpg(pid, signal.SIGINT)  # fast shutdown: sessions ended, no waiting
            deadline = time.monotonic() + 20
            while self.process.running() and time.monotonic() < deadline:
                time.sleep(0.1)
        self.process.stop()
        self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

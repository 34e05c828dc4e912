"""A throw-away PostgreSQL cluster on a loopback port, for the PostgreSQL credential-store tests.

Debian's server binaries (/usr/lib/postgresql/<version>/bin) refuse to run as root, so as root
the cluster is created and run as the `postgres` system user (runuser); otherwise as the
current user. Trust authentication on 127.0.0.1 only; fsync off (nothing here must survive).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.processes import free_port

DB_USER = "wasip"


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PgCluster:
    """A running throw-away cluster that a test may stop and start again (same port, same data)."""

    def __init__(self, binaries: Path, folder: Path, port: int) -> None:
        self.binaries, self.folder, self.port = binaries, folder, port
        self.url = f"postgresql://{DB_USER}@127.0.0.1:{port}/wa"

    def start(self) -> None:
        subprocess.run(_as_owner([str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"),
                                  "-l", str(self.folder / "log"), "-w", "-t", "30", "-o",
                                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
                                  " -c fsync=off", "start"]),
                       check=True, capture_output=True, timeout=60)

    def require_password(self, password: str) -> None:
        """From now on the role logs in with ``password`` (scram-sha-256), as a site's would."""
        subprocess.run(_as_owner([str(self.binaries / "psql"), "-h", "127.0.0.1", "-p",
                                  str(self.port), "-U", DB_USER, "-d", "wa", "-c",
                                  f"ALTER ROLE {DB_USER} PASSWORD '{password}'"]),
                       check=True, capture_output=True, timeout=30)
        hba = self.folder / "data" / "pg_hba.conf"
        subprocess.run(_as_owner(["sh", "-c", "echo 'host all all 127.0.0.1/32 scram-sha-256' "
                                  f"> {hba}"]), check=True, timeout=30)
        self.stop()  # a restart, not a reload: the new rule is in force once start() returns
        self.start()

    def stop(self, *, check: bool = True) -> None:
        """Stopped at once (`-m immediate`): the database gone as a crash or a cut would take it."""
        subprocess.run(_as_owner([str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"),
                                  "-m", "immediate", "-w", "-t", "30", "stop"]),
                       capture_output=True, timeout=60, check=check)


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yield a `postgresql://` URL of a fresh database `wa` on a loopback port."""
    with restartable_postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def restartable_postgres_cluster() -> Iterator[PgCluster]:
    """A fresh database `wa` on a loopback port, with `stop()` / `start()`; removed at the end."""
    binaries = server_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found: run scripts/install-system-deps")
    folder = Path(tempfile.mkdtemp(prefix="wa-sip-pg-"))
    try:
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        cluster = PgCluster(binaries, folder, free_port())
        subprocess.run(_as_owner([str(binaries / "initdb"), "-D", str(folder / "data"), "-A",
                                  "trust", "-U", DB_USER, "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=60)
        cluster.start()
        try:
            subprocess.run(_as_owner([str(binaries / "createdb"), "-h", "127.0.0.1", "-p",
                                      str(cluster.port), "-U", DB_USER, "wa"]),
                           check=True, capture_output=True, timeout=30)
            yield cluster
        finally:
            cluster.stop(check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

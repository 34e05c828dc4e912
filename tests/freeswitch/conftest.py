"""A real FreeSWITCH on loopback, rendered by `provision render`'s own code from the example
site config. The tests here carry the `needs_freeswitch` marker (a conftest's pytestmark would
not reach them): skipped where none is installed, and counted in the summary (tests/conftest.py)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.edge import EXAMPLE_CONFIG, merge
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate, loopback_overrides
from lab.processes import free_port
from siteconfig.model import SiteConfig

ESL_PASSWORD = "esl-Secret-42"

def site_config(ports: FreeswitchPorts, edge: str, changes: dict[str, Any] | None = None) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw = merge(raw, loopback_overrides(ports, edge, ESL_PASSWORD))
    # SIPp plays the edge and offers Meta's SDES/DTLS straight to FreeSWITCH: the direct anchor,
    # named here because the product's default is rtpengine (FreeSWITCH then sees plain RTP).
    raw = merge(raw, {"media": {"anchor": "freeswitch"}})
    return SiteConfig.model_validate(merge(raw, changes or {}))


@pytest.fixture(scope="session")
def dtls_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA-4096 DTLS certificate for every FreeSWITCH of the session (saves ~10 s each)."""
    return dtls_certificate(tmp_path_factory.mktemp("fs-dtls") / "dtls-srtp.pem")


@pytest.fixture(scope="module")
def edge_port() -> int:
    """Where the (absent) edge would listen: the profile's only allowed source is 127.0.0.1."""
    return free_port()


@pytest.fixture(scope="module")
def freeswitch(tmp_path_factory: pytest.TempPathFactory, dtls_pem: Path,
               edge_port: int) -> Iterator[FreeswitchLab]:
    ports = FreeswitchPorts()
    config = site_config(ports, f"127.0.0.1:{edge_port}")
    with FreeswitchLab(tmp_path_factory.mktemp("freeswitch"), config, dtls_pem) as lab:
        yield lab


SDES_NUMBER = "+15550100001"
DTLS_NUMBER = "+15550100002"
META_USER = "+15550123456"


def two_numbers(cdr_db: Path) -> dict[str, Any]:
    """An SDES and a DTLS number, CDRs in the test's folder, the example's routes (park)."""
    return {
        "numbers": [
            {"business_number": SDES_NUMBER, "phone_number_id": "100000000000001",
             "srtp_mode": "SDES"},
            {"business_number": DTLS_NUMBER, "phone_number_id": "100000000000002",
             "srtp_mode": "DTLS"},
        ],
        "esl": {"cdr_db": str(cdr_db), "linger_s": 5,
                "reconnect": {"initial_s": 0.05, "max_s": 0.5}},
    }


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory, dtls_pem: Path) -> Iterator[FreeswitchLab]:
    """A FreeSWITCH whose dialplan hands calls to a wa-esl on `switch.config.esl.listen`; the
    SIPp that plays the edge sends from 127.0.0.1, the profile's only allowed source."""
    folder = tmp_path_factory.mktemp("switch")
    ports = FreeswitchPorts()
    config = site_config(ports, f"127.0.0.1:{free_port()}", two_numbers(folder / "cdr.sqlite3"))
    with FreeswitchLab(folder, config, dtls_pem) as lab:
        yield lab

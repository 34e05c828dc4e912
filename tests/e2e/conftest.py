"""The whole bundle on loopback: Meta's SIPp through stunnel, the Kamailio edge, a real
FreeSWITCH from the rendered configuration, `wa-esl run` as a process, the Meta stand-in and a
WhatsApp user for business-initiated calls (lab/bundle.py). Skipped, with the reason and counted
in the summary, where no FreeSWITCH is installed (marker `needs_freeswitch`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.bundle import BundleLab
from lab.freeswitch import dtls_certificate
from lab.freeswitch_trace import TRACE_COMMANDS
from lab.media.freeswitch_patch import is_patched
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing

SDES_NUMBER = "+15550100001"
DTLS_NUMBER = "+15550100002"
NUMBERS: list[dict[str, Any]] = [
    {"business_number": SDES_NUMBER, "phone_number_id": "100000000000001", "srtp_mode": "SDES",
     "request_uri_user_params": {"tgrp": "wacall", "trunk-context": "byoc.example.com"}},
    {"business_number": DTLS_NUMBER, "phone_number_id": "100000000000002", "srtp_mode": "DTLS"},
]
ROUTES: list[dict[str, Any]] = [
    {"name": "by-payload", "match": {"cta_payload": "promo-*"},
     "target": {"action": "ivr", "destination": "playback tone_stream://%(200,100,440);loops=1"}},
    {"name": "by-tgrp", "match": {"tgrp": "vip"}, "target": {"action": "park"}},
    {"name": "by-trunk-context", "match": {"trunk_context": "support.example.com"},
     "target": {"action": "park"}},
    {"name": "by-number", "match": {"business_number": DTLS_NUMBER}, "target": {"action": "park"}},
    {"name": "catch-all", "target": {"action": "park"}},
]


def skip_without_freeswitch() -> pytest.MarkDecorator:
    """The `needs_freeswitch` marker: tests/conftest.py skips (and counts) them without one."""
    return pytest.mark.needs_freeswitch


def require_dtls_patch() -> None:
    """Meta's DTLS straight on FreeSWITCH needs patches/freeswitch/0001: skipped, with the
    reason, on a stock build (the rtpengine anchor carries DTLS there)."""
    binary = freeswitch_binary()
    if not is_patched(binary):
        pytest.skip(f"{binary} is stock: DTLS straight to FreeSWITCH needs patches/freeswitch/0001 "
                    "(stock FreeSWITCH offers RTP/SAVPF, not UDP/TLS/RTP/SAVPF, and sends no DTLS "
                    "ClientHello to an ICE-lite peer) or the rtpengine anchor")


@pytest.fixture(scope="session")
def e2e_dtls_pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RSA-4096 DTLS certificate for every FreeSWITCH of the session (saves ~10 s each)."""
    return dtls_certificate(tmp_path_factory.mktemp("e2e-dtls") / "dtls-srtp.pem")


def start_bundle(folder: Path, dtls_pem: Path, anchor: str = "freeswitch") -> BundleLab:
    """The bundle with Meta's media on FreeSWITCH (BundleLab's direct path) or on rtpengine."""
    bundle = BundleLab(folder, overrides={"numbers": NUMBERS, "esl": {"routes": ROUTES},
                                          "media": {"anchor": anchor}}, dtls_pem=dtls_pem)
    try:
        bundle.start()
        for command in TRACE_COMMANDS:  # FreeSWITCH's own SIP trace, read by the tests
            bundle.api(command)
    except BaseException:
        bundle.stop()
        raise
    return bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, e2e_dtls_pem: Path) -> Iterator[BundleLab]:
    """One bundle per test module (a start is ~5 s); tests that kill a part start their own."""
    missing = freeswitch_missing()
    if missing is not None:
        pytest.skip(missing)
    running = start_bundle(tmp_path_factory.mktemp("bundle"), e2e_dtls_pem)
    try:
        yield running
    finally:
        running.stop()

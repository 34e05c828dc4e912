"""doctor and the two media anchors: a DTLS number on the direct path needs a FreeSWITCH with
patches/freeswitch/0001 (else FAIL: use anchor = "rtpengine"), and rtpengine's media interface
must be one Meta reaches (loopback outside the lab: WARN). Fake installs, nothing started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioning.doctor import Level, direct_path_findings, rtpengine_interface_findings
from provisioning.freeswitch_patch import (
    ICE_LITE_PATCH,
    PATCHES,
    PatchState,
    patch_set,
    patch_state,
)
from tests.media.test_install_freeswitch import fake_freeswitch
from tests.provisioning.conftest import provision
from tests.test_render import example_with

DIRECT = {"media": {"anchor": "freeswitch"}}
SDES_ONLY = {"numbers": [{"business_number": "+15550100002", "phone_number_id": "100000000000002",
                          "srtp_mode": "SDES"}]}


def fake_install(prefix: Path, marker: str | None) -> str:
    """`<prefix>/bin/freeswitch`, with `marker` as its recorded patch set (None: stock)."""
    return str(fake_freeswitch(prefix, marker=marker))


def test_the_patch_set_names_every_shipped_patch_and_0001_is_one() -> None:
    names = [line.split("  ", 1)[1] for line in patch_set().splitlines()]
    assert names == sorted(p.name for p in PATCHES.glob("*.patch"))
    assert ICE_LITE_PATCH in names


def test_patch_state_stock_patched_and_another_version(tmp_path: Path) -> None:
    assert patch_state(fake_install(tmp_path / "stock", None)) is PatchState.MISSING
    assert patch_state(fake_install(tmp_path / "full", patch_set())) is PatchState.CARRIED
    only_0001 = next(line for line in patch_set().splitlines() if line.endswith(ICE_LITE_PATCH))
    assert patch_state(fake_install(tmp_path / "one", only_0001)) is PatchState.CARRIED
    without = "\n".join(line for line in patch_set().splitlines() if ICE_LITE_PATCH not in line)
    assert patch_state(fake_install(tmp_path / "no0001", without)) is PatchState.MISSING
    old = fake_install(tmp_path / "old", "0" * 64 + "  " + ICE_LITE_PATCH)
    assert patch_state(old) is PatchState.OTHER


def test_a_stock_freeswitch_facing_meta_with_dtls_numbers_fails(tmp_path: Path) -> None:
    (finding,) = direct_path_findings(example_with(DIRECT), fake_install(tmp_path / "fs", None))
    assert finding.level is Level.FAIL
    assert "does not carry patches/freeswitch/0001" in finding.cause
    assert "+15550100001" in finding.subject
    assert 'anchor = "rtpengine"' in finding.fix and "patches/freeswitch/0001" in finding.fix


def test_a_freeswitch_with_0001_passes_and_another_version_warns(tmp_path: Path) -> None:
    (patched,) = direct_path_findings(example_with(DIRECT),
                                      fake_install(tmp_path / "fs", patch_set()))
    assert patched.level is Level.PASS
    old = fake_install(tmp_path / "old", "0" * 64 + "  " + ICE_LITE_PATCH)
    (stale,) = direct_path_findings(example_with(DIRECT), old)
    assert stale.level is Level.WARN and "another version" in stale.cause


def test_no_freeswitch_here_is_a_warning_that_says_what_to_check() -> None:
    (finding,) = direct_path_findings(example_with(DIRECT), None)
    assert finding.level is Level.WARN and "0001" in finding.cause
    assert 'anchor = "rtpengine"' in finding.fix


@pytest.mark.parametrize("changes", [{}, {**DIRECT, **SDES_ONLY}],
                         ids=["rtpengine-default", "direct-sdes-only"])
def test_rtpengine_or_sdes_only_need_no_patch(changes: dict[str, Any], tmp_path: Path) -> None:
    assert direct_path_findings(example_with(changes), fake_install(tmp_path / "fs", None)) == []


def rtpengine_site(interface: str, tls: str = "0.0.0.0:5061") -> dict[str, Any]:
    return {"listen": {"tls": tls}, "media": {"rtpengine": {"interface": interface}}}


def test_a_loopback_rtpengine_interface_outside_the_lab_warns() -> None:
    for interface in ("127.0.0.1", "::1"):
        (finding,) = rtpengine_interface_findings(example_with(rtpengine_site(interface)))
        assert finding.level is Level.WARN and "Meta cannot reach it" in finding.cause
        assert "[media.rtpengine] interface" in finding.fix


def test_no_interface_warning_in_the_lab_on_the_direct_path_or_on_a_real_address() -> None:
    lab = example_with(rtpengine_site("127.0.0.1", tls="127.0.0.1:5061"))
    assert rtpengine_interface_findings(lab) == []
    direct = example_with({**rtpengine_site("127.0.0.1"), **DIRECT})
    assert rtpengine_interface_findings(direct) == []
    assert rtpengine_interface_findings(example_with(rtpengine_site("203.0.113.5"))) == []
    assert rtpengine_interface_findings(example_with({})) == []  # the example names one


def test_doctor_fails_a_direct_path_site_on_a_stock_freeswitch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command: JSON finding media.freeswitch = fail, exit 1 (the stock binary named by
    WA_SIP_FREESWITCH, as provisioning/freeswitch_binary.py finds it)."""
    from provisioning.freeswitch_binary import freeswitch_binary

    monkeypatch.setenv("WA_SIP_FREESWITCH", fake_install(tmp_path / "fs", None))
    freeswitch_binary.cache_clear()
    try:
        config = tmp_path / "site.toml"
        text = (Path(__file__).resolve().parents[2] / "examples" / "site.toml").read_text()
        config.write_text(text.replace('anchor = "rtpengine"', 'anchor = "freeswitch"', 1))
        run = provision("doctor", "-c", str(config), "--connect", "127.0.0.1:1",
                        "--skip-admission", "--skip-graph", "--json")
    finally:
        freeswitch_binary.cache_clear()
    findings = {f["check"]: f for f in run.json()["findings"]}
    assert run.exit_code == 1
    assert findings["media.freeswitch"]["level"] == "fail"
    assert 'anchor = "rtpengine"' in findings["media.freeswitch"]["fix"]

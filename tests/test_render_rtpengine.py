"""[media] anchor = "rtpengine": Kamailio loads rtpengine and rtpengine starts from what we render."""

from __future__ import annotations

import configparser
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from esl.media import bic_codecs, srtp_variables
from esl.site import controller_settings
from kemi.settings import load_settings
from provisioning.render import RenderOptions, render_kamailio
from provisioning.render_freeswitch import render_freeswitch
from siteconfig.model import MediaSection
from tests.test_render import example_with, kamailio_check

RTPENGINE = {"media": {"anchor": "rtpengine", "rtpengine": {
    "ng_listen": "127.0.0.1:22223", "interface": "127.0.0.1", "port_min": 41000,
    "port_max": 41100}}}
DIRECT = {"media": {"anchor": "freeswitch"}}


def test_the_default_anchor_is_rtpengine(tmp_path: Path) -> None:
    """Stock FreeSWITCH takes DTLS calls only through rtpengine: the example, which names no
    ng_listen, renders rtpengine on its default control socket and the edge that uses it."""
    assert MediaSection().anchor == "rtpengine"
    target = render_kamailio(example_with({}), tmp_path / "out")
    assert 'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:2223")' in (
        target / "kamailio.cfg").read_text()
    conf = configparser.ConfigParser()
    conf.read(tmp_path / "out" / "rtpengine" / "rtpengine.conf")
    assert conf["rtpengine"]["listen-ng"] == "127.0.0.1:2223"
    assert load_settings(target / "edge-settings.json").media.rtpengine


def test_the_direct_anchor_renders_no_rtpengine(tmp_path: Path) -> None:
    """Neither the module nor its settings. (On 6.1 the word is still in the cfg: the help
    text of wasip_edge_media_endings_total, declared whatever the anchor.)"""
    target = render_kamailio(example_with(DIRECT), tmp_path / "out")
    cfg = (target / "kamailio.cfg").read_text()
    assert 'loadmodule "rtpengine.so"' not in cfg
    assert 'modparam("rtpengine"' not in cfg
    assert [line for line in cfg.splitlines() if "rtpengine" in line
            and not line.startswith('modparam("xhttp_prom", "prom_counter"')] == []
    assert not (tmp_path / "out" / "rtpengine" / "rtpengine.conf").exists()
    assert not load_settings(target / "edge-settings.json").media.rtpengine


def test_rtpengine_anchor_renders_both_sides_of_the_control_socket(tmp_path: Path) -> None:
    target = render_kamailio(example_with(RTPENGINE), tmp_path / "out",
                             RenderOptions(workers=2, probe_interval=0))
    cfg = (target / "kamailio.cfg").read_text()
    assert 'loadmodule "rtpengine.so"' in cfg
    assert 'modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:22223")' in cfg
    conf = configparser.ConfigParser()
    conf.read(tmp_path / "out" / "rtpengine" / "rtpengine.conf")
    section = conf["rtpengine"]
    assert (section["listen-ng"], section["table"], section["port-min"]) == (
        "127.0.0.1:22223", "-1", "41000")
    settings = load_settings(target / "edge-settings.json")
    assert settings.media.rtpengine and settings.media.inside == "RTP"
    assert all(n.sdes_suites for n in settings.numbers.values())
    result = kamailio_check(target / "kamailio.cfg")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # To the direct path: the stale rtpengine.conf goes (nothing left to start by mistake).
    render_kamailio(example_with(DIRECT), tmp_path / "out")
    assert not (tmp_path / "out" / "rtpengine" / "rtpengine.conf").exists()


@pytest.mark.parametrize("address", ["8.8.8.8:2223", "0.0.0.0:2223", "[2001:4860::8888]:2223"])
def test_the_control_socket_is_never_public(address: str) -> None:
    with pytest.raises(ValidationError, match="loopback or private"):
        MediaSection.model_validate({"rtpengine": {"ng_listen": address}})


def ng_ping(port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        sock.sendto(b"c00kie d7:command4:pinge", ("127.0.0.1", port))
        return sock.recv(2048)


def test_rtpengine_starts_from_the_rendered_file(tmp_path: Path) -> None:
    binary = shutil.which("rtpengine")
    if binary is None:
        pytest.skip("no rtpengine installed (Debian's rtpengine-daemon; make test installs it)")
    render_kamailio(example_with(RTPENGINE), tmp_path / "out")
    conf = tmp_path / "out" / "rtpengine" / "rtpengine.conf"
    process = subprocess.Popen([binary, f"--config-file={conf}", "--config-section=rtpengine",
                                "--foreground", "--log-stderr", f"--pidfile={tmp_path}/rtpe.pid"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        answer = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not answer:
            try:
                answer = ng_ping(22223)
            except OSError:
                time.sleep(0.1)
        assert answer == b"c00kie d6:result4:ponge"
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert "ERR" not in output.upper().replace("STDERR", ""), output[-2000:]


def test_with_rtpengine_freeswitch_sees_every_number_as_plain_rtp(tmp_path: Path) -> None:
    """A stock FreeSWITCH behind rtpengine: no SRTP, DTLS or WebRTC variable on either leg."""
    cfg = example_with({**RTPENGINE, "numbers": [
        {"business_number": "+15550100001", "phone_number_id": "100000000000001"},
        {"business_number": "+15550100003", "phone_number_id": "100000000000003",
         "srtp_mode": "SDES"}]})
    settings = controller_settings(cfg)
    assert {n.srtp_mode for n in settings.numbers} == {"RTP"}
    # Meta's own mode stays known (the CDR says it); the BIC offer adds PCMU for te/8000
    assert [n.meta_srtp_mode for n in settings.numbers] == ["DTLS", "SDES"]
    assert {bic_codecs(n) for n in settings.numbers} == {"OPUS,PCMU"}
    assert all(srtp_variables(n, d) == [] for n in settings.numbers for d in ("inbound", "outbound"))
    target = render_freeswitch(cfg, tmp_path / "out")
    dialplan = (target / "dialplan" / "whatsapp.xml").read_text()
    assert "rtp_secure_media" not in dialplan and "wa_srtp_mode=RTP" in dialplan
    # Meta's own mode per number too, for the CDR (esl/cdr.py srtp_fields)
    assert [line.strip() for line in dialplan.splitlines() if "wa_meta_srtp_mode" in line
            and "<action" in line] == [
        '<action application="set" data="wa_meta_srtp_mode=DTLS"/>',
        '<action application="set" data="wa_meta_srtp_mode=SDES"/>']
    inside = example_with({"media": {"anchor": "rtpengine", "rtpengine": {"inside": "SDES"}}})
    (number, *_) = controller_settings(inside).numbers
    assert (number.srtp_mode, number.sdes_suites) == ("SDES", ("AES_CM_128_HMAC_SHA1_80",))


def test_with_freeswitch_as_anchor_the_numbers_keep_meta_s_mode(tmp_path: Path) -> None:
    settings = controller_settings(example_with(DIRECT))
    assert {n.srtp_mode for n in settings.numbers} == {"DTLS"}  # the example's one number
    assert {(n.meta_srtp_mode, bic_codecs(n)) for n in settings.numbers} == {(None, "OPUS")}
    assert "wa_meta_srtp_mode" not in render_freeswitch(
        example_with(DIRECT), tmp_path / "out").joinpath("dialplan", "whatsapp.xml").read_text()

"""FreeSWITCH templates: well-formed XML, known sofia params, Meta's must-haves present."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest

from esl.fsconfig import (
    TEMPLATES,
    FreeswitchSite,
    check_complete,
    check_rendered_xml,
    freeswitch_context,
)
from siteconfig.controller import ControllerSettings

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "freeswitch"


def render_all(tls: bool = False, password: str = "p<&>\"'",
               routes: list[dict[str, object]] | None = None) -> dict[str, str]:
    settings = ControllerSettings.model_validate(
        {
            "freeswitch": {"password": password, "gateway": "wa-edge"},
            "listen": {"host": "127.0.0.1", "port": 8084},
            "numbers": [
                {"business_number": "+15550100001", "srtp_mode": "SDES"},
                {"business_number": "+15550100002", "srtp_mode": "DTLS"},
            ],
            "routes": routes or [],
        }
    )
    site = FreeswitchSite(
        sip_ip="10.0.0.5",
        rtp_ip="10.0.0.5",
        edge_proxy="10.0.0.2:5070",
        edge_networks=("10.0.0.2/32",),
        candidate_networks=("157.240.0.0/16", "10.0.0.0/8"),
        tls_enabled=tls,
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # as provisioning/render.py; templates escape with |e
    )
    context = freeswitch_context(settings, site)
    return {name: env.get_template(f"{name}.j2").render(context) for name in TEMPLATES}


@pytest.mark.parametrize("tls", [False, True])
def test_every_template_renders_well_formed_with_known_params(tls: bool) -> None:
    for name, text in render_all(tls).items():
        assert check_rendered_xml(name, text) == [], name


def params(text: str) -> dict[str, str]:
    root = ET.fromstring(text)
    return {p.get("name", ""): p.get("value", "") for p in root.iter("param")}


def test_profile_sets_what_meta_requires() -> None:
    profile = params(render_all()["sip_profiles/wa-edge.xml"])
    assert profile["enable-timer"] == "false"
    assert profile["disable-hold"] == "true"
    assert profile["codec-prefs"].startswith("OPUS")
    assert profile["inbound-late-negotiation"] == "true"
    # without a timer a playback blocks on the peer's RTP and the BYE waits behind it
    assert profile["rtp-timer-name"] == "soft"
    assert profile["apply-candidate-acl"] == "wa-candidates"
    assert "tls" not in profile
    assert params(render_all(tls=True)["sip_profiles/wa-edge.xml"])["tls-version"] == "tlsv1.2,tlsv1.3"


def test_dialplan_hands_calls_to_the_controller_with_per_number_srtp() -> None:
    root = ET.fromstring(render_all()["dialplan/whatsapp.xml"])
    extensions = {e.get("name"): e for e in root.iter("extension")}
    sdes = [a.get("data") for a in extensions["wa-15550100001"].iter("action")]
    dtls = [a.get("data") for a in extensions["wa-15550100002"].iter("action")]
    assert "rtp_secure_media_inbound=mandatory:AES_CM_128_HMAC_SHA1_80" in sdes
    assert not any(d and d.startswith("rtp_secure_media") for d in dtls)
    assert "127.0.0.1:8084 async full" in sdes and "127.0.0.1:8084 async full" in dtls
    condition = extensions["wa-15550100001"].find("condition")
    assert condition is not None and condition.get("expression") == r"^\+15550100001$"


def test_password_with_xml_characters_is_escaped() -> None:
    assert params(render_all()["autoload_configs/event_socket.conf.xml"])["password"] == "p<&>\"'"


def test_checker_reports_typos_and_broken_xml() -> None:
    bad = (
        '<include><profile name="x"><settings><param name="enable-timers" value="false"/>'
        '</settings><gateways><gateway name="g"><param name="proxi" value="x"/></gateway>'
        "</gateways></profile></include>"
    )
    assert check_rendered_xml("s.xml", bad) == [
        "s.xml: unknown sofia profile param 'enable-timers'",
        "s.xml: unknown sofia gateway param 'proxi'",
    ]
    assert check_rendered_xml("b.xml", "<a>")[0].startswith("b.xml: not well-formed XML")


def test_the_root_includes_every_rendered_file_and_nothing_missing() -> None:
    files = render_all()
    assert check_complete(files) == []
    root = files["freeswitch.xml"]
    for name in TEMPLATES:
        if name.startswith("autoload_configs/") or name.startswith("dialplan/") or name == "vars.xml":
            assert f'data="{name}"' in root, name
    assert 'data="../sip_profiles/wa-edge.xml"' in files["autoload_configs/sofia.conf.xml"]
    del files["autoload_configs/opus.conf.xml"]
    assert check_complete(files) == [
        "freeswitch.xml: includes autoload_configs/opus.conf.xml, which is not rendered"]


def loaded_modules(files: dict[str, str]) -> list[str]:
    root = ET.fromstring(files["autoload_configs/modules.conf.xml"])
    return [m.get("module", "") for m in root.iter("load")]


def test_only_the_modules_the_site_needs_are_loaded() -> None:
    plain = loaded_modules(render_all(routes=[{"name": "p", "target": {"action": "park"}}]))
    assert "mod_opus" in plain and "mod_sofia" in plain and "mod_event_socket" in plain
    assert "mod_sndfile" not in plain and "mod_loopback" not in plain
    ivr = loaded_modules(render_all(routes=[
        {"name": "menu", "target": {"action": "ivr", "destination": "playback /srv/menu.wav"}}]))
    assert "mod_sndfile" in ivr and "mod_tone_stream" in ivr

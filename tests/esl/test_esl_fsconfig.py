"""FreeSWITCH templates: well-formed XML, known sofia params, Meta's must-haves present."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import jinja2
import pytest

from esl.fsconfig import TEMPLATES, FreeswitchSite, check_rendered_xml, freeswitch_context
from esl.settings import ControllerSettings

TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "templates" / "freeswitch"


def render_all(tls: bool = False, password: str = "p<&>\"'") -> dict[str, str]:
    settings = ControllerSettings.model_validate(
        {
            "freeswitch": {"password": password, "gateway": "wa-edge"},
            "listen": {"host": "127.0.0.1", "port": 8084},
            "numbers": [
                {"business_number": "+15550100001", "srtp_mode": "SDES"},
                {"business_number": "+15550100002", "srtp_mode": "DTLS"},
            ],
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
    profile = params(render_all()["sofia_wa_edge.xml"])
    assert profile["enable-timer"] == "false"
    assert profile["disable-hold"] == "true"
    assert profile["codec-prefs"].startswith("OPUS")
    assert profile["inbound-late-negotiation"] == "true"
    assert profile["apply-candidate-acl"] == "wa-candidates"
    assert "tls" not in profile
    assert params(render_all(tls=True)["sofia_wa_edge.xml"])["tls-version"] == "tlsv1.2,tlsv1.3"


def test_dialplan_hands_calls_to_the_controller_with_per_number_srtp() -> None:
    root = ET.fromstring(render_all()["dialplan_whatsapp.xml"])
    extensions = {e.get("name"): e for e in root.iter("extension")}
    sdes = [a.get("data") for a in extensions["wa-15550100001"].iter("action")]
    dtls = [a.get("data") for a in extensions["wa-15550100002"].iter("action")]
    assert "rtp_secure_media_inbound=mandatory:AES_CM_128_HMAC_SHA1_80" in sdes
    assert not any(d and d.startswith("rtp_secure_media") for d in dtls)
    assert "127.0.0.1:8084 async full" in sdes and "127.0.0.1:8084 async full" in dtls
    condition = extensions["wa-15550100001"].find("condition")
    assert condition is not None and condition.get("expression") == r"^\+15550100001$"


def test_password_with_xml_characters_is_escaped() -> None:
    assert params(render_all()["event_socket.conf.xml"])["password"] == "p<&>\"'"


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

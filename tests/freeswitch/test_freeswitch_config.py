"""The rendered configuration folder, loaded by a real FreeSWITCH: modules, profile, gateway,
Event Socket password and ACL, the SIP ACL toward the edge."""

from __future__ import annotations

import re
import socket
import uuid
import xml.etree.ElementTree as ET

import pytest

from esl.errors import AuthError
from lab.freeswitch import PROFILE, FreeswitchLab
from tests.freeswitch.conftest import ESL_PASSWORD

pytestmark = pytest.mark.needs_freeswitch  # skipped, and counted, without one


def rendered_modules(lab: FreeswitchLab) -> list[str]:
    root = ET.parse(lab.conf / "autoload_configs" / "modules.conf.xml").getroot()
    return [load.get("module", "") for load in root.iter("load")]


def test_every_listed_module_is_loaded(freeswitch: FreeswitchLab) -> None:
    modules = rendered_modules(freeswitch)
    assert "mod_sofia" in modules and "mod_opus" in modules
    for module in modules:
        assert freeswitch.api(f"module_exists {module}").strip() == "true", module
    # control: the check itself can fail (a module the bundle does not load)
    assert freeswitch.api("module_exists mod_loopback").strip() == "false"


def test_profile_runs_on_the_rendered_address(freeswitch: FreeswitchLab) -> None:
    status = freeswitch.api("sofia status")
    line = re.search(rf"^\s*{PROFILE}\s+profile\s+(\S+)\s+(\S+)", status, re.MULTILINE)
    assert line is not None, status
    assert line[1] == f"sip:mod_sofia@127.0.0.1:{freeswitch.sip_port}"
    assert line[2] == "RUNNING"


def test_gateway_points_at_the_edge(freeswitch: FreeswitchLab, edge_port: int) -> None:
    gateway = freeswitch.api(f"sofia status gateway {freeswitch.config.esl.freeswitch.gateway}")
    fields = dict(re.findall(r"^(\w+)\s+(.*)$", gateway, re.MULTILINE))
    assert fields["Proxy"] == f"sip:127.0.0.1:{edge_port}"
    assert fields["Status"] == "UP"
    assert fields["State"] == "NOREG"  # the edge authenticates toward Meta; nobody registers


async def test_event_socket_takes_the_rendered_password_only(freeswitch: FreeswitchLab) -> None:
    assert "is ready" in await freeswitch.api_async("status", password=ESL_PASSWORD)
    with pytest.raises(AuthError, match="refused the ESL password"):
        await freeswitch.api_async("status", password=ESL_PASSWORD + "x")


def test_event_socket_refuses_an_address_outside_its_acl(freeswitch: FreeswitchLab) -> None:
    with socket.create_connection((freeswitch.esl_host, freeswitch.esl_port), timeout=5,
                                  source_address=("127.0.0.5", 0)) as conn:
        greeting = conn.recv(4096).decode()
    assert "Content-Type: text/rude-rejection" in greeting
    with socket.create_connection((freeswitch.esl_host, freeswitch.esl_port), timeout=5,
                                  source_address=("127.0.0.1", 0)) as conn:
        assert "Content-Type: auth/request" in conn.recv(4096).decode()


def sip_invite(target: str, source: tuple[str, int]) -> bytes:
    host, port = source
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           "m=audio 40000 RTP/SAVP 111 126\r\na=rtpmap:111 opus/48000/2\r\n"
           "a=rtpmap:126 telephone-event/8000\r\n"
           "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
           )
    business = "+15550100001"
    lines = [
        f"INVITE sip:{business}@{target} SIP/2.0",
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"From: <sip:+15550123456@wa.meta.vc>;tag={uuid.uuid4().hex[:8]}",
        f"To: <sip:{business}@{target}>",
        f"Call-ID: {uuid.uuid4()}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:+15550123456@{host}:{port}>",
        f"X-WA-Business-Number: {business}",
        "Content-Type: application/sdp",
        f"Content-Length: {len(sdp)}",
        "",
        sdp,
    ]
    return "\r\n".join(lines).encode()


def first_final_or_provisional(freeswitch: FreeswitchLab, source_ip: str) -> str:
    """Send an INVITE from `source_ip` and return the first response's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_ip, 0))
        sock.settimeout(5)
        target = f"127.0.0.1:{freeswitch.sip_port}"
        sock.sendto(sip_invite(target, sock.getsockname()), ("127.0.0.1", freeswitch.sip_port))
        data, _ = sock.recvfrom(65535)
    return data.decode(errors="replace").split("\r\n", 1)[0]


def test_sip_from_outside_the_edge_acl_is_refused(freeswitch: FreeswitchLab) -> None:
    assert first_final_or_provisional(freeswitch, "127.0.0.5") == "SIP/2.0 403 Forbidden"
    # control: the edge's own address (127.0.0.1) gets the call in (100 Trying), so the 403
    # above is the ACL's doing and not a broken INVITE
    assert first_final_or_provisional(freeswitch, "127.0.0.1").startswith("SIP/2.0 100")

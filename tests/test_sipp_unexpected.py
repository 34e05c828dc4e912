"""SIPp results: a provisional reply relayed after the final one is tolerated, anything else
that arrives out of script fails the call.

A proxy with several workers can relay a 180 after the 200 of the same INVITE (the flaky
`test_sync_and_rotation_reach_the_running_edge` failed on exactly that). Here a plain UDP peer
sends the 200 and then the 180, on purpose and every time, to a SIPp UAC of ours.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from lab.processes import free_port
from lab.sipp import run_sipp_client

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None, reason="make test installs sipp")

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac">
  <send><![CDATA[
INVITE sip:x@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[pid]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:a@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[
ACK sip:x@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:a@[local_ip]>;tag=[pid]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Content-Length: 0

]]></send>
  <pause milliseconds="300"/>
</scenario>
"""


def _answer(server: socket.socket, replies: list[tuple[int, str]]) -> None:
    """Answer one INVITE with `replies`, in this order, in one burst."""
    data, peer = server.recvfrom(65535)
    head: dict[str, str] = {}
    for line in data.decode().split("\r\n")[1:]:
        name = line.partition(":")[0].strip().lower()
        head.setdefault(name, line)
    for code, reason in replies:
        server.sendto((f"SIP/2.0 {code} {reason}\r\n{head['via']}\r\n{head['from']}\r\n"
                       f"{head['to']};tag=peer\r\n{head['call-id']}\r\n{head['cseq']}\r\n"
                       f"Contact: <sip:127.0.0.1>\r\nContent-Length: 0\r\n\r\n").encode(), peer)
    server.recvfrom(65535)  # the ACK


def _call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          replies: list[tuple[int, str]]) -> tuple[bool, list[str]]:
    monkeypatch.setattr("lab.sipp.SCENARIOS", tmp_path / "scenarios")
    flow = tmp_path / "scenarios" / "order"
    flow.mkdir(parents=True)
    (flow / "uac.xml").write_text(UAC)
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(10)
    peer = threading.Thread(target=_answer, args=(server, replies), daemon=True)
    peer.start()
    try:
        result = run_sipp_client("order", "uac", tmp_path, server.getsockname()[1],
                                 free_port(socket.SOCK_DGRAM), timeout_s=8, transport="u1")
        peer.join(10)
    finally:
        server.close()
    return result.passed, result.unexpected


def test_a_180_after_the_200_is_tolerated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passed, unexpected = _call(tmp_path, monkeypatch, [(200, "OK"), (180, "Ringing")])
    assert unexpected == ["SIP/2.0 180 Ringing"]  # it really came late, and out of script
    assert passed


def test_a_final_reply_out_of_script_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passed, unexpected = _call(tmp_path, monkeypatch, [(200, "OK"), (486, "Busy Here")])
    assert unexpected == ["SIP/2.0 486 Busy Here"]
    assert not passed

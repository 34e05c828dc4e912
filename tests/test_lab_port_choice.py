"""The lab's media peers and SIP UAC bind a port of free_port()'s when none is given, never
port 0: the kernel's port-0 choice knows nothing of the ports free_port() already handed to
parties that bind them later (seen: a media peer took the WhatsApp user's SIP port between the
lab choosing it and the user binding it, EADDRINUSE in `make lab`'s rtpengine section)."""

from __future__ import annotations

import socket

import pytest

import lab.media.peer as peer_module
import lab.media.plain_peer as plain_module
import lab.media.sip_uac as uac_module
from lab.media.peer import MediaPeer
from lab.media.plain_peer import PlainRtpPeer
from lab.media.sdp import SrtpMode
from lab.media.sip_uac import SipUac
from lab.processes import free_port


@pytest.fixture
def chosen(monkeypatch: pytest.MonkeyPatch) -> int:
    """One free_port() answer, given to every module that asks."""
    port = free_port(socket.SOCK_DGRAM)
    for module in (peer_module, plain_module, uac_module):
        monkeypatch.setattr(module, "free_port", lambda *_: port)
    return port


async def test_a_media_peer_binds_free_ports_choice(chosen: int) -> None:
    peer = await MediaPeer(SrtpMode.SDES).open()
    try:
        assert peer.port == chosen
    finally:
        await peer.close()


async def test_a_plain_rtp_peer_binds_free_ports_choice(chosen: int) -> None:
    peer = await PlainRtpPeer().open()
    try:
        assert peer.port == chosen
    finally:
        await peer.close()


async def test_a_sip_uac_without_a_fixed_port_binds_free_ports_choice(chosen: int) -> None:
    uac = await SipUac(("127.0.0.1", 9)).open()
    try:
        assert uac.port == chosen
    finally:
        uac.close()

"""Meta's side of the cluster lab: user-initiated calls to the site's one host name.

The name (the site's sip_domain) resolves, through the lab's hosts file, to every edge; each
call's Meta UAC (lab/meta_uac.py) speaks TLS to the first address that takes the connection
and its media peer (lab/media/peer.py, SDES) plays a tone from Meta's node address. A call is
good when it is answered, Meta hears the business's tone and Meta's BYE gets its 200.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.cluster.business_node import BUSINESS_TONE_HZ
from lab.cluster.edge_node import TLS_PORT
from lab.cluster.media_gaps import Arrivals, MeasuredMediaPeer
from lab.cluster.topology import hosts_line_addresses
from lab.edge import LAB_PASSWORD, META_USER
from lab.media.peer import MediaReport
from lab.media.sdp import SrtpMode
from lab.meta_uac import MetaUac
from lab.rtpengine_section import NUMBERS

META_TONE_HZ = 440.0
TONE_TOLERANCE_HZ = 5.0


def tls_context(ca_files: list[Path]) -> ssl.SSLContext:
    """Meta's TLS client: the edges' certificates checked against the lab CAs, for the name."""
    context = ssl.create_default_context()
    for ca in ca_files:
        context.load_verify_locations(cafile=str(ca))
    return context


def resolve(hosts_file: Path, name: str) -> list[str]:
    return hosts_line_addresses(hosts_file.read_text(encoding="utf-8"), name)


@dataclass
class MetaCall:
    """One call's life as Meta saw it."""

    wacid: str
    hosts: list[str]
    mode: SrtpMode = SrtpMode.SDES  # the called number's: SDES or DTLS toward Meta
    call_id: str = ""  # Meta's SIP Call-ID (rtpengine's name of the call)
    answered_at: float | None = None  # monotonic, when the 200 arrived
    status: int = 0
    connected_to: str = ""
    refused: list[str] = field(default_factory=list)
    setup_ms: float = 0.0
    bye_status: int = 0
    bye_via: str = ""
    remote_bye: bool = False  # the site ended the call toward Meta
    heard_hz: float | None = None
    error: str = ""
    route: str = ""  # Meta's route set through the site, as the edge's Record-Route gave it
    arrivals: Arrivals | None = None  # when the business's audio reached Meta (at the call's end)
    media: MediaReport | None = None
    _uac: MetaUac | None = None
    _peer: MeasuredMediaPeer | None = None

    @property
    def answered(self) -> bool:
        return self.status == 200

    @property
    def heard_business(self) -> bool:
        return self.heard_hz is not None and abs(self.heard_hz - BUSINESS_TONE_HZ) <= TONE_TOLERANCE_HZ

    @property
    def good(self) -> bool:
        return self.answered and self.heard_business and self.bye_status == 200

    def line(self) -> str:
        via = f"via {self.connected_to}" + (f" ({', '.join(self.refused)} refused)"
                                            if self.refused else "")
        parts = [f"{self.wacid}: INVITE {self.status or 'no answer'} {via} in "
                 f"{self.setup_ms:.0f} ms"]
        if self.answered:
            heard = f"{self.heard_hz:.0f} Hz" if self.heard_hz else "nothing"
            parts.append(f"Meta heard {heard}")
            if self.remote_bye:
                parts.append("the site sent Meta a BYE")
            else:
                parts.append(f"Meta's BYE {self.bye_status or 'unanswered'}"
                             + (f" via {self.bye_via}" if self.bye_via else ""))
        if self.error:
            parts.append(self.error)
        return "; ".join(parts)


async def call_up(call: MetaCall, sip_domain: str, address: str, tls: ssl.SSLContext,
                  timeout_s: float = 10.0) -> MetaCall:
    """INVITE (407 answered) until the final response; media running when answered."""
    peer = MeasuredMediaPeer(call.mode, tone_hz=META_TONE_HZ, address=address)
    await peer.open()
    number = NUMBERS[call.mode]
    uac = MetaUac(TLS_PORT, sip_domain, META_USER, f"<sip:{sip_domain}:{TLS_PORT};transport=tls;lr>",
                  hosts=call.hosts, tls=tls, connect_timeout_s=1.0)
    call._uac, call._peer = uac, peer
    call.call_id = uac.call_id
    started = time.monotonic()
    try:
        await uac.open()
        response = await uac.invite(number, number[1:], LAB_PASSWORD, call.wacid,
                                    "cluster-lab", peer.offer(), timeout=timeout_s)
        call.status = response.status or 0
        if call.answered:
            call.answered_at = time.monotonic()
            call.route = uac.edge_route
            peer.accept_answer(response.body)
            peer.start()
    except (TimeoutError, OSError) as error:
        call.error = f"{type(error).__name__}: {error}".rstrip(": ")
    call.setup_ms = (time.monotonic() - started) * 1000
    call.connected_to, call.refused = uac.connected_to, list(uac.refused)
    if not call.answered:
        await hang_up(call)
    return call


def mac_key_id(route: str) -> str:
    """The key id of the site's MAC in a route set (kemi/dialog_mac.py's wamac=KEY.DIR.MAC)."""
    match = re.search(r";wamac=([^.;>]+)\.", route)
    return match[1] if match else ""


async def hang_up(call: MetaCall, duration_s: int = 2, hosts: list[str] | None = None) -> MetaCall:
    """Meta's BYE (over a new connection if the old one broke, or to the first of `hosts`
    that takes one when given), media stopped, report kept."""
    uac, peer = call._uac, call._peer
    if uac is not None and hosts is not None:
        await uac.close()  # the next request opens a connection of its own
        uac.hosts, uac.refused = hosts, []
    if uac is not None and call.answered:
        call.remote_bye = uac.remote_bye.is_set()
        if not call.remote_bye:
            try:
                call.bye_status = await uac.bye(call.wacid, duration_s, timeout=8.0)
            except (TimeoutError, OSError) as error:
                call.error = f"BYE: {type(error).__name__} {error}".strip()
            call.bye_via = uac.connected_to
    if peer is not None:
        report = await peer.close()
        call.heard_hz = report.heard_hz
        call.arrivals, call.media = peer.arrivals, report
    if uac is not None:
        await uac.close()
    call._uac = call._peer = None
    return call


async def whole_call(call: MetaCall, sip_domain: str, address: str, tls: ssl.SSLContext,
                     hold_s: float) -> MetaCall:
    await call_up(call, sip_domain, address, tls)
    if call.answered:
        await asyncio.sleep(hold_s)
        await hang_up(call)
    return call

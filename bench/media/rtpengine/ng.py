"""rtpengine's ng commands for the calls bench-rtpengine places without Kamailio: the edge's own
flag strings (kemi/media_flags.py) read the way Kamailio's rtpengine module reads them.

Why not through the edge: rtpengine transcoding Opus <-> PCMU is measured for the decision where
transcoding belongs (bench/README.md), and the edge never asks rtpengine for it, so those calls
take the edge's flags for each leg plus the codec options, sent over ng directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

from provisioning.rtpengine_ng import command

PROFILES = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF")
LISTS = ("rtcp-mux", "SDES", "replace")  # "rtcp-mux-demux" -> {"rtcp-mux": ["demux"]}


def ng_options(flags: str) -> dict[str, Any]:
    """The ng dictionary entries of a Kamailio rtpengine flag string (space-separated):
    ``key=value`` an entry, a transport profile ``transport-protocol``, ``rtcp-mux-x``,
    ``SDES-x`` and ``replace-x`` items of their lists, anything else an item of ``flags``."""
    options: dict[str, Any] = {}
    for token in flags.split():
        key, equals, value = token.partition("=")
        prefix = next((name for name in LISTS if token.startswith(f"{name}-")), None)
        if token in PROFILES:
            options["transport-protocol"] = token
        elif equals:
            options[key] = value
        elif prefix is not None:
            options.setdefault(prefix, []).append(token[len(prefix) + 1:])
        else:
            options.setdefault("flags", []).append(token)
    return options


class Ng:
    """One rtpengine's ng socket; each command in a thread so the media of other calls flows."""

    def __init__(self, host: str, port: int, timeout_s: float = 3.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(command, self.host, self.port, request, self.timeout_s)

    async def sdp(self, request: dict[str, Any]) -> str:
        """An offer's or answer's rewritten SDP."""
        sdp = (await self(request)).get("sdp", b"")
        return sdp.decode() if isinstance(sdp, bytes) else str(sdp)

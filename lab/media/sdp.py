"""The SDP Meta's media side writes, and what it reads from the business's.

Meta offers on user-initiated calls and answers on business-initiated ones, with one audio
stream, Opus (`opus/48000/2`, `useinbandfec=1`) and `telephone-event/8000`, rtcp-mux, and per
number either:
- SDES: `RTP/SAVP` with `a=crypto:<tag> AES_CM_128_HMAC_SHA1_80 inline:<key>` (RFC 4568), or
- DTLS: `UDP/TLS/RTP/SAVPF`, `a=ice-lite` with one host candidate, an upper-case sha-256
  `a=fingerprint`, `a=setup:actpass` in offers and `passive` in answers (Meta is the DTLS server).
Reading is strict the way Meta is: an answer or offer of the other mode is refused. A number with
G.711 enabled at Meta (`audio.additional_codecs`) has PCMU and/or PCMA offered after Opus, and
an answer may then choose one of them instead of Opus.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from lab.media.srtp import SUITE, inline_key, parse_inline_key

OPUS_PT = 111
TELEPHONE_EVENT_PT = 126
SDES_PROFILE = "RTP/SAVP"
DTLS_PROFILE = "UDP/TLS/RTP/SAVPF"
HOST_PRIORITY = 2130706431
G711_PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}  # RFC 3551's static payload types, 8000 Hz


class SrtpMode(enum.Enum):
    SDES = "SDES"
    DTLS = "DTLS"


class SdpError(ValueError):
    """The business's SDP is not one Meta would accept; the text says why."""


@dataclass(frozen=True)
class LocalMedia:
    """What our SDP announces."""

    mode: SrtpMode
    address: str
    port: int
    crypto_tag: int = 1
    master_key: bytes | None = None  # SDES
    ice_ufrag: str | None = None  # DTLS
    ice_pwd: str | None = None
    fingerprint: str | None = None
    opus_pt: int = OPUS_PT
    telephone_event_pt: int = TELEPHONE_EVENT_PT
    g711: tuple[str, ...] = ()  # "PCMU", "PCMA": offered after Opus (audio.additional_codecs)


@dataclass
class RemoteMedia:
    """What the business's SDP says about its audio stream."""

    address: str = ""
    port: int = 0
    profile: str = ""
    payloads: dict[str, int] = field(default_factory=dict)  # "opus/48000/2" -> 111
    cryptos: list[tuple[int, str, str]] = field(default_factory=list)  # tag, suite, key params
    fingerprint: tuple[str, str] | None = None  # hash, value
    setup: str | None = None
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    ice_lite: bool = False
    candidates: list[tuple[str, int]] = field(default_factory=list)
    rtcp_mux: bool = False

    def payload_type(self, prefix: str) -> int | None:
        """The PT whose rtpmap starts with `prefix` (case-insensitive), e.g. `opus/48000`."""
        for name, pt in self.payloads.items():
            if name.lower().startswith(prefix.lower()):
                return pt
        return None


def build_sdp(local: LocalMedia, *, offer: bool, session_id: int | None = None) -> str:
    """Meta's offer (UIC) or answer (BIC) for `local`."""
    sid = session_id if session_id is not None else random.randint(1, 2**62)
    lines = ["v=0", f"o=- {sid} 2 IN IP4 {local.address}", "s=-", f"c=IN IP4 {local.address}",
             "t=0 0"]
    profile = SDES_PROFILE if local.mode is SrtpMode.SDES else DTLS_PROFILE
    if local.mode is SrtpMode.DTLS:
        lines.append("a=ice-lite")
    g711 = [(G711_PAYLOAD_TYPES[name], name) for name in local.g711]
    formats = " ".join(str(pt) for pt in (local.opus_pt, *(pt for pt, _ in g711),
                                          local.telephone_event_pt))
    lines += [
        f"m=audio {local.port} {profile} {formats}",
        f"a=rtpmap:{local.opus_pt} opus/48000/2",
        f"a=fmtp:{local.opus_pt} useinbandfec=1",
        *(f"a=rtpmap:{pt} {name}/8000" for pt, name in g711),
        f"a=rtpmap:{local.telephone_event_pt} telephone-event/8000",
    ]
    if local.mode is SrtpMode.SDES:
        if local.master_key is None:
            raise ValueError("SDES needs a master key")
        lines.append(f"a=crypto:{local.crypto_tag} {SUITE} {inline_key(local.master_key)}")
    else:
        if not (local.ice_ufrag and local.ice_pwd and local.fingerprint):
            raise ValueError("DTLS needs ice-ufrag, ice-pwd and a fingerprint")
        lines += [
            f"a=ice-ufrag:{local.ice_ufrag}",
            f"a=ice-pwd:{local.ice_pwd}",
            f"a=candidate:1 1 udp {HOST_PRIORITY} {local.address} {local.port} typ host",
            f"a=fingerprint:sha-256 {local.fingerprint}",
            f"a=setup:{'actpass' if offer else 'passive'}",
        ]
    lines += ["a=rtcp-mux", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def parse_sdp(text: str) -> RemoteMedia:
    """The first audio stream of an SDP body (session-level c= and ICE lines apply to it)."""
    media = RemoteMedia()
    in_audio = seen_audio = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            if seen_audio:
                break  # only the first audio stream
            parts = value.split()
            in_audio = seen_audio = len(parts) >= 3 and parts[0] == "audio"
            if in_audio:
                media.port, media.profile = int(parts[1]), parts[2]
            continue
        if kind == "c" and (in_audio or not seen_audio):
            parts = value.split()
            if len(parts) == 3:
                media.address = parts[2]
        if kind == "a" and (in_audio or not seen_audio):
            _attribute(media, value)
    if not seen_audio:
        raise SdpError("no audio stream in the SDP")
    return media


def _attribute(media: RemoteMedia, value: str) -> None:
    name, _, rest = value.partition(":")
    if name == "rtpmap":
        pt, _, encoding = rest.partition(" ")
        media.payloads[encoding.strip()] = int(pt)
    elif name == "crypto":
        parts = rest.split()
        if len(parts) >= 3 and parts[0].isdigit():
            media.cryptos.append((int(parts[0]), parts[1], parts[2]))
    elif name == "fingerprint":
        hash_name, _, fp = rest.partition(" ")
        media.fingerprint = (hash_name.lower(), fp.strip())
    elif name == "setup":
        media.setup = rest.strip()
    elif name == "ice-ufrag":
        media.ice_ufrag = rest.strip()
    elif name == "ice-pwd":
        media.ice_pwd = rest.strip()
    elif name == "ice-lite":
        media.ice_lite = True
    elif name == "rtcp-mux":
        media.rtcp_mux = True
    elif name == "candidate":
        parts = rest.split()
        # foundation component transport priority address port typ type
        if len(parts) >= 8 and parts[1] == "1" and parts[2].lower() == "udp":
            media.candidates.append((parts[4], int(parts[5])))


def check_remote(remote: RemoteMedia, mode: SrtpMode, *, offer: bool,
                 g711: tuple[str, ...] = ()) -> None:
    """Refuse what Meta refuses: the other SRTP mode, no Opus (nor a G.711 codec the number
    has enabled, `g711`), a DTLS answer that does not make the business the DTLS client."""
    if remote.port == 0:
        raise SdpError("audio stream rejected (port 0)")
    if remote.payload_type("opus/48000") is None and not any(
            remote.payload_type(f"{name}/8000") is not None for name in g711):
        raise SdpError("no opus/48000 in the audio stream"
                       + (f" (nor {', '.join(g711)})" if g711 else ""))
    if mode is SrtpMode.SDES:
        if remote.profile != SDES_PROFILE:
            raise SdpError(f"SRTP mode SDES expects {SDES_PROFILE}, got {remote.profile}")
        if not any(suite == SUITE for _, suite, _ in remote.cryptos):
            raise SdpError(f"no a=crypto with {SUITE}")
        return
    if remote.profile != DTLS_PROFILE:
        raise SdpError(f"SRTP mode DTLS expects {DTLS_PROFILE}, got {remote.profile}")
    if remote.fingerprint is None or remote.fingerprint[0] != "sha-256":
        raise SdpError("no sha-256 a=fingerprint")
    if not (remote.ice_ufrag and remote.ice_pwd):
        raise SdpError("no ice-ufrag/ice-pwd")
    wanted = ("actpass", "active") if offer else ("active",)
    if remote.setup not in wanted:
        raise SdpError(f"a=setup:{remote.setup} would not make the business the DTLS client")


def sdes_remote_key(remote: RemoteMedia) -> tuple[int, bytes]:
    """Tag and master key of the business's AES_CM_128_HMAC_SHA1_80 crypto line."""
    for tag, suite, params in remote.cryptos:
        if suite == SUITE:
            try:
                return tag, parse_inline_key(params)
            except ValueError as error:
                raise SdpError(str(error)) from None
    raise SdpError(f"no a=crypto with {SUITE}")

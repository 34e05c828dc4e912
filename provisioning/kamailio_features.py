"""What the Kamailio that will run the edge offers, decided once at render time.

One rendered `kamailio.cfg` and one KEMI edge serve every supported Kamailio (5.6, 6.0, 6.1):
the renderer asks this module what the target binary has and leaves out, or replaces, what it
lacks, and `provision render` / `doctor` say so in plain words. The facts come from Kamailio's
sources and from running Debian 12's 5.6.3 and 6.0.1 and 6.1.4 built from Kamailio's
source (see README, "Supported Kamailio"):

- the core's TCP/TLS hardening variables (`tcp_accept_iplimit`, `tcp_msg_data_timeout`,
  `tcp_msg_read_timeout`, `tcp_check_timer`) are not in 5.6;
- the auth module's 401 path for KEMI (`www_challenge`, `pv_www_authenticate`, with
  `proxy_challenge`, `pv_proxy_authenticate`, `auth_algorithm`) arrived after 5.6: 5.6 has
  `auth_challenge` (407 for an INVITE) and `pv_auth_check`;
- xhttp_prom's `help` field and `xhttp_prom_metadata_flags` came with 6.1;
- 5.6's tls module, with OpenSSL 3, dies of a double free under an ordinary TLS scan, so on 5.6
  Meta's TLS port must be terminated by something else (HAProxy) and Kamailio's tls module
  only opens the edge's own connections toward Meta.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from provisioning.kamailio_binary import KamailioNotFound, kamailio_binary, version_of

Version = tuple[int, int, int]
OLDEST = (5, 6, 0)
"""The lowest supported Kamailio, and what a render targets when no binary is named or found."""
NEWEST_TESTED = (6, 1, 4)


@dataclass(frozen=True)
class KamailioFeatures:
    """The parts of the rendered edge that depend on the Kamailio version."""

    version: Version

    @property
    def modern(self) -> bool:
        """6.0 or later: the line after which every feature below is present."""
        return self.version[:2] >= (6, 0)

    @property
    def tcp_hardening(self) -> bool:
        """tcp_accept_iplimit, tcp_msg_data_timeout, tcp_msg_read_timeout, tcp_check_timer."""
        return self.modern

    @property
    def www_challenge(self) -> bool:
        """401 challenges (auth.challenge_code = 401) and the explicit proxy_* auth calls."""
        return self.modern

    @property
    def prom_help(self) -> bool:
        """xhttp_prom takes `help` in metric definitions and xhttp_prom_metadata_flags (6.1.0,
        upstream 89cf1a45e4; 6.0 refuses both at start)."""
        return self.version[:2] >= (6, 1)

    @property
    def quiet_parser(self) -> bool:
        """An unparsable header line is logged at sip_parser_log's level (6.0.0); 5.6 logs it at
        ERR with the rest of the message (core/parser/parse_hname2.c)."""
        return self.modern

    @property
    def tls_faces_internet(self) -> bool:
        """Kamailio's tls module may listen on a socket that the Internet reaches."""
        return self.modern

    @property
    def text(self) -> str:
        return ".".join(map(str, self.version))

    def lacks(self) -> list[str]:
        """Plain sentences, one per feature this version does not have, and what stands in."""
        if self.modern:
            return []
        return [
            "no 401 challenges (auth.challenge_code = 401 needs Kamailio 6.0): the edge "
            "challenges Meta with 407",
            "its tls module is not safe on a socket the Internet reaches (a TLS scan crashes "
            "it with OpenSSL 3): Meta's TLS port is terminated by HAProxy, which hands "
            "Meta's address to Kamailio with the PROXY protocol",
            "no per-source connection limit and no first-message or read timeouts in "
            "Kamailio (tcp_accept_iplimit, tcp_msg_*_timeout): HAProxy's timeouts and the "
            "rendered nftables rules give them",
            "its parser logs a header line it cannot parse at ERR with the rest of the message "
            "(sip_parser_log governs it from 6.0): rate-limit the edge's log in journald or "
            "rsyslog",
        ]

    def to_settings(self) -> dict[str, object]:
        """What the KEMI edge reads (edge-settings.json, "kamailio")."""
        return {"version": self.text, "www_challenge": self.www_challenge}


class FeatureError(ValueError):
    """A Kamailio version that wa-sip does not support, or a version text it cannot read."""


def features_for(version: Version) -> KamailioFeatures:
    if version[:2] < OLDEST[:2]:
        raise FeatureError(f"Kamailio {'.'.join(map(str, version))} is not supported: wa-sip "
                           "needs 5.6 or later")
    return KamailioFeatures(version)


def parse_version(text: str) -> Version:
    """'5.6', '6.0.1' -> (5, 6, 0), (6, 0, 1); FeatureError for anything else."""
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if match is None:
        raise FeatureError(f"not a Kamailio version: {text!r} (write e.g. 5.6 or 6.0.1)")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def installed_kamailio() -> str:
    """The path of the Kamailio the bundle would run, or "" when none is installed."""
    try:
        return kamailio_binary()
    except KamailioNotFound:
        return ""


def installed_features() -> KamailioFeatures | None:
    """The features of the Kamailio the bundle would run (provisioning.kamailio_binary), or
    None when none is installed here."""
    try:
        binary = kamailio_binary()
    except KamailioNotFound:
        return None
    version = version_of(binary)
    return features_for(version) if version else None

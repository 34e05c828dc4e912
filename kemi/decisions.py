"""Decisions of the edge that need no KSR call: what to do with a method, a digest check
result, a source address, and which FreeSWITCH set and context a call goes to."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from enum import Enum

from kemi.settings import EdgeSettings, IPNetwork, NodeAddress

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
# Methods that only make sense inside a dialog: without a To tag there is no dialog to find.
DIALOG_ONLY = frozenset({"BYE", "PRACK", "UPDATE", "INFO", "NOTIFY", "REFER"})


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: str = ""


def out_of_dialog_method(method: str) -> Reply | None:
    """None for INVITE (a call); otherwise the reply that ends the request here."""
    if method == "INVITE":
        return None
    if method == "OPTIONS":
        return Reply(200, "OK", f"Allow: {ALLOW}\r\nAccept: application/sdp\r\n")
    if method == "REGISTER":
        return Reply(403, "Forbidden - registration is not used with WhatsApp SIP calling")
    if method in DIALOG_ONLY:
        return Reply(481, "Call/Transaction Does Not Exist")
    return Reply(405, "Method Not Allowed", f"Allow: {ALLOW}\r\n")


class AuthAction(Enum):
    ACCEPT = "accept"
    CHALLENGE = "challenge"
    CHALLENGE_STALE = "challenge-stale"
    CHALLENGE_AFTER_FAILURE = "challenge-after-failure"
    REFUSE = "refuse"


# pv_auth_check() results (Kamailio auth module, auth_mod.h).
HOP_CACHE_SIZE = 256  # next-hop URIs taken apart per worker (next_hop_address)
AUTH_OK = 1
AUTH_ERROR = -1
AUTH_INVALID_PASSWORD = -2
AUTH_NONCE_REUSED = -6
AUTH_STALE_NONCE = -4
AUTH_NO_CREDENTIALS = -5


def auth_action(result: int) -> AuthAction:
    """Map pv_auth_check's result to what the edge does: never relay unless it is 1."""
    if result == AUTH_OK:
        return AuthAction.ACCEPT
    if result in (AUTH_STALE_NONCE, AUTH_NONCE_REUSED):
        return AuthAction.CHALLENGE_STALE
    if result == AUTH_INVALID_PASSWORD:
        return AuthAction.CHALLENGE_AFTER_FAILURE
    if result == AUTH_ERROR:
        return AuthAction.REFUSE
    return AuthAction.CHALLENGE


@functools.lru_cache(maxsize=HOP_CACHE_SIZE)
def next_hop_address(uri: str) -> NodeAddress:
    """(host, port, transport) a SIP URI sends to, with RFC 3263's defaults for a URI without
    port or transport (5060/udp, sips: 5061/tls); ValueError when it is no SIP URI.

    A pure function, kept per worker for the last HOP_CACHE_SIZE URIs (an in-dialog request
    asks it twice of the same next hop, the FreeSWITCH nodes' URIs repeat); a URI that raises
    is never kept."""
    scheme, sep, rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        raise ValueError(f"not a SIP URI: {uri!r}")
    hostport, *params = rest.split("?", 1)[0].rpartition("@")[2].split(";")
    transport = next((p.split("=", 1)[1].lower() for p in params
                      if p.lower().startswith("transport=")), "tls" if scheme == "sips" else "udp")
    if hostport.startswith("["):
        host, _, port_text = hostport[1:].partition("]")
        port_text = port_text.removeprefix(":")
    elif hostport.count(":") == 1:
        host, port_text = hostport.split(":")
    else:
        host, port_text = hostport, ""
    default = 5061 if transport == "tls" else 5060
    port = int(port_text) if port_text else default
    if not host or not 0 < port < 65536:
        raise ValueError(f"no host or port in {uri!r}")
    return host.lower(), port, transport


def in_dialog_target_allowed(next_hop_uri: str, nodes: frozenset[NodeAddress],
                             trusted: tuple[IPNetwork, ...]) -> bool:
    """May an in-dialog request from Meta go to `next_hop_uri`: only a FreeSWITCH node.

    loose_route() follows whatever Route set and request URI a request carries, so even inside
    one of our dialogs a forged target would make the edge relay anywhere. Host, port and
    transport must be those of a dispatcher node, or (for business-initiated calls placed by
    a machine in bic.trusted_sources) the host one of those addresses.
    """
    try:
        address = next_hop_address(next_hop_uri)
    except ValueError:
        return False
    return address in nodes or (bool(trusted) and address[2] == "udp"
                                and source_allowed(address[0], trusted))


def source_allowed(source_ip: str, allowed: tuple[IPNetwork, ...]) -> bool:
    """True when no allow-list is configured or the address is inside one of its prefixes."""
    if not allowed:
        return True
    try:
        address = ipaddress.ip_address(source_ip.strip("[]"))
    except ValueError:
        return False
    return any(address in network for network in allowed)


def source_check(allowed: tuple[IPNetwork, ...],
                 maxsize: int) -> functools._lru_cache_wrapper[bool]:
    """source_allowed() for one allow-list, remembered per address (at most `maxsize` of them).

    The settings of a worker never change while it runs (a reload forks new workers), so the
    decision is a pure function of the address; the cache is bounded, least recently used
    addresses go first.
    """

    @functools.lru_cache(maxsize=maxsize)
    def allowed_source(source_ip: str) -> bool:
        return source_allowed(source_ip, allowed)

    return allowed_source


@dataclass(frozen=True)
class Destination:
    freeswitch_set: int
    algorithm: int
    context: str


def choose_destination(settings: EdgeSettings, business_number: str,
                       user_params: dict[str, str]) -> Destination:
    """First route whose every `match` key equals the call's value wins; else the defaults."""
    values = dict(user_params)
    values["business_number"] = business_number
    for route in settings.routes:
        if all(values.get(key.lower() if key != "business_number" else key) == expected
               for key, expected in route.match.items()):
            chosen = route.freeswitch_set or settings.default_set
            return Destination(chosen, settings.set_algorithms[chosen],
                               route.context or settings.default_context)
    return Destination(settings.default_set, settings.set_algorithms[settings.default_set],
                       settings.default_context)


def internal_source_trusted(is_dispatcher_node: bool, source_ip: str,
                            trusted: tuple[IPNetwork, ...]) -> bool:
    """May a request from the internal side be handled: a FreeSWITCH node of a dispatcher set,
    or an address inside `bic.trusted_sources` (an empty list adds nobody)."""
    return is_dispatcher_node or (bool(trusted) and source_allowed(source_ip, trusted))


class InDialogAction(Enum):
    RELAY = "relay"
    REFUSE_SESSION_CHANGE = "refuse-session-change"
    REFUSE_TRANSFER = "refuse-transfer"


def in_dialog_action(method: str, from_meta: bool) -> InDialogAction:
    """What happens to an in-dialog request before it is loose-routed.

    Meta answers re-INVITEs with 500, which would end FreeSWITCH's call; the edge answers
    re-INVITE and UPDATE from the business side itself with 488: a non-2xx answer to a
    re-INVITE leaves the session as it was (RFC 3261 14.1), as FreeSWITCH does when a T.38
    re-INVITE is refused. Meta does not support REFER in either direction.
    """
    if method == "REFER":
        return InDialogAction.REFUSE_TRANSFER
    if not from_meta and method in ("INVITE", "UPDATE"):
        return InDialogAction.REFUSE_SESSION_CHANGE
    return InDialogAction.RELAY

"""The ICE-lite side of a call (RFC 8445 2.5, 6.1.1): what Meta's media servers do.

A lite agent gathers only host candidates, sends no connectivity checks and is always
CONTROLLED. It answers each Binding request that carries the right USERNAME (`ours:theirs`),
MESSAGE-INTEGRITY (HMAC-SHA1 keyed with our ice-pwd) and FINGERPRINT, and takes the pair the
controlling side nominates with USE-CANDIDATE. A request claiming ICE-CONTROLLED (the other side
thinks it is controlled too) gets 487 Role Conflict: a lite agent cannot switch roles. That 487
is what stock FreeSWITCH trips on (see patches/freeswitch/).

STUN encoding, MESSAGE-INTEGRITY and FINGERPRINT come from aioice's `stun` module; the ICE
roles here are ours (aioice's agent is full ICE only).
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

from aioice import stun

Address = tuple[str, int]
ICE_CHARS = string.ascii_letters + string.digits + "+/"


def ice_credential(length: int) -> str:
    """A random ice-ufrag (>= 4 chars) or ice-pwd (>= 22 chars) from the ice-char set."""
    return "".join(secrets.choice(ICE_CHARS) for _ in range(length))


@dataclass
class StunCounters:
    requests: int = 0
    answered: int = 0
    bad_integrity: int = 0
    wrong_username: int = 0
    role_conflicts: int = 0
    malformed: int = 0


class IceLiteResponder:
    """Answers Binding requests on one component (rtcp-mux: the only one)."""

    def __init__(self, local_ufrag: str, local_pwd: str, remote_ufrag: str | None = None) -> None:
        self.local_ufrag = local_ufrag
        self.local_pwd = local_pwd
        self.remote_ufrag = remote_ufrag
        self.nominated: Address | None = None
        self.counters = StunCounters()

    def handle(self, datagram: bytes, source: Address) -> bytes | None:
        """The datagram to send back to `source`, or None when nothing is owed."""
        try:
            request = stun.parse_message(datagram)
        except ValueError:  # bad length, unknown method or a FINGERPRINT that does not match
            self.counters.malformed += 1
            return None
        if request.message_method != stun.Method.BINDING or request.message_class != stun.Class.REQUEST:
            return None  # a lite agent sends no requests, so it expects no responses
        self.counters.requests += 1
        if "FINGERPRINT" not in request.attributes:
            self.counters.malformed += 1
            return None  # RFC 8445 7.3: ICE requests carry FINGERPRINT
        if not self._username_ok(request):
            self.counters.wrong_username += 1
            return self._error(request, 401, "Unauthorized")
        if not request.check_message_integrity(self.local_pwd.encode()):
            self.counters.bad_integrity += 1
            return self._error(request, 401, "Unauthorized")
        if "ICE-CONTROLLED" in request.attributes or "ICE-CONTROLLING" not in request.attributes:
            self.counters.role_conflicts += 1
            return self._error(request, 487, "Role Conflict")
        if "USE-CANDIDATE" in request.attributes:
            self.nominated = source
        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = source
        response.add_message_integrity(self.local_pwd.encode())
        self.counters.answered += 1
        return bytes(response)

    def _username_ok(self, request: stun.Message) -> bool:
        username = request.attributes.get("USERNAME")
        if not isinstance(username, str):
            return False
        ours, _, theirs = username.partition(":")
        return ours == self.local_ufrag and (self.remote_ufrag is None or theirs == self.remote_ufrag)

    def _error(self, request: stun.Message, code: int, reason: str) -> bytes:
        """Error responses carry MESSAGE-INTEGRITY too, except 401 (the key is in doubt)."""
        response = stun.Message(stun.Method.BINDING, stun.Class.ERROR, request.transaction_id)
        response.attributes["ERROR-CODE"] = (code, reason)
        if code == 401:
            response.add_fingerprint()
        else:
            response.add_message_integrity(self.local_pwd.encode())
        return bytes(response)


def binding_request(username: str, password: str, *, controlling: bool, nominate: bool,
                    priority: int = 1862270975, tie_breaker: int = 0x1234567890ABCDEF) -> stun.Message:
    """A full agent's connectivity check (what FreeSWITCH sends); used by tests and the client
    side of the self-tests. `username` is `theirs:ours`, `password` their ice-pwd."""
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["PRIORITY"] = priority
    request.attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = tie_breaker
    if nominate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(password.encode())
    return request

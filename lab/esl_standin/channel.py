"""A stand-in call leg and the headers FreeSWITCH puts on its events.

Header names and order follow ``switch_channel_event_set_data``: the channel block
(``Channel-State`` ... ``Answer-State``, ``Hangup-Cause``, codecs), the caller profile
(``Caller-*``), then one ``variable_<name>`` per channel variable.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

_STATE_NUMBERS = {
    "CS_NEW": "0",
    "CS_INIT": "1",
    "CS_ROUTING": "2",
    "CS_SOFT_EXECUTE": "3",
    "CS_EXECUTE": "4",
    "CS_EXCHANGE_MEDIA": "5",
    "CS_PARK": "6",
    "CS_CONSUME_MEDIA": "7",
    "CS_HIBERNATE": "8",
    "CS_RESET": "9",
    "CS_HANGUP": "10",
    "CS_REPORTING": "11",
    "CS_DESTROY": "12",
}


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Channel:
    """One call leg as the stand-in's switch core tracks it."""

    name: str
    direction: str  # "inbound" (from the edge) or "outbound" (originated)
    caller_number: str
    destination_number: str
    caller_name: str = ""
    context: str = "whatsapp"
    network_addr: str = "10.0.0.2"
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    variables: dict[str, str] = field(default_factory=dict)
    state: str = "CS_EXECUTE"
    call_state: str = "RINGING"
    answer_state: str = "ringing"
    hangup_cause: str = ""
    codec: str = "opus"
    created_us: int = field(default_factory=now_us)
    answered_us: int = 0
    hangup_us: int = 0

    @property
    def is_up(self) -> bool:
        return not self.hangup_cause

    def headers(self) -> dict[str, str]:
        """Channel, caller-profile and variable headers, in FreeSWITCH's order."""
        headers = {
            "Channel-State": self.state,
            "Channel-Call-State": self.call_state,
            "Channel-State-Number": _STATE_NUMBERS.get(self.state, "4"),
            "Channel-Name": self.name,
            "Unique-ID": self.uuid,
            "Call-Direction": self.direction,
            "Presence-Call-Direction": self.direction,
            "Channel-HIT-Dialplan": "true" if self.direction == "inbound" else "false",
            "Channel-Call-UUID": self.uuid,
            "Answer-State": self.answer_state,
        }
        if self.hangup_cause:
            headers["Hangup-Cause"] = self.hangup_cause
        headers.update(
            {
                "Channel-Read-Codec-Name": self.codec,
                "Channel-Read-Codec-Rate": "48000",
                "Channel-Read-Codec-Bit-Rate": "0",
                "Channel-Write-Codec-Name": self.codec,
                "Channel-Write-Codec-Rate": "48000",
                "Channel-Write-Codec-Bit-Rate": "0",
            }
        )
        headers.update(self.profile_headers("Caller"))
        for name, value in self.variables.items():
            headers["variable_" + name] = value
        return headers

    def profile_headers(self, prefix: str) -> dict[str, str]:
        """``switch_caller_profile_event_set_data`` with the given prefix."""
        return {
            f"{prefix}-Direction": self.direction,
            f"{prefix}-Logical-Direction": self.direction,
            f"{prefix}-Username": self.caller_number,
            f"{prefix}-Dialplan": "XML",
            f"{prefix}-Caller-ID-Name": self.caller_name or self.caller_number,
            f"{prefix}-Caller-ID-Number": self.caller_number,
            f"{prefix}-Orig-Caller-ID-Name": self.caller_name or self.caller_number,
            f"{prefix}-Orig-Caller-ID-Number": self.caller_number,
            f"{prefix}-Network-Addr": self.network_addr,
            f"{prefix}-ANI": self.caller_number,
            f"{prefix}-Destination-Number": self.destination_number,
            f"{prefix}-Unique-ID": self.uuid,
            f"{prefix}-Source": "mod_sofia",
            f"{prefix}-Context": self.context,
            f"{prefix}-Channel-Name": self.name,
            f"{prefix}-Profile-Index": "1",
            f"{prefix}-Profile-Created-Time": str(self.created_us),
            f"{prefix}-Channel-Created-Time": str(self.created_us),
            f"{prefix}-Channel-Answered-Time": str(self.answered_us),
            f"{prefix}-Channel-Hangup-Time": str(self.hangup_us),
        }

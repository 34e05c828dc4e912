"""What reached the FreeSWITCH SIPp UAS without being one of Meta's legitimate calls."""

from __future__ import annotations

import re

from lab.sipp import SippServer, read_trace

CALL_ID = re.compile(r"(?im)^(?:call-id|i)\s*:\s*(\S+)")


def call_ids(messages: list[str]) -> set[str]:
    """The Call-IDs of a call's messages (SippResult.messages)."""
    return {match[1] for message in messages if (match := CALL_ID.search(message))}


def relayed_to_sipp(fs: SippServer, legit_call_ids: set[str]) -> list[str]:
    """Requests the FreeSWITCH SIPp UAS received that no legitimate call sent."""
    found = []
    for message in read_trace(fs.trace_file):
        if message.sent or message.text.startswith("SIP/2.0"):
            continue
        match = CALL_ID.search(message.text)
        if match is None or match[1] not in legit_call_ids:
            found.append(message.first_line)
    return found

"""Exception types for the ESL layer.

Each carries the context an operator needs to act (which host, which command), never the ESL
password: callers log ``str(exc)`` as is.
"""

from __future__ import annotations


class EslError(Exception):
    """Base class: anything that went wrong talking Event Socket."""


class ProtocolError(EslError):
    """The peer sent bytes that do not follow the ESL framing."""


class FrameTooLarge(ProtocolError):
    """A Content-Length above the 16 MiB that mod_event_socket accepts."""


class ConnectionClosed(EslError):
    """The TCP connection ended while a reply or event was still expected."""


class AuthError(EslError):
    """FreeSWITCH refused the ``auth`` command (wrong password or ACL rejection)."""


class CommandError(EslError):
    """FreeSWITCH answered a command with ``-ERR ...``."""

    def __init__(self, command: str, reply_text: str) -> None:
        super().__init__(f"{command!r} refused: {reply_text}")
        self.command = command
        self.reply_text = reply_text

"""Event Socket framing, both directions, byte for byte as mod_event_socket does it.

Why one module for both sides: the controller's client and the FreeSWITCH stand-in must agree
on every byte, and the only way to keep them honest is to have the stand-in's conformance tests
compare these builders with the frames documented in ``shared/spec/freeswitch-esl.md``.

Facts encoded here (spec, "Framing"):
- server frames: a header block of ``Name: value`` lines ended by a blank line, then
  ``Content-Length`` body bytes; the header *order* differs per frame type;
- client commands: a command line, optional headers, blank line, optional body; CRLF accepted;
  header values taken raw; Content-Length above 16 MiB refused;
- event header values are URL-encoded with FreeSWITCH's own unsafe set (``switch_url_encode``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from esl.errors import ConnectionClosed, FrameTooLarge, ProtocolError

MAX_CONTENT_LENGTH = 16 * 1024 * 1024
"""mod_event_socket refuses larger bodies; we refuse them in both directions."""

MAX_HEADER_BYTES = 10 * 1024 * 1024
"""read_packet() gives up on a header block past 10 MiB (``max_len = 10485760``)."""

STREAM_LIMIT = 4 * 1024 * 1024
"""asyncio StreamReader line limit: a CHANNEL_DATA block with many variables is one 'line'."""

# ``urlunsafe[]`` in switch_utils.c, plus every byte below space or above '~'.
_URL_UNSAFE = b'\r\n "#%&+:;<=>?@[\\]^`{|}'
_ENCODE_TABLE: tuple[str, ...] = tuple(
    f"%{b:02X}" if (b < 0x20 or b > 0x7E or b in _URL_UNSAFE) else chr(b) for b in range(256)
)
_SAFE_BYTES = bytes(b for b in range(256) if len(_ENCODE_TABLE[b]) == 1)
_NEEDS_ENCODING = re.compile(b"[^" + re.escape(_SAFE_BYTES) + b"]")


def url_encode(value: str) -> str:
    """Encode an event header value exactly like ``switch_url_encode`` (upper-case hex).

    Works on the UTF-8 bytes, so a non-ASCII character becomes one ``%XX`` per byte.
    """
    raw = value.encode("utf-8")
    if _NEEDS_ENCODING.search(raw) is None:
        return value
    return "".join([_ENCODE_TABLE[b] for b in raw])


def url_decode(value: str) -> str:
    """Decode one header value (``switch_url_decode``); invalid UTF-8 becomes U+FFFD.

    Call it per value, after splitting the block into lines: a whole-frame decode turns
    ``%0A`` into a line break and splits a header in two.
    """
    if "%" not in value:
        return value
    return unquote(value, encoding="utf-8", errors="replace")


@dataclass(slots=True)
class Frame:
    """One frame from FreeSWITCH: raw (not URL-decoded) headers in wire order, and the body."""

    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Header lookup, exact name first, then case-insensitive (FreeSWITCH ignores case)."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, found in self.headers.items():
            if key.lower() == lowered:
                return found
        return None

    @property
    def content_type(self) -> str:
        return self.header("Content-Type") or ""

    @property
    def reply_text(self) -> str:
        return self.header("Reply-Text") or ""


@dataclass(slots=True)
class Command:
    """One command as the server parsed it: first line, headers (lower-cased names), body."""

    line: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def parse_header_block(block: str) -> dict[str, str]:
    """Split a ``Name: value`` block (``\\n`` lines) into an ordered dict, values raw.

    Lines without a colon are skipped, as ``read_packet()`` skips them; the value loses the
    spaces after the colon and nothing else.
    """
    headers: dict[str, str] = {}
    for line in block.split("\n"):
        name, colon, value = line.partition(":")
        if colon:
            headers[name] = value.lstrip(" ")
    return headers


def _content_length(value: str | None) -> int:
    if value is None:
        return 0
    try:
        length = int(value.strip())
    except ValueError as exc:
        raise ProtocolError(f"Content-Length is not a number: {value[:40]!r}") from exc
    if length < 0:
        raise ProtocolError(f"negative Content-Length: {length}")
    if length > MAX_CONTENT_LENGTH:
        raise FrameTooLarge(f"Content-Length {length} above {MAX_CONTENT_LENGTH}")
    return length


async def _read_until(reader: asyncio.StreamReader, separator: bytes, peer: str) -> bytes:
    """``readuntil`` with the stream's errors turned into ESL errors."""
    try:
        return await reader.readuntil(separator)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed(f"{peer} closed the connection") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError(f"{peer} sent a line longer than the stream limit") from exc


async def _read_body(reader: asyncio.StreamReader, length: int, peer: str) -> bytes:
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionClosed(f"{peer} closed the connection inside a body") from exc


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one server frame (client side). FreeSWITCH always ends lines with a bare LF."""
    head = await _read_until(reader, b"\n\n", "FreeSWITCH")
    headers = parse_header_block(head[:-2].decode("utf-8", "replace"))
    length = _content_length(headers.get("Content-Length"))
    body = await _read_body(reader, length, "FreeSWITCH") if length else b""
    return Frame(headers, body)


async def read_command(reader: asyncio.StreamReader) -> Command:
    """Read one client command (server side), the way ``read_packet()`` does.

    Blank lines before a command are skipped; CR is ignored; a ``Content-Length`` header makes
    exactly that many body bytes follow the blank line.
    """
    lines: list[str] = []
    size = 0
    while True:
        raw = await _read_until(reader, b"\n", "the client")
        size += len(raw)
        if size > MAX_HEADER_BYTES:
            raise FrameTooLarge("command header block above 10 MiB")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if lines:
                break
            continue
        lines.append(line)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon and name:
            headers[name.lower()] = value.lstrip(" ")
    length = _content_length(headers.get("content-length"))
    body = await _read_body(reader, length, "the client") if length else None
    return Command(lines[0], headers, body)


def _check_line(kind: str, text: str) -> None:
    if "\n" in text or "\r" in text:
        raise ValueError(f"{kind} must not contain a line break: {text[:60]!r}")


def encode_command(
    line: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: str | bytes | None = None,
) -> bytes:
    """Build a client command. Refuses line breaks in the line and headers.

    Why refuse instead of escaping: values are taken raw by the server, so a line break in a
    business payload would inject a second header or command. Multi-line arguments belong in
    the body (``content-type: text/plain``), which is length-delimited.
    """
    _check_line("command", line)
    parts = [line, "\n"]
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        _check_line("header name", name)
        _check_line(f"header {name}", value)
        if ":" in name or not name:
            raise ValueError(f"invalid header name {name!r}")
        parts += [name, ": ", value, "\n"]
    payload = b""
    if body is not None:
        payload = body.encode("utf-8") if isinstance(body, str) else body
        if len(payload) > MAX_CONTENT_LENGTH:
            raise FrameTooLarge(f"command body of {len(payload)} bytes above 16 MiB")
        parts += ["Content-Length: ", str(len(payload)), "\n"]
    parts.append("\n")
    return "".join(parts).encode("utf-8") + payload


# ---------------------------------------------------------------- server frames (stand-in)

def auth_request() -> bytes:
    """Greeting on an inbound connection."""
    return b"Content-Type: auth/request\n\n"


def command_reply(reply_text: str) -> bytes:
    """``command/reply``: Content-Type first, then Reply-Text."""
    return f"Content-Type: command/reply\nReply-Text: {reply_text}\n\n".encode()


def bgapi_reply(job_uuid: str) -> bytes:
    """``bgapi`` acknowledgement: Reply-Text and a separate Job-UUID header."""
    return (
        f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job_uuid}\n"
        f"Job-UUID: {job_uuid}\n\n"
    ).encode()


def api_response(output: bytes) -> bytes:
    """``api/response``: Content-Type then Content-Length; empty output becomes -ERR no reply."""
    if not output:
        output = b"-ERR no reply\n"
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(output) + output


def event_frame(serialized: bytes, fmt: str) -> bytes:
    """An event: Content-Length *first*, then Content-Type text/event-<fmt>."""
    return b"Content-Length: %d\nContent-Type: text/event-%s\n\n" % (
        len(serialized),
        fmt.encode(),
    ) + serialized


RUDE_REJECTION_TEXT = b"Access Denied, go away.\n"
DISCONNECT_TEXT = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def rude_rejection() -> bytes:
    """What an ACL-refused client gets before the socket closes."""
    return (
        b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(RUDE_REJECTION_TEXT)
        + RUDE_REJECTION_TEXT
    )


def disconnect_notice(session_uuid: str | None = None) -> bytes:
    """Sent when the server closes; outbound sockets name the controlled session."""
    if session_uuid is None:
        head = b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(
            DISCONNECT_TEXT
        )
    else:
        head = (
            b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: %s\n"
            b"Content-Disposition: disconnect\nContent-Length: %d\n\n"
            % (session_uuid.encode(), len(DISCONNECT_TEXT))
        )
    return head + DISCONNECT_TEXT


def linger_notice(session_uuid: str, channel_name: str, linger_seconds: int) -> bytes:
    """On hangup with linger on: the socket stays open for ``linger_seconds`` more."""
    return (
        f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {session_uuid}\n"
        f"Content-Disposition: linger\nChannel-Name: {channel_name}\n"
        f"Linger-Time: {linger_seconds}\nContent-Length: 0\n\n"
    ).encode()

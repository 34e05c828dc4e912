"""FreeSWITCH events: the value type and its plain/JSON serializations.

Plain (``switch_event_serialize``): one ``Name: <url-encoded value>`` line per header, empty
values as ``_undef_``; with a body, ``Content-Length: n`` (bytes), a blank line and the body;
without, a blank line. JSON (``switch_event_serialize_json``): one unformatted object, values
unencoded, a body as ``"Content-Length"`` (a string) plus ``"_body"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

from esl.errors import ProtocolError
from esl.wire import parse_header_block, url_decode, url_encode

UNDEF = "_undef_"
ARRAY_PREFIX = "ARRAY::"
ARRAY_SEPARATOR = "|:"


class Event:
    """An event's headers (ordered, names as FreeSWITCH wrote them) and its body.

    Lookups ignore case, as ``switch_event_get_header`` does. Values are strings; a multi-value
    header keeps FreeSWITCH's ``ARRAY::a|:b`` form and :meth:`array` splits it.
    """

    __slots__ = ("_lower", "body", "headers")

    def __init__(self, headers: Mapping[str, str] | None = None, body: str = "") -> None:
        self.headers: dict[str, str] = dict(headers or {})
        self.body = body
        self._lower: dict[str, str] | None = None

    @classmethod
    def adopt(cls, headers: dict[str, str], body: str = "") -> Event:
        """Wrap a freshly built dict without copying it (parsers own theirs)."""
        event = cls.__new__(cls)
        event.headers = headers
        event.body = body
        event._lower = None
        return event

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.headers.get(name)
        if value is not None:
            return value
        if self._lower is None:
            self._lower = {key.lower(): val for key, val in self.headers.items()}
        return self._lower.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def set(self, name: str, value: str) -> None:
        self.headers[name] = value
        self._lower = None

    def variable(self, name: str) -> str | None:
        """A channel variable as carried in the event (``variable_<name>``)."""
        return self.get("variable_" + name)

    def array(self, name: str) -> list[str]:
        """Split a multi-value header; a plain value is a one-element list."""
        value = self.get(name)
        if value is None:
            return []
        if value.startswith(ARRAY_PREFIX):
            return value[len(ARRAY_PREFIX) :].split(ARRAY_SEPARATOR)
        return [value]

    @property
    def name(self) -> str:
        return self.get("Event-Name") or ""

    @property
    def unique_id(self) -> str:
        return self.get("Unique-ID") or ""

    def __repr__(self) -> str:
        return f"Event({self.name!r}, {len(self.headers)} headers, body={len(self.body)}B)"


def array_value(values: list[str]) -> str:
    """Build FreeSWITCH's multi-value form from a list."""
    return ARRAY_PREFIX + ARRAY_SEPARATOR.join(values)


def event_from_encoded(headers: Mapping[str, str], body: str = "") -> Event:
    """Decode header values one by one (the CHANNEL_DATA reply is such a flat block)."""
    decoded = {
        name: ("" if value == UNDEF else url_decode(value)) for name, value in headers.items()
    }
    return Event.adopt(decoded, body)


def parse_plain(data: bytes) -> Event:
    """Parse a ``text/event-plain`` payload: split lines first, then decode each value."""
    head, _, rest = data.partition(b"\n\n")
    headers = parse_header_block(head.decode("utf-8", "replace"))
    body = ""
    length_text = headers.pop("Content-Length", None)
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError as exc:
            raise ProtocolError(f"event Content-Length not a number: {length_text!r}") from exc
        if length > len(rest):
            raise ProtocolError("event body shorter than its Content-Length")
        body = rest[:length].decode("utf-8", "replace")
    return event_from_encoded(headers, body)


def parse_json(data: bytes) -> Event:
    """Parse a ``text/event-json`` payload; JSON arrays become the ``ARRAY::`` form."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"event JSON does not parse: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("event JSON is not an object")
    body = obj.pop("_body", "")
    obj.pop("Content-Length", None)
    for key, value in obj.items():
        if type(value) is not str:  # rare: arrays, or numbers from other producers
            obj[key] = (
                array_value([str(v) for v in value]) if isinstance(value, list) else str(value)
            )
    return Event.adopt(obj, str(body))


def serialize_plain(event: Event) -> bytes:
    """Serialize exactly as ``switch_event_serialize(event, &str, SWITCH_TRUE)``."""
    parts: list[str] = []
    for name, value in event.headers.items():
        encoded = url_encode(value) if value else UNDEF
        parts.append(f"{name}: {encoded}\n")
    text = "".join(parts).encode("utf-8")
    if event.body:
        body = event.body.encode("utf-8")
        return text + b"Content-Length: %d\n\n" % len(body) + body
    return text + b"\n"


def serialize_json(event: Event) -> bytes:
    """Serialize as ``switch_event_serialize_json``: unformatted, arrays as JSON arrays."""
    obj: dict[str, str | list[str]] = {}
    for name, value in event.headers.items():
        obj[name] = event.array(name) if value.startswith(ARRAY_PREFIX) else value
    if event.body:
        obj["Content-Length"] = str(len(event.body.encode("utf-8")))
        obj["_body"] = event.body
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

"""Framing and encoding, checked against the bytes the spec documents."""

from __future__ import annotations

import asyncio

import pytest

from esl import wire
from esl.errors import ConnectionClosed, FrameTooLarge
from esl.event import Event, parse_json, parse_plain, serialize_json, serialize_plain

UNSAFE = '\r\n "#%&+:;<=>?@[\\]^`{|}'


@pytest.mark.parametrize("char", list(UNSAFE))
def test_every_unsafe_character_is_percent_encoded_upper_hex(char: str) -> None:
    assert wire.url_encode(char) == f"%{ord(char):02X}"


def test_safe_printables_travel_unencoded() -> None:
    safe = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in UNSAFE)
    assert wire.url_encode(safe) == safe
    assert "!" in safe and "~" in safe and "/" in safe and "," in safe


def test_known_values() -> None:
    assert wire.url_encode("+OK") == "%2BOK"
    assert wire.url_encode("+OK\n") == "%2BOK%0A"
    assert wire.url_encode("é") == "%C3%A9"
    assert wire.url_encode("\x01\x7f") == "%01%7F"
    assert wire.url_encode("sofia/internal/+1555@wa.meta.vc") == ("sofia/internal/%2B1555%40wa.meta.vc")


@pytest.mark.parametrize("value", ["", "plain", "a b\r\nc", "100%", "%2B literal", "ünï 中文", "a:b|c;d=e&f"])
def test_decode_inverts_encode(value: str) -> None:
    assert wire.url_decode(wire.url_encode(value)) == value


def test_split_lines_then_decode_keeps_multiline_value_in_one_header() -> None:
    sdp = "v=0\r\nm=audio 1 RTP/SAVP 111\r\n"
    event = Event({"Event-Name": "CHANNEL_DATA", "variable_switch_r_sdp": sdp, "X": "y"})
    payload = serialize_plain(event)
    assert b"variable_switch_r_sdp: v%3D0%0D%0Am%3Daudio%201%20RTP/SAVP%20111%0D%0A\n" in payload
    parsed = parse_plain(payload)
    assert parsed["variable_switch_r_sdp"] == sdp
    assert parsed["X"] == "y"
    assert list(parsed.headers) == ["Event-Name", "variable_switch_r_sdp", "X"]


def test_plain_serialization_exact_bytes_with_empty_value_and_body() -> None:
    event = Event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": "j1", "Empty": ""}, "+OK abc\n")
    assert serialize_plain(event) == (
        b"Event-Name: BACKGROUND_JOB\nJob-UUID: j1\nEmpty: _undef_\nContent-Length: 8\n\n+OK abc\n"
    )
    parsed = parse_plain(serialize_plain(event))
    assert parsed.body == "+OK abc\n"
    assert parsed["Empty"] == ""
    assert "Content-Length" not in parsed


def test_plain_without_body_ends_with_blank_line() -> None:
    assert serialize_plain(Event({"A": "1"})) == b"A: 1\n\n"


def test_body_length_counts_bytes_not_characters() -> None:
    event = Event({"Event-Name": "X"}, "é\n")
    assert b"Content-Length: 3\n\n" in serialize_plain(event)
    assert parse_plain(serialize_plain(event)).body == "é\n"


def test_json_serialization_is_unformatted_and_carries_body() -> None:
    event = Event({"Event-Name": "BACKGROUND_JOB", "Job-UUID": "j"}, "+OK\n")
    data = serialize_json(event)
    assert data == (b'{"Event-Name":"BACKGROUND_JOB","Job-UUID":"j","Content-Length":"4","_body":"+OK\\n"}')
    parsed = parse_json(data)
    assert parsed.body == "+OK\n" and parsed["Job-UUID"] == "j"


def test_array_headers_round_trip_in_both_formats() -> None:
    event = Event({"Event-Name": "X", "variable_list": "ARRAY::a|:b c"})
    assert b"variable_list: ARRAY%3A%3Aa%7C%3Ab%20c\n" in serialize_plain(event)
    assert parse_plain(serialize_plain(event)).array("variable_list") == ["a", "b c"]
    assert b'"variable_list":["a","b c"]' in serialize_json(event)
    assert parse_json(serialize_json(event)).array("variable_list") == ["a", "b c"]


def test_event_lookup_ignores_case() -> None:
    event = Event({"variable_sip_h_X-WA-Meta-Wacid": "w1"})
    assert event.get("VARIABLE_SIP_H_x-wa-meta-wacid") == "w1"
    assert event.variable("sip_h_x-wa-meta-wacid") == "w1"


def test_server_frame_builders_follow_documented_header_order() -> None:
    assert wire.command_reply("+OK accepted") == (
        b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
    )
    assert wire.api_response(b"true") == b"Content-Type: api/response\nContent-Length: 4\n\ntrue"
    assert wire.api_response(b"") == (b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n")
    assert wire.event_frame(b"A: 1\n\n", "plain") == (
        b"Content-Length: 6\nContent-Type: text/event-plain\n\nA: 1\n\n"
    )
    assert wire.bgapi_reply("u1") == (
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: u1\nJob-UUID: u1\n\n"
    )
    assert wire.rude_rejection() == (
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
    )
    assert wire.linger_notice("u", "sofia/x", 5) == (
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: u\n"
        b"Content-Disposition: linger\nChannel-Name: sofia/x\nLinger-Time: 5\n"
        b"Content-Length: 0\n\n"
    )


def test_disconnect_notice_inbound_and_outbound() -> None:
    text = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    assert wire.disconnect_notice() == (
        b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(text) + text
    )
    outbound = wire.disconnect_notice("abc")
    assert outbound.startswith(
        b"Content-Type: text/disconnect-notice\nControlled-Session-UUID: abc\n"
        b"Content-Disposition: disconnect\nContent-Length: 67\n\n"
    )


def test_encode_command_with_headers_and_body() -> None:
    data = wire.encode_command(
        "sendmsg", [("call-command", "execute"), ("execute-app-name", "playback")], "a\nb"
    )
    assert data == (b"sendmsg\ncall-command: execute\nexecute-app-name: playback\nContent-Length: 3\n\na\nb")


@pytest.mark.parametrize(
    ("line", "headers"),
    [("api status\nexit", ()), ("sendmsg", [("execute-app-arg", "x\nevent-lock: true")])],
)
def test_encode_command_refuses_line_breaks(line: str, headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match="line break"):
        wire.encode_command(line, headers)


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=wire.STREAM_LIMIT)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def test_read_frame_takes_content_length_wherever_it_stands() -> None:
    reader = _reader(
        b"Content-Length: 6\nContent-Type: text/event-plain\n\nA: 1\n\n"
        b"Content-Type: api/response\nContent-Length: 2\n\nok"
    )
    first = await wire.read_frame(reader)
    second = await wire.read_frame(reader)
    assert first.content_type == "text/event-plain" and first.body == b"A: 1\n\n"
    assert second.content_type == "api/response" and second.body == b"ok"
    with pytest.raises(ConnectionClosed):
        await wire.read_frame(reader)


@pytest.mark.parametrize("cut", [
    b"Content-Type: api/response\nContent-Length: 10\n\nonly5",  # mid-body
    b"Content-Type: api/resp",  # mid-header
], ids=["mid-body", "mid-header"])
async def test_frame_cut_short_is_a_closed_connection_not_a_crash(cut: bytes) -> None:
    """A FreeSWITCH that dies mid-write: a real one cannot be made to do it on purpose."""
    with pytest.raises(ConnectionClosed):
        await wire.read_frame(_reader(cut))


async def test_read_frame_refuses_bodies_above_16_mib() -> None:
    reader = _reader(b"Content-Type: api/response\nContent-Length: %d\n\n" % (16 * 1024 * 1024 + 1))
    with pytest.raises(FrameTooLarge):
        await wire.read_frame(reader)


async def test_read_command_accepts_crlf_skips_leading_blank_lines_and_reads_body() -> None:
    reader = _reader(b"\r\n\r\nsendmsg abc\r\nCall-Command: execute\r\ncontent-length: 2\r\n\r\nhi")
    command = await wire.read_command(reader)
    assert command.line == "sendmsg abc"
    assert command.header("call-command") == "execute"
    assert command.body == b"hi"


async def test_read_command_refuses_body_above_16_mib() -> None:
    reader = _reader(b"api x\nContent-Length: 99999999\n\n")
    with pytest.raises(FrameTooLarge):
        await wire.read_command(reader)


def test_encoded_line_break_cannot_forge_a_header() -> None:
    """A payload like ``x%0AEvent-Name: FAKE`` stays one value (decode-after-split)."""
    event = Event(
        {"Event-Name": "CHANNEL_DATA", "variable_sip_h_X-WA-Meta-Cta-Payload": "x\nEvent-Name: FAKE"}
    )
    parsed = parse_plain(serialize_plain(event))
    assert parsed.name == "CHANNEL_DATA"
    assert parsed["variable_sip_h_X-WA-Meta-Cta-Payload"] == "x\nEvent-Name: FAKE"
    assert len(parsed.headers) == 2

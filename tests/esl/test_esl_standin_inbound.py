"""Conformance of the stand-in's inbound socket against the documented mod_event_socket bytes."""

from __future__ import annotations

import asyncio

import pytest

from esl.event import parse_plain
from lab.esl_standin import FreeSwitchStandin
from tests.esl.conftest import PASSWORD, RawPeer, authed

DISCONNECT = (
    b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n"
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
)


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


async def test_wrong_password_gets_err_invalid_then_disconnect_and_close(
    raw_inbound: RawPeer,
) -> None:
    assert await raw_inbound.frame_bytes() == b"Content-Type: auth/request\n\n"
    await raw_inbound.send(b"auth nope\n\n")
    assert await raw_inbound.frame_bytes() == reply("-ERR invalid")
    assert await raw_inbound.frame_bytes() == DISCONNECT
    assert await raw_inbound.at_eof()


async def test_commands_before_auth_are_not_found(raw_inbound: RawPeer) -> None:
    assert await raw_inbound.frame_bytes() == b"Content-Type: auth/request\n\n"
    await raw_inbound.send(b"event plain ALL\n\napi status\n\n")
    assert await raw_inbound.frame_bytes() == reply("-ERR command not found")
    assert await raw_inbound.frame_bytes() == reply("-ERR command not found")


async def test_crlf_auth_is_accepted(raw_inbound: RawPeer) -> None:
    await raw_inbound.frame_bytes()
    await raw_inbound.send(f"auth {PASSWORD}\r\n\r\n".encode())
    assert await raw_inbound.frame_bytes() == reply("+OK accepted")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("event plain ALL", "+OK event listener enabled plain"),
        ("event json CHANNEL_ANSWER", "+OK event listener enabled json"),
        ("event xml HEARTBEAT", "+OK event listener enabled xml"),
        ("event plain", "-ERR no keywords supplied"),
        ("nixevent CHANNEL_ANSWER", "+OK events nixed"),
        ("nixevent", "-ERR no keywords supplied"),
        ("noevents", "-ERR not listening for events"),
        ("filter Unique-ID abc", "+OK filter added. [Unique-ID]=[abc]"),
        ("filter delete Unique-ID abc", "+OK filter deleted. [Unique-ID][abc]"),
        ("filter Unique-ID", "-ERR invalid syntax"),
        ("linger 5", "-ERR not controlling a session"),
        ("nolinger", "-ERR not controlling a session"),
        ("frobnicate", "-ERR command not found"),
        ("sendmsg 1234", "-ERR invalid session id [1234]"),
    ],
)
async def test_command_replies(raw_inbound: RawPeer, command: str, expected: str) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(f"{command}\n\n".encode())
    assert await raw_inbound.frame_bytes() == reply(expected)


async def test_noevents_after_event(raw_inbound: RawPeer) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"event plain HEARTBEAT\n\nnoevents\n\n")
    assert await raw_inbound.frame_bytes() == reply("+OK event listener enabled plain")
    assert await raw_inbound.frame_bytes() == reply("+OK no longer listening for events")


async def test_exit_says_bye_then_disconnect_notice(raw_inbound: RawPeer) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"exit\n\n")
    assert await raw_inbound.frame_bytes() == reply("+OK bye")
    assert await raw_inbound.frame_bytes() == DISCONNECT
    assert await raw_inbound.at_eof()


async def test_api_response_bytes(raw_inbound: RawPeer) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"api echo hello\n\napi nosuch x\n\napi echo\n\n")
    assert await raw_inbound.frame_bytes() == (
        b"Content-Type: api/response\nContent-Length: 5\n\nhello"
    )
    assert await raw_inbound.frame_bytes() == (
        b"Content-Type: api/response\nContent-Length: 31\n\n-ERR nosuch Command not found!\n"
    )
    assert await raw_inbound.frame_bytes() == (
        b"Content-Type: api/response\nContent-Length: 14\n\n-ERR no reply\n"
    )


async def test_bgapi_uses_client_job_uuid_and_background_job_nests_body(
    raw_inbound: RawPeer,
) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"event plain BACKGROUND_JOB\n\n")
    await raw_inbound.frame_bytes()
    await raw_inbound.send(b"bgapi echo hi there\nJob-UUID: job-123\n\n")
    assert await raw_inbound.frame_bytes() == (
        b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: job-123\nJob-UUID: job-123\n\n"
    )
    data = await raw_inbound.frame_bytes()
    head, _, payload = data.partition(b"\n\n")
    assert head.split(b"\n") == [
        b"Content-Length: %d" % len(payload),
        b"Content-Type: text/event-plain",
    ]
    assert payload.endswith(b"Content-Length: 8\n\nhi there")
    event = parse_plain(payload)
    assert event.name == "BACKGROUND_JOB"
    assert event["Job-UUID"] == "job-123"
    assert event["Job-Command"] == "echo"
    assert event["Job-Command-Arg"] == "hi there"
    assert event.body == "hi there"
    for common in ("Core-UUID", "Event-Date-Timestamp", "Event-Sequence", "FreeSWITCH-IPv4"):
        assert common in event


async def test_events_arrive_json_when_asked(
    raw_inbound: RawPeer, standin: FreeSwitchStandin
) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"event json BACKGROUND_JOB\n\nbgapi echo x\n\n")
    await raw_inbound.frame_bytes()
    await raw_inbound.frame_bytes()
    frame = await raw_inbound.frame()
    assert frame.content_type == "text/event-json"
    assert frame.body.startswith(b'{"Event-Name":"BACKGROUND_JOB"')
    assert frame.body.endswith(b'"Content-Length":"1","_body":"x"}')


async def test_filter_limits_delivery(raw_inbound: RawPeer) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(
        b"event plain BACKGROUND_JOB\n\nfilter Job-Command-Arg keep\n\n"
        b"bgapi echo drop\n\nbgapi echo keep\n\n"
    )
    for _ in range(4):
        await raw_inbound.frame()
    event_frame = await raw_inbound.frame_of_type("text/event-plain")
    assert parse_plain(event_frame.body).body == "keep"


async def test_content_length_above_16_mib_closes_the_connection(raw_inbound: RawPeer) -> None:
    await authed(raw_inbound)
    await raw_inbound.send(b"api echo\nContent-Length: 16777217\n\n")
    assert await raw_inbound.frame_bytes() == DISCONNECT
    assert await raw_inbound.at_eof()


async def test_acl_refusal_is_a_rude_rejection() -> None:
    server = FreeSwitchStandin(allowed_networks=["10.99.0.0/16"])
    await server.start()
    try:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        peer = RawPeer(reader, writer)
        assert await peer.frame_bytes() == (
            b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n"
        )
        assert await peer.at_eof()
        peer.close()
    finally:
        await server.stop()

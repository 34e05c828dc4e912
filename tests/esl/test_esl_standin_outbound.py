"""Stand-in outbound sockets and call sequences, checked byte for byte where the spec says."""

from __future__ import annotations

import pytest

from esl.event import Event, parse_plain
from esl.meta_errors import META_ERRORS, MetaError
from esl.sipcause import hangup_cause_for_sip_status
from lab.esl_standin import BicOutcome, FreeSwitchStandin, MetaBehaviour, UicCall
from tests.esl.conftest import OutboundCapture, RawPeer, authed


def reply(text: str) -> bytes:
    return f"Content-Type: command/reply\nReply-Text: {text}\n\n".encode()


async def next_event(peer: RawPeer, name: str) -> Event:
    while True:
        frame = await peer.frame()
        if frame.content_type == "text/event-plain":
            event = parse_plain(frame.body)
            if event.name == name:
                return event


async def test_connect_returns_flat_url_encoded_channel_data(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    call = UicCall(forwarded_headers={"X-WA-Meta-Cta-Payload": "order #42 & more"}, talk_s=None)
    await standin.place_uic(call, (capture.server_host, capture.server_port))
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    block = await peer.frame_bytes()
    assert block.startswith(b"Event-Name: CHANNEL_DATA\nCore-UUID: ")
    assert block.endswith(
        b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
    )
    lines = block.decode().split("\n")
    assert not any(line.startswith("Content-Length") for line in lines)
    assert f"variable_sip_h_X-WA-Meta-Wacid: {call.wacid}" in lines
    assert "variable_sip_h_X-WA-Meta-Cta-Payload: order%20%2342%20%26%20more" in lines
    assert "Caller-Caller-ID-Number: %2B15550200002" in lines
    sdp_line = next(line for line in lines if line.startswith("variable_switch_r_sdp: "))
    assert "%0D%0A" in sdp_line and "\r" not in sdp_line
    names = [line.split(":", 1)[0] for line in lines if line]
    assert names.index("Channel-Direction") < names.index("Caller-Direction")
    assert names.index("Caller-Direction") < names.index("variable_direction")


async def test_non_full_socket_gates_commands(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    await standin.place_uic(
        UicCall(talk_s=None), (capture.server_host, capture.server_port), full=False
    )
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    block = await peer.frame_bytes()
    assert block.endswith(b"Socket-Mode: async\nControl: single-channel\n\n")
    for command in ("api status", "bgapi status", "event plain ALL", "linger", "log 7"):
        await peer.send(f"{command}\n\n".encode())
        assert await peer.frame_bytes() == reply("-ERR command not found"), command
    await peer.send(b"getvar sip_req_user\n\nmyevents\n\nmyevents\n\nfilter Event-Name X\n\n")
    assert await peer.frame_bytes() == reply("+15550100001")
    assert await peer.frame_bytes() == reply("+OK Events Enabled")
    assert await peer.frame_bytes() == reply("-ERR aready enabled.")
    assert await peer.frame_bytes() == reply("+OK filter added. [Event-Name]=[X]")


async def test_sendmsg_event_uuid_comes_back_as_application_uuid(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    await standin.place_uic(UicCall(talk_s=None), (capture.server_host, capture.server_port))
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    await peer.frame_bytes()
    await peer.send(b"myevents\n\n")
    assert await peer.frame_bytes() == reply("+OK Events Enabled")
    await peer.send(
        b"sendmsg\ncall-command: execute\nexecute-app-name: answer\nEvent-UUID: ev-1\n\n"
    )
    assert await peer.frame_bytes() == reply("+OK")
    execute = await next_event(peer, "CHANNEL_EXECUTE")
    assert execute["Application"] == "answer"
    assert execute["Application-UUID"] == "ev-1"
    answer = await next_event(peer, "CHANNEL_ANSWER")
    assert answer["Answer-State"] == "answered"
    complete = await next_event(peer, "CHANNEL_EXECUTE_COMPLETE")
    assert complete["Application-UUID"] == "ev-1"
    assert complete["Application-Response"] == "_none_"


async def test_linger_keeps_socket_open_for_hangup_complete(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    call = UicCall(talk_s=0.01, meta_duration="7", duration_header="x-wa-meta-call-duration")
    handle = await standin.place_uic(call, (capture.server_host, capture.server_port))
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    await peer.frame_bytes()
    await peer.send(b"myevents\n\nlinger 0\n\n")
    assert await peer.frame_bytes() == reply("+OK Events Enabled")
    assert await peer.frame_bytes() == reply("+OK will linger 0 seconds")
    await peer.send(b"sendmsg\ncall-command: execute\nexecute-app-name: answer\n\n")
    notice = await peer.frame_of_type("text/disconnect-notice")
    uuid = handle.runtime.channel.uuid
    assert notice.headers == {
        "Content-Type": "text/disconnect-notice",
        "Controlled-Session-UUID": uuid,
        "Content-Disposition": "linger",
        "Channel-Name": handle.runtime.channel.name,
        "Linger-Time": "0",
        "Content-Length": "0",
    }
    complete = await next_event(peer, "CHANNEL_HANGUP_COMPLETE")
    assert complete["variable_sip_bye_h_x-wa-meta-call-duration"] == "7"
    assert complete["Hangup-Cause"] == "NORMAL_CLEARING"
    final = await peer.frame_of_type("text/disconnect-notice")
    assert final.header("Content-Disposition") == "disconnect"
    assert final.header("Controlled-Session-UUID") == uuid
    assert await peer.at_eof()


async def test_without_linger_hangup_closes_the_socket(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    handle = await standin.place_uic(
        UicCall(talk_s=0.01), (capture.server_host, capture.server_port)
    )
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    await peer.frame_bytes()
    await peer.send(b"sendmsg\ncall-command: execute\nexecute-app-name: answer\n\n")
    assert await peer.frame_bytes() == reply("+OK")
    notice = await peer.frame_of_type("text/disconnect-notice")
    assert notice.header("Content-Disposition") == "disconnect"
    assert await peer.at_eof()
    await handle.finished()


async def test_uic_abandoned_before_answer_is_originator_cancel(
    standin: FreeSwitchStandin, capture: OutboundCapture
) -> None:
    standin.switch.history = []
    handle = await standin.place_uic(
        UicCall(abandon_after_s=0.01), (capture.server_host, capture.server_port)
    )
    peer = await capture.next()
    await peer.send(b"connect\n\n")
    await peer.frame_bytes()
    await handle.finished()
    complete = next(e for e in standin.switch.history if e.name == "CHANNEL_HANGUP_COMPLETE")
    assert complete["Hangup-Cause"] == "ORIGINATOR_CANCEL"
    assert complete["variable_sip_term_status"] == "487"
    assert complete["variable_billsec"] == "0"


async def originate(peer: RawPeer, args: str) -> tuple[str, dict[str, Event]]:
    """The api output and the events that arrived before it (FreeSWITCH flushes them first)."""
    await peer.send(f"api originate {args}\n\n".encode())
    events: dict[str, Event] = {}
    while True:
        frame = await peer.frame()
        if frame.content_type == "api/response":
            return frame.body.decode(), events
        event = parse_plain(frame.body)
        events[event.name] = event


async def test_bic_answered_then_meta_bye(raw_inbound: RawPeer, standin: FreeSwitchStandin) -> None:
    standin.meta.default_bic = BicOutcome(talk_s=0.01, meta_duration="3")
    await authed(raw_inbound)
    await raw_inbound.send(b"event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE\n\n")
    await raw_inbound.frame_bytes()
    result, early = await originate(
        raw_inbound,
        "{origination_uuid=bic-1,origination_caller_id_number=+15550100001}"
        "sofia/gateway/wa-edge/+15550200002 &park()",
    )
    assert result == "+OK bic-1\n"
    answer = early["CHANNEL_ANSWER"]
    assert answer.unique_id == "bic-1" and answer["Call-Direction"] == "outbound"
    complete = await next_event(raw_inbound, "CHANNEL_HANGUP_COMPLETE")
    assert complete["variable_sip_bye_h_X-WA-Meta-Call-Duration"] == "3"


@pytest.mark.parametrize("error", META_ERRORS, ids=[e.key for e in META_ERRORS])
async def test_bic_refused_with_each_meta_error(
    raw_inbound: RawPeer, meta: MetaBehaviour, error: MetaError
) -> None:
    meta.bic["+15550200009"] = BicOutcome.refused(error.key)
    await authed(raw_inbound)
    await raw_inbound.send(b"event plain CHANNEL_HANGUP_COMPLETE\n\n")
    await raw_inbound.frame_bytes()
    cause = hangup_cause_for_sip_status(error.status)
    result, early = await originate(
        raw_inbound, "{origination_uuid=r1}sofia/gateway/wa/+15550200009 &park()"
    )
    assert result == f"-ERR {cause}\n"
    complete = early["CHANNEL_HANGUP_COMPLETE"]
    assert complete["Hangup-Cause"] == cause
    assert complete["variable_sip_term_status"] == str(error.status)
    assert complete["variable_sip_invite_failure_phrase"] == error.phrase


def test_sip_status_to_cause_follows_sofia() -> None:
    assert hangup_cause_for_sip_status(403) == "CALL_REJECTED"
    assert hangup_cause_for_sip_status(486) == "USER_BUSY"
    assert hangup_cause_for_sip_status(480) == "NO_USER_RESPONSE"
    assert hangup_cause_for_sip_status(408) == "RECOVERY_ON_TIMER_EXPIRE"
    assert hangup_cause_for_sip_status(503) == "NORMAL_TEMPORARY_FAILURE"
    assert hangup_cause_for_sip_status(599) == "NORMAL_UNSPECIFIED"

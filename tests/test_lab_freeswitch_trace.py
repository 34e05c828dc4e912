"""Reading FreeSWITCH's sofia siptrace back from its log (lab/freeswitch_trace.py), and the
one-line SDP summary the lab prints (lab/sdp_summary.py)."""

from __future__ import annotations

from pathlib import Path

from lab.freeswitch_trace import (
    dialog_over,
    executed,
    header,
    messages_of_call,
    read_freeswitch_trace,
)
from lab.sdp_summary import describe_sdp, sdp_body
from lab.sipp import TracedMessage

RULE = "-" * 72


def traced(way: str, message: str, at: str) -> str:
    """A message as sofia logs it: byte count of the CRLF form, then the LF form."""
    size = len(message.encode())
    lines = message.split("\r\n")
    peer = "to" if way == "send" else "from"
    return f"{way} {size} bytes {peer} udp/[127.0.0.1]:5060 at {at}:\n{RULE}\n" + "\n".join(lines)


INVITE = ("INVITE sip:+15550100001@sip.example.com SIP/2.0\r\nCall-ID: abc\r\nCSeq: 2 INVITE\r\n"
          "Content-Type: application/sdp\r\nContent-Length: 42\r\n\r\n"
          "v=0\r\nm=audio 4000 RTP/SAVP 111\r\na=rtpmap:111 opus/48000/2\r\n")
OK_BYE = "SIP/2.0 200 OK\r\nCall-ID: abc\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
OTHER = "OPTIONS sip:x SIP/2.0\r\nCall-ID: other\r\nCSeq: 1 OPTIONS\r\n\r\n"


def test_messages_are_cut_by_their_byte_count_even_with_log_lines_right_after(tmp_path: Path) -> None:
    log = tmp_path / "freeswitch.log"
    log.write_text(
        "2026-11-29 09:49:14 [INFO] switch_time.c:628 Clock synchronized\n"
        + traced("recv", INVITE, "09:49:15.078969")
        + "d959 EXECUTE [depth=0] sofia/wa-edge/+1555 set(x=1)\n"
        + traced("send", OTHER, "09:49:15.100000")
        + traced("send", OK_BYE, "09:49:16.000001") + "\n")
    messages = read_freeswitch_trace(log)
    assert [(m.time, m.sent, m.first_line) for m in messages] == [
        ("09:49:15.078969", False, "INVITE sip:+15550100001@sip.example.com SIP/2.0"),
        ("09:49:15.100000", True, "OPTIONS sip:x SIP/2.0"),
        ("09:49:16.000001", True, "SIP/2.0 200 OK"),
    ]
    assert "EXECUTE" not in messages[0].text and messages[0].text.endswith("opus/48000/2")
    call = messages_of_call(messages, "abc")
    assert len(call) == 2 and dialog_over(call) and not dialog_over(call[:1])
    # from an offset: only what was written after it
    assert read_freeswitch_trace(log, log.stat().st_size) == []


def test_each_message_keeps_its_peer_and_its_headers_read_by_name(tmp_path: Path) -> None:
    """The cluster lab tells which edge a BYE came from by the peer sofia names."""
    log = tmp_path / "freeswitch.log"
    log.write_text(traced("recv", INVITE, "09:49:15.078969").replace(
        "udp/[127.0.0.1]:5060", "udp/[198.18.20.12]:5060") + "\n")
    (message,) = read_freeswitch_trace(log)
    assert message.peer == "198.18.20.12:5060"
    assert header(message, "call-id") == "abc" and header(message, "CSeq") == "2 INVITE"
    assert header(message, "X-WA-Meta-Wacid") == "" and header(message, "C.eq") == ""


def test_refusal_acked_ends_the_dialog() -> None:
    refused = [TracedMessage("1", True, "INVITE sip:a SIP/2.0\r\nCSeq: 1 INVITE"),
               TracedMessage("2", False, "SIP/2.0 486 Busy Here\r\nCSeq: 1 INVITE")]
    assert not dialog_over(refused)
    assert dialog_over([*refused, TracedMessage("3", True, "ACK sip:a SIP/2.0\r\nCSeq: 1 ACK")])


def test_sdp_summary_names_what_meta_checks() -> None:
    assert describe_sdp(sdp_body(INVITE)) == "RTP/SAVP, opus/48000/2"
    dtls = ("m=audio 24830 UDP/TLS/RTP/SAVPF 111 126\na=rtpmap:111 opus/48000/2\n"
            "a=fingerprint:sha-256 E7:3B:CC:6F:BC:64:5C:2F:DF:02:11:2E:A7:35:FF:F0:83:64:1A:27\n"
            "a=setup:active\na=rtcp-mux\n"
            "a=candidate:7576968013 1 udp 2130706431 127.0.0.1 24830 typ host generation 0\n")
    summary = describe_sdp(dtls)
    assert summary.startswith("UDP/TLS/RTP/SAVPF, fingerprint sha-256 E7:3B:CC:6F…")
    assert "setup:active" in summary and "1 candidate 127.0.0.1:24830 host (component 1)" in summary
    assert "rtcp-mux" in summary and "crypto" not in summary
    assert describe_sdp("") == "no audio offer/answer"


def test_executed_lists_what_ran_after_the_socket_on_that_channel_only(tmp_path: Path) -> None:
    uuid, other = "d9595887-3c08-4e88-af11-fec93c10d6f4", "0c8bf298-eabf-42b3-aba6-f9b4ce90f97f"
    channel = "sofia/wa-edge/+15550123456@wa.meta.vc"
    log = tmp_path / "freeswitch.log"
    log.write_text("\n".join([
        f"{uuid} EXECUTE [depth=0] {channel} set(wa_srtp_mode=SDES)",
        f"{uuid} EXECUTE [depth=0] {channel} socket(127.0.0.1:8084 async full)",
        f"{uuid} 2026-11-29 09:49:15.075779 100.00% [NOTICE] mod_event_socket.c:1 connected",
        f"{uuid} EXECUTE [depth=0] {channel} multiset(^^|a=1|b=2)",
        f"{other} EXECUTE [depth=1] {channel} hangup()",
        f"{uuid} EXECUTE [depth=1] {channel} answer()",
        f"{uuid} EXECUTE [depth=1] {channel} playback(silence_stream://200,1400)",
    ]) + "\n")
    assert executed(log, 0, uuid) == ["multiset(^^|a=1|b=2)", "answer()",
                                      "playback(silence_stream://200,1400)"]
    assert executed(log, 0, other) == ["hangup()"]  # no socket line: everything it ran

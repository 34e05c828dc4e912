"""Realistic WhatsApp call sequences for the stand-in to play.

- UIC (user-initiated): a call arrives from the Kamailio edge with Meta's ``x-wa-meta-*``
  headers passed through, FreeSWITCH runs ``socket ... async full`` and connects to the
  controller; then the user either waits for the answer and Meta later sends BYE carrying
  ``X-WA-Meta-Call-Duration`` (casing as received), or abandons (CANCEL, 487) before the answer.
- BIC (business-initiated): ``originate`` through the edge gateway; Meta answers, or refuses
  with one of its documented errors (SIP status + phrase -> FreeSWITCH hangup cause).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from esl.diagnosis import EDGE_DIAGNOSIS_HEADER
from esl.meta_errors import META_ERRORS_BY_KEY
from esl.sipcause import hangup_cause_for_sip_status
from lab.esl_standin.channel import Channel
from lab.esl_standin.switch import CallRuntime, Switch

DURATION_HEADER = "X-WA-Meta-Call-Duration"

SDES_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 157.240.0.10\r\ns=-\r\nc=IN IP4 157.240.0.10\r\nt=0 0\r\n"
    "m=audio 3480 RTP/SAVP 111 126\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\n"
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
)
DTLS_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 157.240.0.10\r\ns=-\r\nc=IN IP4 157.240.0.10\r\nt=0 0\r\n"
    "a=ice-lite\r\nm=audio 3480 UDP/TLS/RTP/SAVPF 111 126\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=fmtp:111 useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=setup:actpass\r\n"
    "a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45"
    ":67:89:AB:CD:EF:01:23:45:67:89\r\na=rtcp-mux\r\n"
    "a=candidate:1 1 udp 2113937151 157.240.0.10 3480 typ host\r\n"
)


@dataclass(frozen=True)
class BicOutcome:
    """How Meta treats one business-initiated INVITE."""

    status: int = 200
    phrase: str = "OK"
    edge_diagnosis: str | None = None  # X-WA-Diagnosis the Kamailio edge adds to a refusal
    ring_s: float = 0.0
    talk_s: float | None = 0.05  # None: stays up until the business hangs up
    meta_duration: str | None = None

    @classmethod
    def refused(cls, key: str) -> BicOutcome:
        """Meta's refusal by key of :data:`esl.meta_errors.META_ERRORS`."""
        error = META_ERRORS_BY_KEY[key]
        cause, _, fix = error.diagnosis.partition(": ")
        header = f'{error.key}; cause="{cause}"; fix="{fix}"'
        return cls(status=error.status, phrase=error.phrase, edge_diagnosis=header)


@dataclass
class MetaBehaviour:
    """What the simulated Meta side does for BICs, by WhatsApp user number."""

    bic: dict[str, BicOutcome] = field(default_factory=dict)
    default_bic: BicOutcome = field(default_factory=BicOutcome)
    duration_header: str = DURATION_HEADER

    def outcome_for(self, user: str) -> BicOutcome:
        return self.bic.get(user, self.default_bic)


@dataclass
class UicCall:
    """A user-initiated call as the edge forwards it to FreeSWITCH."""

    business_number: str = "+15550100001"
    consumer_number: str = "+15550200002"
    wacid: str = field(default_factory=lambda: "wacid." + uuid.uuid4().hex[:24])
    srtp_offer: str = "SDES"
    forwarded_headers: dict[str, str] = field(default_factory=dict)
    abandon_after_s: float | None = None
    talk_s: float | None = 0.05
    meta_duration: str | None = None
    duration_header: str = DURATION_HEADER
    edge_address: str = "10.0.0.2"

    def channel(self) -> Channel:
        """The inbound leg as sofia would create it from the edge's INVITE."""
        variables = {
            "direction": "inbound",
            "uuid": "",
            "sip_from_user": self.consumer_number,
            "sip_from_host": "wa.meta.vc",
            "sip_to_user": self.business_number,
            "sip_req_user": self.business_number,
            "sip_call_id": f"outgoing:{self.wacid}",
            "sip_user_agent": "Facebook SipGateway",
            "sip_h_X-WA-Meta-Wacid": self.wacid,
            "sip_h_X-WA-Business-Number": self.business_number,
            "switch_r_sdp": SDES_OFFER if self.srtp_offer == "SDES" else DTLS_OFFER,
            "rtp_use_codec_string": "OPUS,PCMU,PCMA",
        }
        for name, value in self.forwarded_headers.items():
            variables["sip_h_" + name] = value
        channel = Channel(
            name=f"sofia/internal/{self.consumer_number}@wa.meta.vc",
            direction="inbound",
            caller_number=self.consumer_number,
            destination_number=self.business_number,
            caller_name=self.consumer_number.lstrip("+"),
            network_addr=self.edge_address,
            variables=variables,
        )
        channel.variables["uuid"] = channel.uuid
        return channel


async def play_uic(switch: Switch, runtime: CallRuntime, call: UicCall) -> None:
    """Drive the user's side: abandon before answer, or talk then Meta's BYE."""
    if call.abandon_after_s is not None:
        try:
            await asyncio.wait_for(runtime.answered.wait(), call.abandon_after_s)
        except TimeoutError:
            await switch.hangup(
                runtime, "ORIGINATOR_CANCEL", sip_status=487, disposition="recv_cancel"
            )
            return
    else:
        await _first(runtime.answered.wait(), runtime.down.wait())
    if call.talk_s is None or runtime.down.is_set():
        return
    await meta_bye(switch, runtime, call.talk_s, call.meta_duration, call.duration_header)


async def meta_bye(
    switch: Switch,
    runtime: CallRuntime,
    talk_s: float,
    meta_duration: str | None,
    header: str = DURATION_HEADER,
) -> None:
    """After ``talk_s`` Meta hangs up; its BYE carries the call duration in seconds."""
    try:
        await asyncio.wait_for(runtime.down.wait(), talk_s)
        return  # the business hung up first
    except TimeoutError:
        pass
    duration = meta_duration if meta_duration is not None else str(round(talk_s))
    wacid = runtime.channel.variables.get("sip_h_X-WA-Meta-Wacid", "")
    bye = {header: duration}
    if wacid:
        bye["X-WA-Meta-Wacid"] = wacid
    await switch.hangup(runtime, "NORMAL_CLEARING", sip_status=200, bye_headers=bye)


async def refuse_bic(switch: Switch, runtime: CallRuntime, outcome: BicOutcome) -> str:
    """Meta refused the INVITE: hang up with sofia's cause for that status."""
    cause = hangup_cause_for_sip_status(outcome.status)
    await switch.hangup(
        runtime,
        cause,
        sip_status=outcome.status,
        sip_phrase=outcome.phrase,
        disposition="recv_refuse",
        response_headers=(
            {EDGE_DIAGNOSIS_HEADER: outcome.edge_diagnosis} if outcome.edge_diagnosis else None
        ),
    )
    return cause


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()

"""User-initiated calls: what to tell FreeSWITCH (a pure plan) and the per-call socket session.

The plan is a list of applications sent as pipelined ``sendmsg`` commands the moment
CHANNEL_DATA arrives: ``multiset`` (SRTP for the number's mode, OPUS first, no timers/hold,
silence when idle, media timeout, our ``wa_*`` tags for the CDR), ``answer``, a short
``playback`` of silence (Meta waits for the business's first SRTP packet), then the route's
target (``bridge``, an IVR application, or nothing for ``park``: the async socket holds the
call parked already). Calls that cannot be routed are tagged with a diagnosis code and hung up.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from esl.cdr import ANCHOR, CallRecord, CdrStore, iso_from_us, record_from_hangup, srtp_fields
from esl.client import OutboundSession
from esl.diagnosis import srtp_mismatch_code
from esl.errors import EslError
from esl.event import Event
from esl.media import multiset_argument, silence_stream, uic_variables
from esl.metrics import LatencySamples
from esl.routing import choose_route
from esl.whatsapp_call import WhatsAppCall, read_whatsapp_call
from siteconfig.controller import ControllerSettings, NumberSettings, Route

log = logging.getLogger(__name__)

_SAFE_TAG = re.compile(r"^[A-Za-z0-9+._:-]{1,128}$")
REPLY_TIMEOUT_S = 10.0
MISMATCH_CAUSE = "INCOMPATIBLE_DESTINATION"
"""Sofia answers it with 488 Not Acceptable Here (RFC 3261 21.4.26: the offer's media cannot be
used), the status for an SDP we will not take."""
EVENT_FILTERS = (
    "Event-Name CHANNEL_ANSWER",
    "Event-Name CHANNEL_HANGUP_COMPLETE",
    "Application playback",
)
"""Of the ~dozen events ``myevents`` sends per call, only these matter here (answer, first
media, end); filters are OR-ed, so the rest never leave FreeSWITCH."""


@dataclass(frozen=True)
class UicPlan:
    apps: list[tuple[str, str]]
    route: Route | None = None
    srtp_mode: str | None = None  # Meta's side (esl/cdr.py srtp_fields)
    freeswitch_srtp_mode: str | None = None  # behind rtpengine: FreeSWITCH's leg
    hangup_cause: str | None = None
    diagnosis_code: str | None = None


def _tags(call: WhatsAppCall) -> dict[str, str]:
    """Our own channel variables; untrusted header values only if plainly safe."""
    tags = {"wa_direction": "uic"}
    for name, value in (
        ("wa_wacid", call.wacid),
        ("wa_business_number", call.business_number),
        ("wa_user_number", call.user_number),
    ):
        if value and _SAFE_TAG.match(value):
            tags[name] = value
    return tags


def refusal(call: WhatsAppCall, code: str, cause: str,
            extra: dict[str, str] | None = None) -> UicPlan:
    tags = _tags(call)
    tags["wa_diagnosis"] = code
    tags.update(extra or {})
    return UicPlan(
        apps=[("multiset", multiset_argument(sorted(tags.items())))],
        hangup_cause=cause,
        diagnosis_code=code,
    )


def srtp_mismatch(call: WhatsAppCall, number: NumberSettings) -> UicPlan | None:
    """488 for an offer whose SRTP key exchange is not the number's (None: they agree).

    FreeSWITCH would answer it anyway and the call would fail later as silence or a media
    timeout. A ``Warning: 305`` (RFC 3261 "Incompatible media format") says why in the trace.
    """
    offered = call.offer_mode
    if offered is None or offered == number.srtp_mode:
        return None
    code = srtp_mismatch_code(offered, number.srtp_mode)
    warning = f'305 wa-esl "Incompatible media format: {offered} offered, number is {number.srtp_mode}"'
    plan = refusal(call, code, MISMATCH_CAUSE,
                   {"wa_srtp_mode": number.srtp_mode, "sip_rh_Warning": warning})
    return replace(plan, srtp_mode=number.srtp_mode)


def plan_uic(call: WhatsAppCall, settings: ControllerSettings) -> UicPlan:
    number = settings.number(call.business_number or "")
    if number is None:
        return refusal(call, "unknown_business_number", "UNALLOCATED_NUMBER")
    mismatch = srtp_mismatch(call, number)
    if mismatch is not None:
        return mismatch
    route = choose_route(settings.routes, call)
    if route is None:
        return refusal(call, "no_route", "NO_ROUTE_DESTINATION")
    tags = _tags(call)
    tags["wa_route"] = route.name
    apps = [
        ("multiset", multiset_argument(uic_variables(number, settings.media, tags))),
        ("answer", ""),
        ("playback", silence_stream(settings.media)),
    ]
    target = route.target
    if target.action == "bridge":
        apps.append(("bridge", target.destination))
    elif target.action == "ivr":
        app, _, arg = target.destination.strip().partition(" ")
        apps.append((app, arg))
    # "park": nothing to send. The dialplan's `socket ... async` already parks the channel
    # while we control it, and FreeSWITCH refuses a second park ("Cannot park channels that
    # are under control already"); the call stays parked until it ends or we send more.
    meta, leg = srtp_fields(number.meta_srtp_mode, number.srtp_mode)
    return UicPlan(apps=apps, route=route, srtp_mode=meta, freeswitch_srtp_mode=leg)


def _timestamp(event: Event) -> int | None:
    try:
        return int(event.get("Event-Date-Timestamp") or "")
    except ValueError:
        return None


@dataclass
class CallTracker:
    """Follows one call's events: answer, first media sent, end."""

    call_uuid: str
    answered_us: int | None = None
    first_media_us: int | None = None
    hangup_complete: Event | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    on_answer: Callable[[int | None], None] | None = None
    """Told the answer time (epoch µs) once: the CDR learns it before the end (a call whose
    media node dies mid-call keeps it)."""

    def on_event(self, event: Event) -> None:
        if event.unique_id != self.call_uuid:
            return
        name = event.name
        if name == "CHANNEL_ANSWER":
            first = self.answered_us is None
            self.answered_us = _timestamp(event)
            if first and self.on_answer is not None:
                self.on_answer(self.answered_us)
        elif (
            name == "CHANNEL_EXECUTE"
            and self.first_media_us is None
            and event.headers.get("Application") == "playback"
        ):
            self.first_media_us = _timestamp(event)
        elif name == "CHANNEL_HANGUP_COMPLETE":
            self.hangup_complete = event
            self.done.set()

    @property
    def first_media_ms(self) -> float | None:
        """Answer to the first media we made FreeSWITCH send (the silence playback)."""
        if self.answered_us is None or self.first_media_us is None:
            return None
        return max(0.0, (self.first_media_us - self.answered_us) / 1000)


def initial_record(call: WhatsAppCall, plan: UicPlan) -> CallRecord:
    """Written when the call starts, so even a crash leaves a trace of it."""
    return CallRecord(
        call_uuid=call.call_uuid,
        direction="uic",
        wacid=call.wacid,
        business_number=call.business_number,
        user_number=call.user_number,
        tgrp=call.tgrp,
        trunk_context=call.trunk_context,
        request_uri_params=";".join(f"{k}={v}" for k, v in sorted(call.request_uri_params.items()))
        or None,
        cta_payload=call.cta_payload,
        deeplink_payload=call.deeplink_payload,
        route=plan.route.name if plan.route else None,
        srtp_mode=plan.srtp_mode,
        freeswitch_srtp_mode=plan.freeswitch_srtp_mode,
    )


def outcome_line(record: CallRecord) -> str:
    """One log line per ended call: what an operator greps for (no payloads: they are
    untrusted text and may be personal)."""
    duration = f"{record.fs_duration_s:.1f}s" if record.fs_duration_s is not None else "-"
    parts = [
        f"{record.direction or 'call'} {record.call_uuid} ended: {record.hangup_cause or '-'}",
        f"wacid={record.wacid if record.wacid and _SAFE_TAG.match(record.wacid) else '-'}",
        f"business={record.business_number or '-'}",
        f"route={record.route or '-'}",
        f"srtp={record.srtp_mode or '-'}",
        *([f"anchor={ANCHOR}", f"freeswitch_srtp={record.freeswitch_srtp_mode}"]
          if record.freeswitch_srtp_mode else []),
        f"duration={duration}",
    ]
    if record.sip_status:
        parts.append(f"sip={record.sip_status}")
    if record.diagnosis:
        parts.append(f"diagnosis={record.diagnosis!r}")
    return " ".join(parts)


class UicHandler:
    """Runs one outbound socket session per user-initiated call."""

    def __init__(
        self,
        settings: ControllerSettings,
        store: CdrStore,
        latency: LatencySamples | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.latency = latency or LatencySamples()
        self._warned_not_full = False

    async def __call__(self, session: OutboundSession) -> None:
        connection = session.connection
        channel_data = await session.connect(timeout=REPLY_TIMEOUT_S)
        started = time.perf_counter()
        call = read_whatsapp_call(channel_data)
        tracker = CallTracker(session.uuid, on_answer=self._answered(session.uuid))
        connection.on_event(tracker.on_event)
        try:
            plan = plan_uic(call, self.settings)
        except ValueError as exc:
            log.error("call %s: cannot build commands: %s", session.uuid, exc)
            plan = refusal(call, "controller_error", "NORMAL_TEMPORARY_FAILURE")
        pending = [connection.send_nowait("myevents json")]
        pending += [connection.send_nowait(f"filter {rule}") for rule in EVENT_FILTERS]
        if session.is_full:
            pending.append(connection.send_nowait(f"linger {self.settings.linger_s}"))
        else:
            self._warn_not_full(session)
        pending += [connection.sendmsg_nowait(app, arg) for app, arg in plan.apps]
        if plan.hangup_cause:
            pending.append(connection.hangup_nowait(plan.hangup_cause))
        self.latency.add(time.perf_counter() - started)
        self.store.upsert(replace(initial_record(call, plan), invite_at=iso_from_us(
            channel_data.get("Caller-Channel-Created-Time"))))
        replies = await asyncio.wait_for(asyncio.gather(*pending), REPLY_TIMEOUT_S)
        for frame in replies:
            if frame.reply_text.startswith("-ERR"):
                log.warning("call %s: FreeSWITCH refused a command: %s", session.uuid,
                            frame.reply_text)
        finished = asyncio.ensure_future(tracker.done.wait())
        waiters: list[asyncio.Future[Any]] = [finished, connection.closed]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            finished.cancel()
        if tracker.hangup_complete is not None:
            record = replace(record_from_hangup(tracker.hangup_complete),
                             first_media_ms=tracker.first_media_ms)
            self.store.upsert(record)
            log.info("%s", outcome_line(record))
        elif plan.hangup_cause is None:
            raise EslError(f"call {session.uuid}: socket closed before the call ended")
        else:
            log.info("uic %s refused: %s (%s)", session.uuid, plan.diagnosis_code,
                     plan.hangup_cause)

    def _answered(self, call_uuid: str) -> Callable[[int | None], None]:
        def write(answered_us: int | None) -> None:
            answer_at = iso_from_us(str(answered_us) if answered_us else None)
            if answer_at is None:
                return
            try:
                self.store.upsert(CallRecord(call_uuid=call_uuid, answer_at=answer_at))
            except sqlite3.Error as exc:  # the hangup's record carries it again
                log.warning("call %s: cannot write the answer time to the CDR: %s", call_uuid,
                            exc)
        return write

    def _warn_not_full(self, session: OutboundSession) -> None:
        if not self._warned_not_full:
            self._warned_not_full = True
            log.error(
                "FreeSWITCH connected without 'full' control (Control: %s): the dialplan must "
                "use 'socket <host:port> async full'; CDRs then depend on the inbound connection",
                session.channel_data.get("Control"),
            )

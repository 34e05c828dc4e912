"""Business-initiated calls: ``originate`` through the edge gateway, answered or diagnosed.

The WhatsApp leg is dialed first, from the business number (the edge expects the From user to
be that number), with that number's SRTP mode. When the user answers, FreeSWITCH bridges to the
requesting agent (or parks the call for an external application). We choose the leg's UUID
(``origination_uuid``) so a refusal can be explained from the leg's own hangup event, which
FreeSWITCH delivers before the BACKGROUND_JOB result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from esl.cdr import CallRecord, CdrStore
from esl.client import EslConnection
from esl.database import DatabaseUnreachable, first_line
from esl.diagnosis import diagnose
from esl.errors import EslError
from esl.media import (
    anchor_variables,
    bic_codecs,
    common_variables,
    dial_variables,
    srtp_variables,
)
from esl.preflight import Preflight, Verdict, permission_token
from siteconfig.controller import E164_PATTERN, ControllerSettings

E164 = re.compile(E164_PATTERN)
BSUID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
AGENT_DIALSTRING = re.compile(r"^[A-Za-z0-9_.:@/+=;-]{1,256}$")
PREFLIGHT_CAUSE = "PREFLIGHT_REFUSED"
"""The CDR's hangup cause of a call pre-flight refused: nothing reached FreeSWITCH or Meta."""
RESULT_MARGIN_S = 15.0
"""FreeSWITCH reports an originate after its own ``originate_timeout``; we wait that much
longer before we give up on the result and cancel the call ourselves."""

log = logging.getLogger(__name__)


class BicRequestError(ValueError):
    """The request cannot be placed as given (bad number, unconfigured number, bad agent)."""


@dataclass(frozen=True)
class BicRequest:
    business_number: str
    user: str  # WhatsApp user: +E164, or a business-scoped user id
    agent: str | None = None  # dial string of the agent to bridge to, e.g. user/1000

    def validate(self) -> None:
        if not E164.match(self.business_number):
            raise BicRequestError(f"business number must be +E164: {self.business_number!r}")
        if not (E164.match(self.user) or BSUID.match(self.user)):
            raise BicRequestError(f"user must be +E164 or a user id: {self.user!r}")
        if self.agent is not None and not AGENT_DIALSTRING.match(self.agent):
            raise BicRequestError(f"agent dial string has unsupported characters: {self.agent!r}")


@dataclass(frozen=True)
class BicResult:
    call_uuid: str
    answered: bool
    hangup_cause: str | None = None
    sip_status: int | None = None
    diagnosis: str = ""
    preflight: Verdict | None = None  # None: pre-flight skipped (--force, or not configured)


def originate_command(request: BicRequest, settings: ControllerSettings, call_uuid: str,
                      ring_s: float | None = None, permission: str | None = None) -> str:
    """The ``originate`` API arguments for one BIC (validated, nothing untrusted inside).

    ``ring_s`` (default: the settings' ``originate_timeout_s``) bounds the ringing: FreeSWITCH
    cancels the INVITE after it and reports the call unanswered.
    """
    request.validate()
    number = settings.number(request.business_number)
    if number is None:
        raise BicRequestError(
            f"business number {request.business_number} is not configured in [esl.numbers]"
        )
    variables = [
        ("origination_uuid", call_uuid),
        ("originate_timeout", str(math.ceil(ring_s or settings.freeswitch.originate_timeout_s))),
        # answered means Meta's 200 OK: without it an API originate returns at a 183 with SDP
        # (early media) and the call would count as answered while it still rings
        ("ignore_early_media", "true"),
        ("origination_caller_id_number", request.business_number),
        ("origination_caller_id_name", request.business_number),
        ("sip_h_X-WA-Business-Number", request.business_number),
        ("wa_direction", "bic"),
        ("wa_business_number", request.business_number),
        ("wa_user_number", request.user),
        ("wa_srtp_mode", number.srtp_mode),
        *anchor_variables(number),
        *([("wa_permission", permission)] if permission else []),
        *srtp_variables(number, "outbound"),
        *common_variables(settings.media, bic_codecs(number)),
    ]
    gateway = settings.freeswitch.gateway
    target = f"&bridge({request.agent})" if request.agent else "&park()"
    return f"originate {dial_variables(variables)}sofia/gateway/{gateway}/{request.user} {target}"


async def place_bic(
    connection: EslConnection,
    request: BicRequest,
    settings: ControllerSettings,
    store: CdrStore | None = None,
    *,
    timeout: float | None = None,
    result_timeout: float | None = None,
    preflight: Preflight | None = None,
    checked: Verdict | None = None,
) -> BicResult:
    """Pre-flight, originate and report: answered, or why not (SIP status, cause, diagnosis).

    ``preflight`` (None: skipped, as ``--force`` does): refused there, nothing is sent to
    FreeSWITCH; the result and the CDR say why and when to retry. ``checked``: the verdict of
    a pre-flight the caller ran itself (``wa-esl originate`` checks before it connects).

    ``timeout``: seconds the call may ring (default: settings' ``originate_timeout_s``).
    ``result_timeout``: how long to wait for FreeSWITCH's result (default: ring time plus
    RESULT_MARGIN_S). If it passes, the call is killed by the UUID we chose (``uuid_kill``:
    CANCEL toward the edge) so nothing keeps ringing, and EslError says so.
    """
    call_uuid = str(uuid.uuid4())
    ring_s = timeout or settings.freeswitch.originate_timeout_s
    originate_command(request, settings, call_uuid, ring_s)  # bad input fails before pre-flight
    verdict = checked
    if preflight is not None and verdict is None:
        verdict = await preflight.check(request.business_number, request.user)
    if verdict is not None and not verdict.allowed:
        return refused_result(request, verdict, store, call_uuid)
    permission = (permission_token(verdict.permission)
                  if verdict is not None and verdict.permission is not None else None)
    command = originate_command(request, settings, call_uuid, ring_s, permission)
    wait_s = result_timeout if result_timeout is not None else ring_s + RESULT_MARGIN_S
    try:
        job = await connection.bgapi(command, timeout=wait_s)
    except EslError as error:
        if connection.is_closed:
            raise
        with contextlib.suppress(EslError):
            await connection.api(f"uuid_kill {call_uuid}", timeout=5)
        log.warning("bic %s from %s to %s: no originate result within %gs; call killed",
                    call_uuid, request.business_number, request.user, wait_s)
        raise EslError(f"no originate result from FreeSWITCH within {wait_s:g}s ({error}); "
                       f"call {call_uuid} was killed (uuid_kill) so it does not ring on") from None
    result = dataclasses.replace(_result(call_uuid, job.body.strip(), store), preflight=verdict)
    status = f" SIP {result.sip_status}" if result.sip_status else ""
    log.info("bic %s from %s to %s: %s%s%s", call_uuid, request.business_number, request.user,
             "answered" if result.answered else f"not answered: {result.hangup_cause}", status,
             "" if result.answered else f"; {result.diagnosis}")
    return result


def refused_result(request: BicRequest, verdict: Verdict, store: CdrStore | None,
                   call_uuid: str | None = None) -> BicResult:
    """Pre-flight said no: a CDR of its own (state ended, cause PREFLIGHT_REFUSED)."""
    call_uuid = call_uuid or str(uuid.uuid4())
    diagnosis = f"pre-flight refused, {verdict.summary()}"
    if store is not None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        with _unless_unreachable(f"bic {call_uuid}: the refusal's CDR not written"):
            store.upsert(CallRecord(
            call_uuid=call_uuid, direction="bic", business_number=request.business_number,
            user_number=request.user, invite_at=now, end_at=now, hangup_cause=PREFLIGHT_CAUSE,
                diagnosis=diagnosis, state="ended",
                permission=permission_token(verdict.permission) if verdict.permission else None))
    log.warning("bic %s from %s to %s: %s", call_uuid, request.business_number, request.user,
                diagnosis)
    return BicResult(call_uuid, False, PREFLIGHT_CAUSE, None, diagnosis, verdict)


def _result(call_uuid: str, output: str, store: CdrStore | None) -> BicResult:
    """The BACKGROUND_JOB output (``+OK <uuid>`` or ``-ERR <CAUSE>``) as a result."""
    if output.startswith("+OK"):
        return BicResult(call_uuid, answered=True, diagnosis="answered")
    cause = output.removeprefix("-ERR").strip() or "NORMAL_UNSPECIFIED"
    record = None
    if store is not None:
        with _unless_unreachable(f"bic {call_uuid}: its CDR cannot be read back (diagnosis "
                                 "from the cause alone)"):
            record = store.get(call_uuid)
    if record is not None and record.diagnosis:
        return BicResult(call_uuid, False, record.hangup_cause or cause, record.sip_status,
                         record.diagnosis)
    return BicResult(
        call_uuid,
        answered=False,
        hangup_cause=cause,
        diagnosis=diagnose(
            direction="bic",
            hangup_cause=cause,
            sip_status=None,
            sip_phrase="",
            disposition="",
            answered=False,
        ),
    )


@contextlib.contextmanager
def _unless_unreachable(what: str) -> Iterator[None]:
    """The CDR database is unreachable (a store without a spool, or nothing spooled to read
    back): the BIC goes on without it, one WARNING saying what was skipped."""
    try:
        yield
    except DatabaseUnreachable as error:
        log.warning("%s: %s", what, first_line(error))

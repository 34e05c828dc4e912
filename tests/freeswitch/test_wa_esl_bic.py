"""wa-esl originates through a real FreeSWITCH's gateway; SIPp plays the edge (UAS)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from esl.bic import BicRequest, place_bic
from esl.client import connect_inbound
from esl.errors import EslError
from esl.site import controller_settings
from lab.freeswitch import FreeswitchLab
from lab.processes import wait_for_udp_bound
from lab.sipp import SippServer, start_sipp_server
from siteconfig.controller import ControllerSettings
from tests.freeswitch.conftest import ESL_PASSWORD, SDES_NUMBER

pytestmark = pytest.mark.needs_freeswitch  # skipped, and counted, without one

WHATSAPP_USER = "+15550123456"


def ring_for(switch: FreeswitchLab, seconds: int) -> ControllerSettings:
    settings = controller_settings(switch.config)
    return settings.model_copy(update={"freeswitch": settings.freeswitch.model_copy(
        update={"originate_timeout_s": seconds})})


def edge_port(switch: FreeswitchLab) -> int:
    return switch.config.listen.internal_socket()[1]


def ringing_edge(switch: FreeswitchLab, folder: Path) -> SippServer:
    """SIPp playing the edge: 180 and never an answer; listening before we originate."""
    sipp = start_sipp_server("fs-bic-ringing", "edge", folder, edge_port(switch), timeout_s=30)
    wait_for_udp_bound("127.0.0.1", edge_port(switch), 10, "the SIPp edge")
    return sipp


async def gone(switch: FreeswitchLab, call_uuid: str, timeout: float = 10.0) -> bool:
    """FreeSWITCH no longer knows the call (uuid_exists false) within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await switch.api_async(f"uuid_exists {call_uuid}")).strip() == "false":
            return True
        await asyncio.sleep(0.2)
    return False


async def test_unanswered_originate_is_cancelled_after_the_ring_time(
        switch: FreeswitchLab, tmp_path: Path) -> None:
    """originate_timeout from the settings: FreeSWITCH CANCELs and reports the call unanswered
    (before, nothing bounded the ringing: FreeSWITCH's own 60 s, after wa-esl had given up)."""
    sipp = ringing_edge(switch, tmp_path)
    connection = await connect_inbound("127.0.0.1", switch.esl_port, ESL_PASSWORD)
    try:
        await connection.command("event json CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
        started = time.monotonic()
        result = await place_bic(connection, BicRequest(SDES_NUMBER, WHATSAPP_USER),
                                 ring_for(switch, 3))
        took = time.monotonic() - started
    finally:
        await connection.close()
        code = await asyncio.to_thread(sipp.wait, 20)
    assert not result.answered
    assert result.hangup_cause in ("NO_ANSWER", "ORIGINATOR_CANCEL"), result
    assert 2.0 <= took < 8, took  # FreeSWITCH counts from the originate, not the INVITE
    assert code == 0, sipp.log_tail()  # the edge saw the CANCEL and finished the transaction
    assert await gone(switch, result.call_uuid)


async def test_originate_abandoned_by_wa_esl_is_killed_not_left_ringing(
        switch: FreeswitchLab, tmp_path: Path) -> None:
    """When wa-esl stops waiting for the result, it kills the call by the UUID it chose."""
    sipp = ringing_edge(switch, tmp_path)
    connection = await connect_inbound("127.0.0.1", switch.esl_port, ESL_PASSWORD)
    try:
        with pytest.raises(EslError, match=r"was killed \(uuid_kill\)") as raised:
            await place_bic(connection, BicRequest(SDES_NUMBER, WHATSAPP_USER),
                            ring_for(switch, 60), result_timeout=2)
    finally:
        await connection.close()
        code = await asyncio.to_thread(sipp.wait, 20)
    call_uuid = str(raised.value).split("call ", 1)[1].split(" ", 1)[0]
    assert code == 0, sipp.log_tail()  # CANCEL reached the edge long before the 60-s ring time
    assert await gone(switch, call_uuid)

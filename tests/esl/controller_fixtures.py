"""Controller + stand-in wiring shared by the controller tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from esl.cdr import CallRecord
from esl.controller import Controller
from lab.esl_standin import FreeSwitchStandin, UicCall, UicHandle
from siteconfig.controller import ControllerSettings
from tests.esl.conftest import PASSWORD

SDES_NUMBER = "+15550100001"
DTLS_NUMBER = "+15550100002"


def make_settings(standin: FreeSwitchStandin, tmp_path: Path) -> ControllerSettings:
    return ControllerSettings.model_validate(
        {
            "freeswitch": {"host": standin.host, "port": standin.port, "password": PASSWORD},
            "listen": {"host": "127.0.0.1", "port": 0},
            # the BIC mechanics under test here; pre-flight has tests/esl/test_preflight*.py
            "preflight": {"enabled": False},
            "numbers": [
                {"business_number": SDES_NUMBER, "srtp_mode": "SDES"},
                {"business_number": DTLS_NUMBER, "srtp_mode": "DTLS"},
            ],
            "routes": [
                {
                    "name": "promo",
                    "match": {"cta_payload": "promo-*"},
                    "target": {"action": "bridge", "destination": "user/2000"},
                },
                {
                    "name": "menu",
                    "match": {"business_number": DTLS_NUMBER},
                    "target": {"action": "ivr", "destination": "ivr main_menu"},
                },
                {
                    "name": "sales-trunk",
                    "match": {"tgrp": "wacall", "trunk_context": "byoc.example.com"},
                    "target": {"action": "bridge", "destination": "sofia/internal/sip:q@pbx"},
                },
                {"name": "catch-all", "target": {"action": "park"}},
            ],
            "cdr_db": str(tmp_path / "cdr.sqlite3"),
            "reconnect": {"initial_s": 0.02, "max_s": 0.1},
            "linger_s": 5,
        }
    )


async def place(
    standin: FreeSwitchStandin, controller: Controller, call: UicCall, **kwargs: bool
) -> UicHandle:
    return await standin.place_uic(call, ("127.0.0.1", controller.listen_port), **kwargs)


async def ended_record(controller: Controller, call_uuid: str, timeout: float = 5.0) -> CallRecord:
    """Poll the CDR store until the call's record says it ended."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        record = controller.store.get(call_uuid)
        if record is not None and record.state == "ended":
            return record
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no ended CDR for {call_uuid}: {record}")
        await asyncio.sleep(0.01)


async def ended_by_wacid(controller: Controller, wacid: str, timeout: float = 15.0) -> CallRecord:
    """The CDR of the call with `wacid`, once it says the call ended (real FreeSWITCH calls,
    whose UUID the test does not choose)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = [r for r in controller.store.recent(limit=50) if r.wacid == wacid]
        if records and records[0].state == "ended":
            return records[0]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no ended CDR for {wacid}: {records[:1]}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_controller(settings: ControllerSettings) -> AsyncIterator[Controller]:
    """A controller connected to a (real) FreeSWITCH's Event Socket, stopped afterwards."""
    running = Controller(settings)
    await running.start()
    try:
        await asyncio.wait_for(running.inbound_ready.wait(), 15)
        yield running
    finally:
        await running.stop()

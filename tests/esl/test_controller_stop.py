"""stop() ends the reconnect loop even when a cancellation is swallowed (Python 3.11 wait_for)."""

from __future__ import annotations

import asyncio

import pytest

from esl.controller import cancel_for_sure


@pytest.mark.asyncio
async def test_a_swallowed_cancellation_still_ends_the_task() -> None:
    swallowed = 0

    async def reconnect_loop() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                if swallowed == 0:  # as 3.11's wait_for does when its await completes at once
                    swallowed += 1
                    continue
                raise

    task = asyncio.get_running_loop().create_task(reconnect_loop())
    await asyncio.sleep(0.01)
    await asyncio.wait_for(cancel_for_sure(task), 5)
    assert task.cancelled()
    assert swallowed == 1

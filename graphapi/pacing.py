"""Adaptive pacing of Graph requests once Graph has said "too fast".

Retrying each rate-limited request after its Retry-After is not enough on a large sync: the other
workers keep sending into an empty quota, collect their own 429s and stall one by one. After a
rate-limit answer the pacer spaces request starts a little below the rate that was just refused
(multiplicative decrease), then shortens the spacing slowly while answers are good (additive
increase of the rate), so a run settles just under the app's limit instead of bouncing off it.
Below MIN_PACED_RATE requests/s there is nothing to pace: backoff alone is enough there.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

MIN_PACED_RATE = 10.0
WINDOW_S = 1.0


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 0.0  # seconds between request starts; 0 = no pacing
        self._clock = clock
        self._next_start = 0.0
        self._starts: deque[float] = deque()
        self._last_slow_down = float("-inf")

    def recent_rate(self) -> float:
        """Request starts per second over the last WINDOW_S."""
        now = self._clock()
        while self._starts and now - self._starts[0] > WINDOW_S:
            self._starts.popleft()
        return len(self._starts) / WINDOW_S

    async def wait_turn(self) -> None:
        now = self._clock()
        self._starts.append(now)
        if self.interval <= 0:
            return
        slot = max(now, self._next_start)
        self._next_start = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)

    def slow_down(self) -> None:
        """Graph refused for rate: pace at 90 % of what was just tried, or slower than before."""
        now = self._clock()
        if now - self._last_slow_down < WINDOW_S:
            return  # the 429s of one burst arrive together: count them as one signal
        rate = self.recent_rate()
        if rate < MIN_PACED_RATE and self.interval == 0:
            return
        self._last_slow_down = now
        self.interval = max(self.interval * 1.25, 1.0 / max(rate * 0.9, 1.0))

    def speed_up(self) -> None:
        if self.interval > 0:
            self.interval *= 0.995
            if self.interval < 1e-4:
                self.interval = 0.0

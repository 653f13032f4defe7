"""Client-side pacing so that a healthy daemon never meets the server's rate limits.

Carmic allows 5 project creations and 5 NLE exports per minute per workspace, and 5 logins per
minute per email. A classic token bucket (capacity N, refilled at N per minute) would allow 2N
calls inside one 60 s window (a full bucket, then a refill), which a sliding-window limiter on
the server answers with 429. Here every token comes back exactly one window after it was spent,
so no window of that length ever holds more than N calls, whichever way the server counts
(fixed or sliding windows). ``margin`` widens the window a little: the server stamps a call when
it arrives, which may be later than when we sent the previous one.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from watchd.clock import Clock


class TokenBucket:
    """At most ``per_minute`` acquisitions in any minute (0 = unlimited).

    A non-integer rate keeps its average: 2.5 per minute is 2 tokens per 48 s.
    """

    def __init__(
        self, per_minute: float, *, clock: Clock, window: float = 60.0, margin: float = 1.0
    ) -> None:
        if per_minute < 0:
            raise ValueError(f"per_minute must be >= 0 (got {per_minute})")
        self.per_minute = per_minute
        self._clock = clock
        if per_minute == 0:
            self.capacity = 0
            self.window = 0.0
        else:
            self.capacity = max(1, math.floor(per_minute))
            self.window = window * self.capacity / per_minute + margin
        self._spent: deque[float] = deque()
        self._blocked_until = 0.0
        # Held while waiting, so that waiters are served in arrival order.
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return self.capacity == 0

    def wait_time(self) -> float:
        """Seconds until a token is free (0 when one is free now). Pure: reads the clock only."""
        now = self._clock.monotonic()
        wait = max(0.0, self._blocked_until - now)
        if self.unlimited:
            return wait
        while self._spent and self._spent[0] + self.window <= now:
            self._spent.popleft()
        if len(self._spent) >= self.capacity:
            wait = max(wait, self._spent[0] + self.window - now)
        return wait

    def try_acquire(self) -> bool:
        """Take a token if one is free now."""
        if self.wait_time() > 0:
            return False
        if not self.unlimited:
            self._spent.append(self._clock.monotonic())
        return True

    def give_back(self) -> None:
        """The call a token was taken for never reached the server (it could not connect):
        the token is free again. Only the latest one is given back."""
        if self._spent:
            self._spent.pop()

    async def acquire(self) -> float:
        """Wait for a token and take it; returns the seconds waited (by the injected clock)."""
        start = self._clock.monotonic()
        async with self._lock:
            while not self.try_acquire():
                await self._clock.sleep(self.wait_time())
        return self._clock.monotonic() - start

    def block_for(self, seconds: float) -> None:
        """The server said 429 anyway (another client shares the workspace): hand out no token
        for ``seconds``."""
        if seconds > 0:
            self._blocked_until = max(self._blocked_until, self._clock.monotonic() + seconds)

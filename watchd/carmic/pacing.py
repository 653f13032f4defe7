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
from collections.abc import Callable
from typing import Protocol

from watchd.clock import Clock


class Pacer(Protocol):
    """What the client needs of a pace: :class:`TokenBucket` in one process, or a bucket
    several hosts share (``watchd.cluster.pace.SharedBucket``)."""

    @property
    def per_minute(self) -> float: ...

    @property
    def unlimited(self) -> bool: ...

    def wait_time(self) -> float:
        """Seconds until a call may go (0 now); cheap and synchronous."""
        ...

    def try_acquire(self) -> bool:
        """Take a token if one is free now."""
        ...

    def give_back(self) -> None:
        """The call the latest token was taken for never reached the server."""
        ...

    async def acquire(self) -> float:
        """Wait for a token and take it; returns the seconds waited."""
        ...

    def block_for(self, seconds: float) -> None:
        """The server said 429 with this Retry-After: hand out nothing for ``seconds``."""
        ...


# Builds the pace of one (workspace id, kind) at ``per_minute`` calls, kind being "creates" or
# "exports"; the client calls it once per pair.
BucketFactory = Callable[[str, str, float, Clock], Pacer]


def bucket_shape(per_minute: float, window: float, margin: float) -> tuple[int, float]:
    """(capacity, window): at most ``capacity`` calls in any ``window`` seconds, margin included,
    for ``per_minute`` calls per ``window`` (a minute unless shrunk in tests); (0, 0) is
    unlimited."""
    if per_minute < 0:
        raise ValueError(f"per_minute must be >= 0 (got {per_minute})")
    if per_minute == 0:
        return 0, 0.0
    capacity = max(1, math.floor(per_minute))
    return capacity, window * capacity / per_minute + margin


class TokenBucket:
    """At most ``per_minute`` acquisitions in any minute (0 = unlimited).

    A non-integer rate keeps its average: 2.5 per minute is 2 tokens per 48 s.
    """

    def __init__(
        self, per_minute: float, *, clock: Clock, window: float = 60.0, margin: float = 1.0
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self.capacity, self.window = bucket_shape(per_minute, window, margin)
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


def local_bucket(workspace: str, kind: str, per_minute: float, clock: Clock) -> TokenBucket:
    """The single-host pace: a :class:`TokenBucket` in this process."""
    return TokenBucket(per_minute, clock=clock)

"""Sliding-window rate limits keyed by (rule, subject), with time passed in.

Like Django's throttles, a refused request is not counted: a client that waits ``Retry-After``
seconds is let through.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["Limit", "RateLimiter"]


@dataclass(frozen=True)
class Limit:
    """At most ``count`` hits per ``window`` seconds."""

    count: int
    window: float


class RateLimiter:
    """Remembers the hit times of each (rule, subject) inside its window."""

    def __init__(self) -> None:
        self._hits: dict[tuple[str, str], deque[float]] = {}

    def _window(self, key: tuple[str, str], limit: Limit, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - limit.window:
            hits.popleft()
        return hits

    def retry_after(self, rule: str, subject: str, limit: Limit, *, now: float) -> int | None:
        """Seconds until one more hit is allowed (at least 1), or None when it is allowed now."""
        hits = self._window((rule, subject.lower()), limit, now)
        if len(hits) < limit.count:
            return None
        return max(1, math.ceil(hits[0] + limit.window - now))

    def hit(self, rule: str, subject: str, limit: Limit, *, now: float) -> None:
        """Count one hit."""
        self._window((rule, subject.lower()), limit, now).append(now)

    def check_all(self, checks: list[tuple[str, str, Limit]], *, now: float) -> int | None:
        """Check every (rule, subject, limit); count a hit on each only when all allow it.

        Returns the longest Retry-After of those refusing, or None.
        """
        waits = [self.retry_after(r, s, lim, now=now) for r, s, lim in checks]
        refused = [w for w in waits if w is not None]
        if refused:
            return max(refused)
        for rule, subject, limit in checks:
            self.hit(rule, subject, limit, now=now)
        return None

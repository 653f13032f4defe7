"""The daemon's changes, as open pages need them: which jobs changed, coalesced.

The ledger tells :meth:`ChangeFeed.note` the id of every job it writes (``""`` for an inbox's
state). Nothing is kept while no page is open. With pages open, the ids gathered are handed to
every subscriber at most every ``interval`` seconds (the last change is never held back longer),
so a burst of progress writes costs one update per page per interval, and an idle page costs
nothing but a keep-alive comment now and then.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

DEFAULT_INTERVAL = 0.25  # seconds between two updates sent to a page
ANY_JOB = "*"  # a change that may concern any job (another process wrote the ledger)
MAX_SUBSCRIBERS = 64


class TooManySubscribers(Exception):
    pass


class Subscription:
    """One open page's share of the feed: ``await wait(timeout)`` returns the ids changed since
    the last call (empty on a timeout), or None when the feed closed."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._changed: set[str] = set()
        self._event = asyncio.Event()
        self.closed = False

    def _offer(self, ids: set[str]) -> None:
        self._changed |= ids
        self._event.set()

    async def wait(self, timeout: float) -> set[str] | None:
        if not self._changed and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout)
        if self.closed:
            return None
        self._event.clear()
        ids, self._changed = self._changed, set()
        return ids

    def close(self) -> None:
        self._feed._subs.discard(self)
        self.closed = True
        self._event.set()


class ChangeFeed:
    """Coalesces change notices (see the module's docstring). Create and use it on the event
    loop; :meth:`note` may also be called from another thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_subscribers: int = MAX_SUBSCRIBERS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self.interval = interval
        self.max_subscribers = max_subscribers
        self._clock = clock or loop.time
        self._subs: set[Subscription] = set()
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -1e9
        self.flushes = 0

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        if len(self._subs) >= self.max_subscribers:
            raise TooManySubscribers(f"{self.max_subscribers} pages are open already")
        sub = Subscription(self)
        self._subs.add(sub)
        return sub

    def note(self, job_id: str) -> None:
        """A job (or, with ``""``, an inbox) changed. Cheap when no page is open."""
        if not self._subs:
            return
        if threading.get_ident() != self._thread:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self.note, job_id)
            return
        self._pending.add(job_id)
        if self._timer is None:
            wait = max(0.0, self._last_flush + self.interval - self._clock())
            self._timer = self._loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._last_flush = self._clock()
        ids, self._pending = self._pending, set()
        if not ids:
            return
        self.flushes += 1
        for sub in list(self._subs):
            sub._offer(ids)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sub in list(self._subs):
            sub.close()

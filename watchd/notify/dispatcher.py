"""The dispatcher: an asyncio task of the daemon that sends what the queue holds.

It never blocks the pipeline: every attempt is a task of its own under the notifier's timeout,
outcomes are written as relaxed ledger commits (losing one means one more attempt: delivery is
at least once), and at most ``per_notifier`` rows per notifier are in memory at a time. A
notifier whose attempt failed is held until its row's next try, so a target that is down costs
one attempt per backoff step, not one per queued event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from watchd.clock import Clock
from watchd.ledger.db import Ledger
from watchd.notify import queue
from watchd.notify.config import NotifierConfig
from watchd.notify.queue import Backoff, Pending
from watchd.notify.senders import Answer, Message, Sender, make_sender

log = logging.getLogger("watchd.notify")

PER_NOTIFIER = 4  # attempts in flight per notifier (and rows in memory for it)
IDLE_WAIT = 30.0  # the longest sleep: expiry of old rows, a missed wake
EXPIRE_EVERY = 600.0

# (notifier name, outcome): outcome is "delivered", "failed", "gone" or "gave_up".
ResultHook = Callable[[str, str], None]


@dataclass
class _Target:
    config: NotifierConfig
    sender: Sender
    backoff: Backoff
    inflight: set[int] = field(default_factory=set)
    held_until: float = 0.0  # after a failure: nothing is sent before its next try
    gone: bool = False


def backoff_of(config: NotifierConfig) -> Backoff:
    return Backoff(first=config.retry_first, maximum=config.retry_max)


class Dispatcher:
    """Sends queued events to the configured notifiers. ``sender_factory`` and ``backoff``
    are seams for tests; ``on_result`` feeds the metrics."""

    def __init__(
        self,
        ledger: Ledger,
        notifiers: Sequence[NotifierConfig],
        *,
        clock: Clock,
        sender_factory: Callable[[NotifierConfig], Sender] = make_sender,
        backoff: Callable[[NotifierConfig], Backoff] = backoff_of,
        on_result: ResultHook | None = None,
        per_notifier: int = PER_NOTIFIER,
        rnd: random.Random | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self._factory = sender_factory
        self._backoff = backoff
        self._on_result = on_result
        self.per_notifier = per_notifier
        self._rnd = rnd or random.Random()
        self._targets: dict[str, _Target] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._next_expiry = 0.0
        self._retired: list[Sender] = []
        self.configure(notifiers)

    # ---- configuration -----------------------------------------------------------------------

    def configure(self, notifiers: Sequence[NotifierConfig]) -> None:
        """Apply ``[[notify]]`` (at start and on reload). A notifier whose target changed gets
        a new sender, and a 410 Gone recorded for its old target no longer holds it."""
        gone = queue.gone_fingerprints(self.ledger)
        old = self._targets
        self._targets = {}
        for config in notifiers:
            prev = old.pop(config.name, None)
            if prev is not None and prev.config == config:
                target = prev
                target.config = config
            else:
                if prev is not None:
                    self._retired.append(prev.sender)
                target = _Target(config, self._factory(config), self._backoff(config))
                if prev is not None:
                    target.inflight = prev.inflight
            target.gone = gone.get(config.name) == config.fingerprint
            if config.name in gone and not target.gone:
                with self.ledger.transaction() as conn:
                    queue.clear_gone(conn, config.name)
                log.info("notify %s: its config changed; sending to it again", config.name)
            self._targets[config.name] = target
        self._retired.extend(t.sender for t in old.values())
        with self.ledger.transaction() as conn:
            queue.forget_others(conn, list(self._targets))
        self.wake()

    @property
    def notifiers(self) -> list[NotifierConfig]:
        return [t.config for t in self._targets.values()]

    # ---- running -----------------------------------------------------------------------------

    def wake(self) -> None:
        """Something was queued: look now (callable from the loop's thread only)."""
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Send until cancelled (or :meth:`aclose`)."""
        self._wake = asyncio.Event()
        while not self._closing:
            self._wake.clear()
            try:
                wait = await self.step()
            except Exception:
                log.exception("notify: a step of the dispatcher failed; trying again")
                wait = 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def step(self) -> float:
        """Start the attempts that are due; return how long to sleep before looking again."""
        await self._close_retired()
        if self.ledger.in_transaction:
            return 0.01  # rows read now might yet roll back: look once it is committed
        now = self.clock.now()
        if now >= self._next_expiry:
            self._next_expiry = now + EXPIRE_EVERY
            self._expire(now)
        wait = IDLE_WAIT
        for target in self._targets.values():
            if target.gone:
                continue
            if target.held_until > now:
                wait = min(wait, target.held_until - now)
                continue
            # Failing (held before): one attempt at a time until one gets through.
            capacity = 1 if target.held_until else self.per_notifier
            free = capacity - len(target.inflight)
            if free <= 0:
                continue  # the end of an attempt in flight wakes the loop
            name = target.config.name
            for row in queue.due(
                self.ledger, name, now, exclude=sorted(target.inflight), limit=free
            ):
                self._start(target, row)
            if len(target.inflight) >= capacity:
                continue
            due = queue.next_due(self.ledger, name, exclude=sorted(target.inflight))
            if due is not None:
                wait = min(wait, max(0.0, due - now))
        return max(0.01, wait)

    async def settle(self) -> None:
        """Wait until no attempt is in flight (tests; a step starts them)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _start(self, target: _Target, row: Pending) -> None:
        target.inflight.add(row.event_id)
        task = asyncio.create_task(
            self._attempt(target, row), name=f"watchd-notify-{target.config.name}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, target: _Target, row: Pending) -> None:
        name = target.config.name
        try:
            answer = await target.sender.send(Message(row.msg_id, row.type, row.body))
            self._record(target, row, answer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notify %s: an attempt failed unexpectedly", name)
            target.held_until = self.clock.now() + target.backoff.delay(row.attempts + 1, self._rnd)
        finally:
            target.inflight.discard(row.event_id)
            self.wake()

    def _record(self, target: _Target, row: Pending, answer: Answer) -> None:
        name = target.config.name
        now = self.clock.now()
        outcome = "delivered"
        with self.ledger.relaxed(), self.ledger.transaction() as conn:
            if answer.ok:
                queue.delivered(conn, row, answer.status, now)
                target.held_until = 0.0
            else:
                attempt = row.attempts + 1
                wait = target.backoff.wait(attempt, answer.retry_after, self._rnd)
                expired = now - row.created_at >= target.backoff.give_up
                next_at = None if expired else now + wait
                gone = target.config.fingerprint if answer.gone else None
                queue.failed(conn, row, answer.status, answer.detail, now, next_at, gone=gone)
                target.held_until = now + wait
                outcome = "gone" if answer.gone else "gave_up" if expired else "failed"
        if answer.ok:
            log.debug("notify %s: %s %s sent (%s)", name, row.type, row.msg_id, answer.status)
        elif answer.gone:
            target.gone = True
            log.error(
                "notify %s: answered 410 Gone; nothing more is sent to it until its [[notify]] "
                "config changes",
                name,
            )
        elif outcome == "gave_up":
            log.error(
                "notify %s: gave up on %s %s after %d attempts over %.0f h: %s %s",
                name,
                row.type,
                row.msg_id,
                row.attempts + 1,
                (now - row.created_at) / 3600,
                answer.status,
                answer.detail,
            )
        else:
            log.warning(
                "notify %s: %s %s not delivered (attempt %d): %s %s; next try in %.0fs",
                name,
                row.type,
                row.msg_id,
                row.attempts + 1,
                answer.status,
                answer.detail,
                target.held_until - now,
            )
        if self._on_result is not None:
            self._on_result(name, outcome)

    def _expire(self, now: float) -> None:
        horizon = max((t.backoff.give_up for t in self._targets.values()), default=0.0)
        horizon = max(horizon, queue.GIVE_UP_AFTER)
        with self.ledger.relaxed(), self.ledger.transaction() as conn:
            dropped = queue.drop_expired(conn, now - horizon)
        if dropped:
            log.warning(
                "notify: dropped %d event(s) never delivered within %.0f h", dropped, horizon / 3600
            )

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for sender in retired:
            with contextlib.suppress(Exception):
                await sender.aclose()

    async def aclose(self) -> None:
        """Stop: attempts in flight are cancelled (their rows stay queued: sent again after a
        restart), senders closed."""
        self._closing = True
        self.wake()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._retired.extend(t.sender for t in self._targets.values())
        self._targets = {}
        await self._close_retired()

"""Is the daemon alive? The answer behind systemd's watchdog ping and ``/healthz``.

:meth:`Liveness.keep_alive` runs as a task on the daemon's event loop. Every half
``WatchdogSec`` (or every second without a watchdog) it notes that the loop ran, records the
ledger heartbeat (which ``watchd status`` reads, and which proves the ledger writable), and
sends ``WATCHDOG=1`` only while :meth:`Liveness.check` holds. Being a task on the loop is the
point: a loop blocked in some call sends nothing, and systemd restarts the service.

:meth:`check` is safe from any thread (the metrics server asks it from its own): the daemon is
alive while

* the loop responds (the keepalive task is not more than ``stall_limit`` late),
* the ledger can be written,
* every watched inbox's observer thread runs,
* no step of the main loop has hung for ``tick_stall_limit`` (a scan stuck in a thread on a
  share that stopped answering) nor failed ``max_failed_steps`` times in a row.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from watchd.clock import Clock

log = logging.getLogger("watchd.daemon")

PERIOD = 1.0  # the keepalive task runs at least this often
LEDGER_HEARTBEAT = 5.0  # how often the ledger records that we are alive
STALL_LIMIT = 10.0  # the event loop is unresponsive when the keepalive task is this late
# Generous: a full rescan of a large share over SMB can legitimately take minutes.
STEP_STALL_LIMIT = 600.0
MAX_FAILED_STEPS = 3


class _Observer(Protocol):
    def alive(self) -> bool: ...


class _Ledger(Protocol):
    def heartbeat(self, pid: int) -> None: ...


class Liveness:
    """The daemon's liveness. The limits are attributes so that tests can shrink them.

    ``notifier`` is a :class:`~watchd.service.notify.Notifier` (``watchdog_interval()``,
    ``watchdog()``); ``clock`` gives ``monotonic()``.
    """

    def __init__(self, notifier: Any, clock: Clock) -> None:
        self.notifier = notifier
        self.clock = clock
        self.stall_limit = STALL_LIMIT
        self.step_stall_limit = STEP_STALL_LIMIT
        self.max_failed_steps = MAX_FAILED_STEPS
        self.ledger_heartbeat = LEDGER_HEARTBEAT
        self.rounds = 0  # keepalive rounds so far (tests wait on it)
        self.pings = 0  # WATCHDOG=1 sent so far
        self.failed_steps = 0
        self._beat = clock.monotonic()
        self._step_started: float | None = None
        self._last_heartbeat: float | None = None
        self._ledger_ok = True
        self._last: tuple[bool, str] = (True, "ok")

    # ---- what the main loop reports ------------------------------------------------------

    def step_started(self) -> None:
        """A step (tick) of the main loop begins."""
        self._step_started = self.clock.monotonic()

    def step_finished(self, ok: bool) -> None:
        """The step ended, well or with an exception."""
        self._step_started = None
        self.failed_steps = 0 if ok else self.failed_steps + 1

    # ---- the answer ----------------------------------------------------------------------

    def check(self, observers: Iterable[tuple[str, _Observer | None]] = ()) -> tuple[bool, str]:
        """``(True, "ok")`` or ``(False, reason)``; ``observers`` are ``(inbox, observer)`` of
        the inboxes that should be watched now (not the paused ones)."""
        mono = self.clock.monotonic()
        late = mono - self._beat
        if late > self.stall_limit:
            return False, f"the event loop has not responded for {late:.0f}s"
        if not self._ledger_ok:
            return False, "the ledger is not writable"
        for inbox, observer in observers:
            if observer is not None and not observer.alive():
                return False, f"the observer for {inbox} is dead"
        if self.failed_steps >= self.max_failed_steps:
            return False, f"the last {self.failed_steps} steps of the main loop failed"
        started = self._step_started
        if started is not None and mono - started > self.step_stall_limit:
            return False, f"the main loop has been stuck in one step for {mono - started:.0f}s"
        return True, "ok"

    # ---- the task ------------------------------------------------------------------------

    async def keep_alive(
        self,
        ledger: Callable[[], _Ledger | None],
        observers: Callable[[], Iterable[tuple[str, _Observer | None]]],
    ) -> None:
        """Run until cancelled (see the module docstring). ``ledger`` and ``observers`` are
        read at every round: both change while the daemon starts and reloads."""
        interval = self.notifier.watchdog_interval()
        period = min(PERIOD, interval) if interval else PERIOD
        last_ping: float | None = None
        while True:
            mono = self.clock.monotonic()
            self._beat = mono
            self._heartbeat(ledger(), mono)
            ok, reason = self.check(observers())
            if ok != self._last[0]:
                if ok:
                    log.warning("healthy again; systemd watchdog pings resume")
                else:
                    log.error("unhealthy (%s): no systemd watchdog pings until it recovers", reason)
            self._last = (ok, reason)
            # A hair of slack: the sleep below may wake a little early.
            if interval and ok and (last_ping is None or mono - last_ping >= interval - 0.001):
                self.notifier.watchdog()
                self.pings += 1
                last_ping = mono
            self.rounds += 1
            await asyncio.sleep(period)

    def _heartbeat(self, ledger: _Ledger | None, mono: float) -> None:
        if ledger is None:
            return
        if self._last_heartbeat is not None and mono - self._last_heartbeat < self.ledger_heartbeat:
            return
        self._last_heartbeat = mono
        try:
            ledger.heartbeat(os.getpid())
        except Exception as e:
            if self._ledger_ok:
                log.error("the ledger is not writable: %s", e)
            self._ledger_ok = False
        else:
            if not self._ledger_ok:
                log.warning("the ledger is writable again")
            self._ledger_ok = True

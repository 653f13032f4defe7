"""Liveness.check on a fake clock: each cause of "not alive", and the keepalive task's pings."""

from __future__ import annotations

import asyncio

import pytest

from watchd.clock import FakeClock
from watchd.service.liveness import Liveness


class Notifier:
    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self.pings = 0

    def watchdog_interval(self) -> float | None:
        return self.interval

    def watchdog(self) -> bool:
        self.pings += 1
        return True


class Observer:
    def __init__(self, alive: bool) -> None:
        self._alive = alive

    def alive(self) -> bool:
        return self._alive


class Ledger:
    def __init__(self) -> None:
        self.writable = True
        self.beats: list[int] = []

    def heartbeat(self, pid: int) -> None:
        if not self.writable:
            raise OSError("attempt to write a readonly database")
        self.beats.append(pid)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_fresh_liveness_is_alive(clock: FakeClock) -> None:
    assert Liveness(Notifier(None), clock).check() == (True, "ok")


def test_a_late_loop(clock: FakeClock) -> None:
    live = Liveness(Notifier(None), clock)
    clock.advance(live.stall_limit + 1)
    ok, reason = live.check()
    assert not ok and reason == "the event loop has not responded for 11s"


def test_a_dead_observer(clock: FakeClock) -> None:
    live = Liveness(Notifier(None), clock)
    assert live.check([("/in/a", Observer(True)), ("/in/b", None)]) == (True, "ok")
    assert live.check([("/in/a", Observer(False))]) == (False, "the observer for /in/a is dead")


def test_a_step_stuck_or_failing(clock: FakeClock) -> None:
    live = Liveness(Notifier(None), clock)
    live.step_started()
    clock.advance(live.step_stall_limit - 1)
    live._beat = clock.monotonic()  # the loop itself still responds (a thread is stuck)
    assert live.check()[0]
    clock.advance(2)
    live._beat = clock.monotonic()
    assert live.check() == (False, "the main loop has been stuck in one step for 601s")
    live.step_finished(False)
    live.step_started()
    live.step_finished(False)
    assert live.check()[0]
    live.step_started()
    live.step_finished(False)
    assert live.check() == (False, "the last 3 steps of the main loop failed")
    live.step_started()
    live.step_finished(True)
    assert live.check() == (True, "ok")


async def test_keep_alive_pings_only_while_alive(clock: FakeClock) -> None:
    notifier, ledger = Notifier(0.01), Ledger()
    live = Liveness(notifier, clock)
    live.ledger_heartbeat = 0
    observers = [("/in", Observer(True))]
    task = asyncio.create_task(live.keep_alive(lambda: ledger, lambda: observers))
    try:

        async def rounds(n: int) -> None:
            target = live.rounds + n
            while live.rounds < target:
                await asyncio.sleep(0.001)
                clock.advance(0.01)

        await rounds(3)
        assert notifier.pings >= 2 and ledger.beats
        ledger.writable = False
        await rounds(2)
        before = notifier.pings
        await rounds(5)
        assert notifier.pings == before
        assert live.check() == (False, "the ledger is not writable")
        ledger.writable = True
        await rounds(3)
        assert notifier.pings > before
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

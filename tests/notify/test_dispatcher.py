"""The dispatcher with a fake clock and scripted senders: what is sent when, what is kept."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.notify.test_recorder import attach, new_job, notifier, queued
from watchd.clock import FakeClock
from watchd.ledger.db import Ledger
from watchd.notify import queue
from watchd.notify.config import NotifierConfig
from watchd.notify.dispatcher import Dispatcher
from watchd.notify.queue import Backoff
from watchd.notify.senders import Answer, Message


class Scripted:
    """Answers from ``script(message, n)``; records every message."""

    def __init__(self, script: Callable[[Message, int], Answer]) -> None:
        self.script = script
        self.sent: list[Message] = []

    async def send(self, message: Message) -> Answer:
        self.sent.append(message)
        return self.script(message, len(self.sent) - 1)

    async def aclose(self) -> None:
        pass


def make(
    ledger: Ledger, configs: list[NotifierConfig], script: Callable[[Message, int], Answer]
) -> tuple[Dispatcher, dict[str, Scripted]]:
    senders: dict[str, Scripted] = {}

    def factory(c: NotifierConfig) -> Scripted:
        senders[c.name] = Scripted(script)
        return senders[c.name]

    d = Dispatcher(
        ledger,
        configs,
        clock=ledger.clock,
        sender_factory=factory,
        backoff=lambda c: Backoff(first=1.0, maximum=8.0, give_up=100.0),
        rnd=random.Random(1),
    )
    return d, senders


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(clock=FakeClock())


def clock(ledger: Ledger) -> FakeClock:
    c = ledger.clock
    assert isinstance(c, FakeClock)
    return c


async def test_success_removes_the_row(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    d, senders = make(ledger, [cfg], lambda m, n: Answer(True, "200"))
    await d.step()
    await d.settle()
    assert [m.type for m in senders["a"].sent] == ["job.queued"]
    assert queued(ledger) == [] and queue.failing_notifiers(ledger) == []
    assert await d.step() == 30.0  # nothing due: the idle wait


async def test_failures_back_off_hold_the_notifier_and_keep_id_and_body(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    for i in range(3):
        new_job(ledger, f"x{i}.mp4")
    d, senders = make(ledger, [cfg], lambda m, n: Answer(n >= 3, "200" if n >= 3 else "500"))
    await d.step()
    await d.settle()
    # Three in flight at once; all failed: the notifier is held, one probe at a time after.
    assert len(senders["a"].sent) == 3
    wait = await d.step()
    assert 0.5 <= wait <= 1.0
    assert len(senders["a"].sent) == 3
    clock(ledger).advance(wait)
    await d.step()
    await d.settle()
    assert len(senders["a"].sent) == 4
    first = senders["a"].sent[0]
    retried = [m for m in senders["a"].sent if m.msg_id == first.msg_id]
    assert len(retried) == 2 and retried[0].body == retried[1].body
    clock(ledger).advance(10)
    await d.step()
    await d.settle()
    assert len(queued(ledger)) == 0 and len(senders["a"].sent) == 6


async def test_retry_after_is_honoured(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    d, _ = make(ledger, [cfg], lambda m, n: Answer(False, "429", retry_after=42.0))
    await d.step()
    await d.settle()
    assert await d.step() == 30.0  # the longest sleep; it looks again then
    assert queue.next_due(ledger, "a") == pytest.approx(clock(ledger).now() + 42.0)


async def test_410_stops_until_the_config_changes(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    d, senders = make(
        ledger, [cfg], lambda m, n: Answer(n > 0, "410" if n == 0 else "200", gone=n == 0)
    )
    await d.step()
    await d.settle()
    clock(ledger).advance(100)
    new_job(ledger, "y.mp4")
    await d.step()
    await d.settle()
    assert len(senders["a"].sent) == 1
    assert queue.failing_notifiers(ledger)[0].gone
    # Same config again (a reload that changed nothing else): still stopped.
    d.configure([cfg])
    await d.step()
    await d.settle()
    assert len(senders["a"].sent) == 1
    changed = replace(cfg, command=("/bin/echo",), fingerprint="other")
    d.configure([changed])
    await d.step()
    await d.settle()
    assert len(senders["a"].sent) == 2  # the new sender's first (script restarts at n=0)
    assert queue.gone_fingerprints(ledger) in ({}, {"a": "other"})


async def test_gives_up_after_the_give_up_time(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    results: list[tuple[str, str]] = []
    d, _ = make(ledger, [cfg], lambda m, n: Answer(False, "500"))
    d._on_result = lambda name, outcome: results.append((name, outcome))
    for _ in range(30):
        await d.step()
        await d.settle()
        clock(ledger).advance(8)
        if not queued(ledger):
            break
    assert queued(ledger) == []
    assert results[-1] == ("a", "gave_up") and results[0] == ("a", "failed")


async def test_a_removed_notifier_is_not_sent_to(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    d, senders = make(ledger, [], lambda m, n: Answer(True, "200"))
    await d.step()
    await d.settle()
    assert senders == {} and len(queued(ledger)) == 1


async def test_a_notifier_removed_from_the_config_is_no_longer_reported(ledger: Ledger) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    new_job(ledger)
    d, _ = make(ledger, [cfg], lambda m, n: Answer(False, "500"))
    await d.step()
    await d.settle()
    assert [h.name for h in queue.failing_notifiers(ledger)] == ["a"]
    d.configure([])
    assert queue.failing_notifiers(ledger) == []
    await d.aclose()


async def test_no_busy_loop_while_a_failing_notifier_has_its_probe_in_flight(
    ledger: Ledger,
) -> None:
    cfg = notifier("a")
    attach(ledger, cfg)
    for i in range(3):
        new_job(ledger, f"x{i}.mp4")
    release = asyncio.Event()

    class Hanging(Scripted):
        async def send(self, message: Message) -> Answer:
            self.sent.append(message)
            if len(self.sent) > 3:
                await release.wait()
            return Answer(False, "500")

    hanging = Hanging(lambda m, n: Answer(False, "500"))
    d = Dispatcher(
        ledger,
        [cfg],
        clock=ledger.clock,
        sender_factory=lambda c: hanging,
        backoff=lambda c: Backoff(first=1.0, maximum=8.0),
    )
    await d.step()
    await d.settle()
    clock(ledger).advance(10)
    await d.step()  # the probe starts and hangs
    await asyncio.sleep(0)
    assert len(hanging.sent) == 4
    assert await d.step() == 30.0  # the other rows are due, but it waits for the probe's end
    release.set()
    await d.settle()
    await d.aclose()

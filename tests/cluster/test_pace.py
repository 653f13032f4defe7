"""Shared pacing and the shared processing limit: several hosts (each its own PgLedger on one
database) keep one workspace's pace, on the database's clock.

Windows are shrunk to fractions of a second where a test waits them out; the others keep the
minute and move only this host's clock (a FakeClock), which is all ``wait_time`` reads.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest

from watchd.clock import FakeClock, SystemClock
from watchd.cluster.errors import DatabaseUnavailable
from watchd.cluster.pace import SharedBucket, SharedProcessingLimit, shared_buckets
from watchd.ledger.pg import PgLedger
from watchd.pipeline.scheduler import ProcessingLimit


class RecordingClock(SystemClock):
    """The real clock, noting what it was asked to sleep."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def bucket(ledger: PgLedger, owner: str, per_minute: float = 5, **kwargs: Any) -> SharedBucket:
    kwargs.setdefault("clock", FakeClock())
    return SharedBucket(ledger, "ws-1", "creates", per_minute, owner=owner, **kwargs)


def call_times(url: str) -> list[float]:
    """Every recorded call, in seconds on the database's clock, oldest first."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT extract(epoch FROM at)::float8 FROM pace_calls ORDER BY at")
        return [t for (t,) in rows.fetchall()]


def test_capacity_then_refused_and_wait_time_from_the_last_read(hosts: list[PgLedger]) -> None:
    clock = FakeClock()
    b = bucket(hosts[0], "a", clock=clock)
    assert (b.capacity, b.window) == (5, 61.0)
    assert [b.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    # The database's clock moved a few ms meanwhile; this host's did not.
    assert b.wait_time() == pytest.approx(61, abs=0.5)
    clock.advance(30)
    assert b.wait_time() == pytest.approx(31, abs=0.5)  # no database access: the last read
    clock.advance(40)
    assert b.wait_time() == 0


def test_hosts_share_the_capacity(hosts: list[PgLedger]) -> None:
    a, b, c = (bucket(lg, name) for lg, name in zip(hosts, "abc", strict=True))
    assert [a.try_acquire() for _ in range(2)] == [True, True]
    assert [b.try_acquire() for _ in range(2)] == [True, True]
    assert c.try_acquire()
    assert not a.try_acquire() and not b.try_acquire() and not c.try_acquire()
    assert c.wait_time() == pytest.approx(61, abs=0.5)


def test_other_workspaces_and_operations_have_their_own_pace(hosts: list[PgLedger]) -> None:
    a = bucket(hosts[0], "a", per_minute=1)
    other_ws = SharedBucket(hosts[1], "ws-2", "creates", 1, clock=FakeClock(), owner="b")
    exports = SharedBucket(hosts[1], "ws-1", "exports", 1, clock=FakeClock(), owner="b")
    assert a.try_acquire() and other_ws.try_acquire() and exports.try_acquire()
    assert not a.try_acquire()


def test_a_429_on_one_host_holds_every_host(hosts: list[PgLedger]) -> None:
    a, b = bucket(hosts[0], "a"), bucket(hosts[1], "b")
    a.block_for(30)
    assert a.wait_time() == pytest.approx(30, abs=0.1)
    assert not b.try_acquire()
    assert b.wait_time() == pytest.approx(30, abs=0.5)
    b.block_for(5)  # a shorter hold never shortens a longer one
    assert not a.try_acquire()
    assert a.wait_time() == pytest.approx(30, abs=0.5)


def test_unlimited_records_nothing_but_shares_holds(hosts: list[PgLedger], pg_url: str) -> None:
    a, b = bucket(hosts[0], "a", per_minute=0), bucket(hosts[1], "b", per_minute=0)
    assert a.unlimited
    assert all(a.try_acquire() for _ in range(20))
    assert call_times(pg_url) == []
    b.block_for(10)
    assert not a.try_acquire()


def test_give_back_frees_this_hosts_latest_call_for_everyone(
    hosts: list[PgLedger], pg_url: str
) -> None:
    a, b = bucket(hosts[0], "a", per_minute=2), bucket(hosts[1], "b", per_minute=2)
    assert a.try_acquire() and b.try_acquire()
    assert not b.try_acquire()
    b.give_back()
    assert a.try_acquire()
    a.give_back()
    a.give_back()
    b.give_back()  # none left of b's: nothing of a's is taken
    assert call_times(pg_url) == []
    assert a.try_acquire() and b.try_acquire() and not a.try_acquire()


async def test_acquire_sleeps_the_wait_then_takes(hosts: list[PgLedger]) -> None:
    clock = RecordingClock()
    b = bucket(hosts[0], "a", per_minute=2, clock=clock, window=0.3, margin=0.05)
    assert await b.acquire() < 0.1
    assert await b.acquire() < 0.1
    waited = await b.acquire()
    assert 0.3 <= waited < 1.0
    assert clock.sleeps and clock.sleeps[0] == pytest.approx(0.35, abs=0.05)


def test_concurrent_hosts_never_exceed_capacity_in_any_window(
    hosts: list[PgLedger], pg_url: str
) -> None:
    per_host, capacity = 5, 4
    buckets = [
        bucket(lg, f"host-{i}", per_minute=capacity, clock=SystemClock(), window=0.4, margin=0.05)
        for i, lg in enumerate(hosts)
    ]
    start = threading.Barrier(len(buckets))
    errors: list[BaseException] = []

    def host(b: SharedBucket) -> None:
        async def run() -> None:
            # Two tasks per host, as jobs of one daemon asking at once.
            async def job(n: int) -> None:
                for _ in range(n):
                    await b.acquire()

            await asyncio.gather(job(per_host // 2), job(per_host - per_host // 2))

        start.wait()
        try:
            asyncio.run(run())
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=host, args=(b,)) for b in buckets]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    times = call_times(pg_url)
    assert len(times) == per_host * len(buckets)
    window = buckets[0].window
    # Any capacity + 1 consecutive calls span at least a window.
    assert all(times[i + capacity] - times[i] >= window for i in range(len(times) - capacity))
    # ...and the pace is kept, not crawled: 15 calls at 4 per 0.45 s need 3 windows.
    assert time.monotonic() - began < 3 * window + 2.0


def test_the_database_unreachable_is_database_unavailable(
    hosts: list[PgLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bucket(hosts[0], "a")

    def down(statements: object) -> list[tuple[Any, ...]]:
        raise psycopg.OperationalError("connection to server at 127.0.0.1 failed: refused")

    monkeypatch.setattr(hosts[0], "run_alone", down)
    with pytest.raises(DatabaseUnavailable, match=r"pacing creates: .*cannot be reached"):
        b.try_acquire()
    with pytest.raises(DatabaseUnavailable):
        b.block_for(10)
    assert b.wait_time() == pytest.approx(10)  # this host holds back all the same


def test_a_factory_builds_buckets_with_one_owner_per_process(hosts: list[PgLedger]) -> None:
    make = shared_buckets(hosts[0], window=1.0, margin=0.0)
    creates = make("ws-1", "creates", 2, FakeClock())
    assert isinstance(creates, SharedBucket)
    assert (creates.capacity, creates.window, creates.per_minute) == (2, 1.0, 2)
    exports = make("ws-1", "exports", 2, FakeClock())
    assert isinstance(exports, SharedBucket)
    assert creates._owner == exports._owner


def test_the_processing_limit_learned_by_one_host_holds_for_all(hosts: list[PgLedger]) -> None:
    clock = FakeClock()
    shared = [SharedProcessingLimit(lg, "ws-1", clock=clock, max_age=5) for lg in hosts[:2]]
    one, two = (ProcessingLimit(tier=None, shared=s) for s in shared)
    assert one.effective() is None and two.effective() is None
    assert one.learn(3)
    assert not one.learn(4)
    assert two.effective() is None  # read at most every max_age
    clock.advance(5)
    assert two.effective() == 3
    assert two.learn(2)
    assert one.effective() == 2 and one.learned == 2
    assert not one.learn(2)
    other = SharedProcessingLimit(hosts[2], "ws-2", clock=clock)
    assert other.get() is None
    # A configured limit wins and reads nothing.
    assert ProcessingLimit(configured=5, shared=shared[0]).effective() == 5


def test_a_learned_limit_is_forgotten_after_a_while(hosts: list[PgLedger], pg_url: str) -> None:
    clock = FakeClock()
    limit = SharedProcessingLimit(hosts[0], "ws-1", clock=clock, max_age=0, forget_after=3600)
    assert limit.lower(1)
    assert limit.get() == 1
    with psycopg.connect(pg_url) as conn:  # learned two hours ago, on the database's clock
        conn.execute("UPDATE learned_limits SET learned_at = learned_at - interval '2 hours'")
    assert limit.get() is None
    assert limit.lower(2)  # a forgotten value is replaced, even by a higher one
    assert limit.get() == 2


def test_a_decision_inside_a_ledger_batch_commits_alone(hosts: list[PgLedger]) -> None:
    a, b = bucket(hosts[0], "a", per_minute=1), bucket(hosts[1], "b", per_minute=1)
    with hosts[0].batch():
        hosts[0].heartbeat(1)
        assert a.try_acquire()
        assert not b.try_acquire()  # committed already, while the batch is still open
        hosts[0].heartbeat(2)  # the batch goes on, on its own connection...
        assert hosts[1].last_heartbeat() is None  # ...uncommitted till it ends
    assert (hosts[1].last_heartbeat() or {}).get("pid") == 2

"""The lease keeper (watchd/cluster/lease.py): renewals on time, and the gate every request and
stage passes first. This host's time is a FakeClock (only the gate's "time left" reads it); the
leases themselves run on the database's clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.cluster.conftest import NodeFactory
from tests.cluster.test_ledger import NOW, add, lapse, lease, sql
from watchd.clock import FakeClock
from watchd.cluster.context import CURRENT_JOB
from watchd.cluster.errors import DatabaseUnavailable, LeaseLost
from watchd.cluster.lease import LeaseKeeper
from watchd.cluster.ledger import ClusterLedger


def counting_renewals(node: ClusterLedger, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What each of the node's renewals returned, in order."""
    done: list[list[str]] = []
    real = node.renew

    def renew() -> list[str]:
        lost = real()
        done.append(lost)
        return lost

    monkeypatch.setattr(node, "renew", renew)
    return done


@contextmanager
def working_on(job_id: str) -> Iterator[None]:
    token = CURRENT_JOB.set(job_id)  # as the runner's task for the job does
    try:
        yield
    finally:
        CURRENT_JOB.reset(token)


def seconds_left(url: str, job_id: str) -> float:
    ((left,),) = sql(
        url,
        "SELECT EXTRACT(EPOCH FROM lease_until - now())::float8 FROM jobs WHERE id = %s",
        (job_id,),
    )
    return float(left)


def registered(make_node: NodeFactory) -> tuple[FakeClock, ClusterLedger, LeaseKeeper]:
    """A node with 30 s leases, its clock and its keeper."""
    clock = FakeClock()
    node = make_node("suite-1", lease_seconds=30, clock=clock)
    node.register("0.test")
    return clock, node, LeaseKeeper(node, clock)


async def test_the_gate_renews_only_when_the_lease_runs_short(
    pg_url: str, make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, a, keeper = registered(make_node)
    renewals = counting_renewals(a, monkeypatch)
    job = add(a, "a.mov")
    sql(
        pg_url,
        "UPDATE jobs SET lease_until = now() + interval '12 seconds' WHERE id = %s",
        (job.id,),
    )

    await keeper.gate()
    clock.advance(19)  # 11 s left: more than a third of the lease
    await keeper.gate()
    assert renewals == [] and a.lease_left() == 11
    clock.advance(2)  # 9 s left: a call might outlast it
    await keeper.gate()
    assert renewals == [[]]
    assert a.lease_left() == 30 and not keeper.must_renew
    assert 25 < seconds_left(pg_url, job.id) <= 30
    await keeper.gate()
    assert len(renewals) == 1


async def test_a_process_frozen_past_its_lease_renews_before_anything_and_drops_what_it_lost(
    pg_url: str, make_node: NodeFactory
) -> None:
    clock = FakeClock()
    a, b = make_node("suite-1", lease_seconds=30, clock=clock), make_node("suite-2")
    lost: list[str] = []
    keeper = LeaseKeeper(a, clock, on_lost=lost.append)
    taken, kept = add(a, "taken.mov"), add(a, "kept.mov")
    lapse(pg_url, taken.id)
    lapse(pg_url, kept.id)
    assert [j.id for j in b.claim([taken.id])] == [taken.id]  # suite-2 came to one of them

    clock.advance(45)  # SIGSTOP, SIGCONT
    with working_on(kept.id):
        await keeper.gate()  # renewed first: still suite-1's
    assert lost == [taken.id] and a.held.keys() == {kept.id}
    assert lease(pg_url, kept.id)[::2] == ("suite-1", "held")
    with working_on(taken.id), pytest.raises(LeaseLost, match=f"job {taken.id} is now held"):
        await keeper.gate()
    await keeper.gate()  # a request for no job in particular (a listing): goes


async def test_the_gate_refuses_the_job_of_a_task_whose_lease_was_lost(
    pg_url: str, make_node: NodeFactory
) -> None:
    clock = FakeClock()
    a, b = make_node("suite-1", clock=clock), make_node("suite-2")
    keeper = LeaseKeeper(a, clock)
    job = add(a, "a.mov")
    with working_on(job.id):
        await keeper.gate()
    lapse(pg_url, job.id)
    b.due_ids(NOW)
    with pytest.raises(LeaseLost):
        a.update(job.id, progress=0.5)  # the write that found out
    with working_on(job.id), pytest.raises(LeaseLost):
        await keeper.gate()  # nothing more is sent for it


async def test_the_gate_holds_everything_back_while_the_leases_cannot_be_renewed(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    a = make_node("suite-1", lease_seconds=30, clock=clock)
    told: list[bool] = []
    keeper = LeaseKeeper(a, clock, on_database=told.append)
    job = add(a, "a.mov")
    real = a.renew

    def unreachable() -> list[str]:
        raise DatabaseUnavailable("the ledger database postgresql://db/watchd cannot be reached")

    monkeypatch.setattr(a, "renew", unreachable)
    clock.advance(25)
    with working_on(job.id), pytest.raises(DatabaseUnavailable, match="nothing is sent"):
        await keeper.gate()
    with pytest.raises(DatabaseUnavailable):
        await keeper.gate()
    assert told == [False] and (keeper.database_up, keeper.failures) == (False, 2)
    monkeypatch.setattr(a, "renew", real)
    with working_on(job.id):
        await keeper.gate()
    assert told == [False, True] and (keeper.database_up, keeper.failures) == (True, 0)


async def test_a_database_that_stops_answering_holds_the_gate_until_it_is_back(
    pg_url: str, make_node: NodeFactory
) -> None:
    clock = FakeClock()
    a = make_node("suite-1", lease_seconds=30, clock=clock, connect_timeout=1)
    told: list[bool] = []
    keeper = LeaseKeeper(a, clock, on_database=told.append)
    job = add(a, "a.mov")
    dbname = pg_url.rsplit("/", 1)[1]
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"

    def connections(allowed: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS {allowed}")
            if not allowed:  # and the node's open connections are cut
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name = 'carmic-watchd'",
                    (dbname,),
                )

    connections(False)
    try:
        clock.advance(25)
        with working_on(job.id), pytest.raises(DatabaseUnavailable):
            await keeper.gate()
        assert told == [False]
    finally:
        connections(True)
    for _ in range(60):  # the pool connects again with its own backoff
        if await keeper.renew():
            break
        await asyncio.sleep(0.5)
    with working_on(job.id):
        await keeper.gate()
    assert told == [False, True] and a.holds(job.id)
    assert lease(pg_url, job.id)[::2] == ("suite-1", "held")


async def test_the_keeper_renews_every_third_of_a_lease(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock, a, keeper = registered(make_node)
    renewals = counting_renewals(a, monkeypatch)
    task = asyncio.create_task(keeper.run())
    try:
        for _ in range(1000):
            if len(renewals) >= 3:
                break
            await asyncio.sleep(0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(renewals) >= 3
    assert clock.sleeps[:3] == [10.0, 10.0, 10.0]

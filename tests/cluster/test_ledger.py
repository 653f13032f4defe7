"""The cluster's ledger (watchd/cluster/ledger.py): claims, leases and fencing between nodes.

Each node is a ClusterLedger of its own (its own connection pool, its own SQLite ledger) on one
database: several hosts in one process. What another host or an operator does behind a node's
back is written with SQL on a connection of the test's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from tests.cluster.conftest import NodeFactory
from tests.cluster.helpers import add_node
from watchd.cluster.errors import LeaseLost
from watchd.cluster.ledger import ClusterLedger, TakenElsewhere
from watchd.ledger.db import JobRow, LedgerError
from watchd.ledger.pg import PgLedger
from watchd.ledger.states import IllegalTransition, Stage

NOW = 1_800_000_000.0  # FakeClock's start: every job is due by then


def add(node: PgLedger, rel: str, *, inbox: str = "studio-a", fp: str | None = None) -> JobRow:
    return node.add_job(
        inbox=inbox, rel_path=rel, path=f"/mnt/nas/{inbox}/{rel}", rule="", preset={},
        size=10, mtime_ns=1, inode=1, dev=1, fingerprint=fp or f"fp-{rel}",
    )  # fmt: skip


def clip(clip_id: str, rank: int) -> dict[str, Any]:
    return {
        "clip_id": clip_id, "rank": rank, "title": f"clip {rank}", "start_time": 0.0,
        "end_time": 5.0, "virality_score": 0.5, "reasoning": "", "selected": 1,
        "state": "pending",
    }  # fmt: skip


def sql(url: str, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def lease(url: str, job_id: str) -> tuple[str | None, int | None, str]:
    """The job's node, fencing token, and its lease: "held", "lapsed" or "free" (NULL)."""
    ((node, token, state),) = sql(
        url,
        "SELECT node, lease_token, CASE WHEN lease_until IS NULL THEN 'free' "
        "WHEN lease_until > now() THEN 'held' ELSE 'lapsed' END FROM jobs WHERE id = %s",
        (job_id,),
    )
    return node, token, state


def lapse(url: str, job_id: str) -> None:
    """The job's lease ran out (its node froze, died or lost the database)."""
    sql(url, "UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = %s", (job_id,))


def everything(url: str, job_id: str) -> list[Any]:
    """Every row the ledger keeps for the job: a write that was refused changes none."""
    return [
        sql(url, f"SELECT * FROM {table} WHERE {key} = %s ORDER BY 1, 2", (job_id,))
        for table, key in (("jobs", "id"), ("clips", "job_id"), ("exports", "job_id"))
    ] + [sql(url, "SELECT * FROM events WHERE job_id = %s ORDER BY id", (job_id,))]


def losses(node: ClusterLedger) -> list[str]:
    """The jobs the node is told it lost, in order (the runner cancels their tasks)."""
    lost: list[str] = []
    node.on_lost = lost.append
    return lost


def park(node: ClusterLedger, job_id: str) -> JobRow:
    """The job waits on billing minutes, re-checked in an hour."""
    return node.transition(
        job_id, Stage.PARKED, park_reason="billing", resume_stage="queued",
        next_attempt_at=NOW + 3600,
    )  # fmt: skip


def ids(rows: list[tuple[str, str, str]]) -> set[str]:
    return {r[0] for r in rows}


@contextmanager
def counting_queries(node: ClusterLedger) -> Iterator[list[int]]:
    """Counts the connections the node takes from its pool (every statement outside a
    transaction of this thread takes one)."""
    taken = [0]
    real = node._pool.connection

    def connection(*args: Any, **kwargs: Any) -> Any:
        taken[0] += 1
        return real(*args, **kwargs)

    node._pool.connection = connection  # type: ignore[method-assign]
    try:
        yield taken
    finally:
        del node._pool.connection


def due(node: ClusterLedger, *, idle_only: bool = False) -> list[tuple[str, str, str]]:
    """The node's due jobs after a look at the database (as when a lease lapses or another
    node wakes it; between looks, due_ids answers from the jobs the node holds)."""
    node.look_again()
    return node.due_ids(NOW, idle_only=idle_only)


# ---- claiming a file -----------------------------------------------------------------------


def test_two_nodes_adding_one_file_make_one_job(pg_url: str, make_node: NodeFactory) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    job = add(a, "day1/a001.mov")
    assert a.holds(job.id) and job.node == "suite-1"
    assert lease(pg_url, job.id)[::2] == ("suite-1", "held")
    with pytest.raises(TakenElsewhere, match=f"taken by job {job.id} of node suite-1"):
        add(b, "day1/a001.mov")
    assert not b.holds(job.id)
    assert sql(pg_url, "SELECT id FROM jobs") == [(job.id,)]
    assert sql(pg_url, "SELECT count(*) FROM events WHERE kind = 'discovered'") == [(1,)]
    # Another file (another fingerprint at the same path) is a job of its own.
    assert add(b, "day1/a001.mov", fp="fp-other").node == "suite-2"


def at_once(work: Callable[[ClusterLedger], None], nodes: list[ClusterLedger]) -> None:
    """``work(node)`` for every node, each in a thread of its own, started together."""
    start = threading.Barrier(len(nodes))

    def run(node: ClusterLedger) -> None:
        start.wait()
        work(node)

    threads = [threading.Thread(target=run, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_nodes_adding_one_file_at_once_make_one_job(pg_url: str, make_node: NodeFactory) -> None:
    nodes = [make_node(f"suite-{i}") for i in range(3)]
    for round_ in range(5):
        won: list[JobRow] = []
        refused: list[str] = []

        def add_one(node: ClusterLedger, rel: str = f"clip{round_}.mov") -> None:
            try:
                won.append(add(node, rel))  # noqa: B023 - run before the next round
            except TakenElsewhere:
                refused.append(node.node)  # noqa: B023

        at_once(add_one, nodes)
        assert len(won) == 1 and len(refused) == 2
        assert [n.holds(won[0].id) for n in nodes].count(True) == 1
    assert sql(pg_url, "SELECT count(*) FROM jobs") == [(5,)]


# ---- a lapsed lease: taken over, the old holder fenced ----------------------------------------

WRITES: dict[str, Callable[[ClusterLedger, str], object]] = {
    "transition": lambda n, j: n.transition(j, Stage.PROBED, duration=12.5),
    "update": lambda n, j: n.update(j, progress=0.5, step="hashing"),
    "put_clips": lambda n, j: n.put_clips(j, [clip("c2", 2)]),
    "update_clip": lambda n, j: n.update_clip(j, "c1", state="rendered", progress=1.0),
    "put_export": lambda n, j: n.put_export(j, "c1", "fcpxml", export_id="x-1", state="ready"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_lapsed_lease_is_taken_over_and_the_old_holder_writes_nothing(
    pg_url: str, make_node: NodeFactory, write: str
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    lost = losses(a)
    job = add(a, "a001.mov")
    a.put_clips(job.id, [clip("c1", 1)])
    a.put_export(job.id, "c1", "fcpxml")
    _, old_token, _ = lease(pg_url, job.id)

    assert due(b) == []  # held by suite-1: not b's to claim
    lapse(pg_url, job.id)  # suite-1 froze past its lease
    assert due(b) == [(job.id, "queued", "studio-a")]
    node, token, state = lease(pg_url, job.id)
    assert (node, state) == ("suite-2", "held") and token != old_token
    assert a.holds(job.id)  # suite-1 does not know yet

    before = everything(pg_url, job.id)
    with pytest.raises(LeaseLost, match="taken over"):
        WRITES[write](a, job.id)
    assert everything(pg_url, job.id) == before
    assert not a.holds(job.id) and lost == [job.id]
    # From then on refused before asking the database; the new holder writes.
    with pytest.raises(LeaseLost, match="not held by node suite-1"):
        WRITES[write](a, job.id)
    WRITES[write](b, job.id)
    assert everything(pg_url, job.id) != before


def test_renew_pushes_out_the_leases_held_and_reports_the_ones_taken_over(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1", lease_seconds=30), make_node("suite-2")
    a.register("0.test")
    lost = losses(a)
    kept, taken, frozen = add(a, "kept.mov"), add(a, "taken.mov"), add(a, "frozen.mov")
    sql(
        pg_url,
        "UPDATE jobs SET lease_until = now() + interval '1 second' WHERE id = %s",
        (kept.id,),
    )
    lapse(pg_url, taken.id)
    assert ids(due(b)) == {taken.id}
    lapse(pg_url, frozen.id)  # lapsed, but no node claimed it: still suite-1's token

    assert a.renew() == [taken.id]
    assert lost == [taken.id]
    assert a.held.keys() == {kept.id, frozen.id}
    assert lease(pg_url, taken.id)[::2] == ("suite-2", "held")
    (left,) = sql(
        pg_url,
        "SELECT min(EXTRACT(EPOCH FROM lease_until - now())) FROM jobs WHERE id = ANY(%s)",
        ([kept.id, frozen.id],),
    )
    assert 25 < left[0] <= 30
    assert sql(
        pg_url,
        "SELECT heartbeat_at > now() - interval '5 seconds', stopped_at "
        "FROM nodes WHERE name = 'suite-1'",
    ) == [(True, None)]
    a.update(frozen.id, progress=0.25)  # its token still stands: the write goes through
    assert a.renew() == []


def test_nodes_claiming_at_once_never_claim_one_job_twice(
    pg_url: str, make_node: NodeFactory
) -> None:
    seed = make_node("seed")
    jobs = {add(seed, f"clip{i:02}.mov").id for i in range(40)}
    seed.stop()
    nodes = [make_node(f"suite-{i}") for i in range(3)]
    for _ in range(4):
        got: dict[str, set[str]] = {n.node: set() for n in nodes}

        def claim_all(node: ClusterLedger) -> None:
            while True:  # CLAIM_BATCH at a time, until no job is left free
                before = len(node.held)
                due(node)
                got[node.node] |= node.held.keys()  # noqa: B023 - run before the next round
                if len(node.held) == before:
                    return

        at_once(claim_all, nodes)
        claimed = [got[n.node] for n in nodes]
        assert sum(map(len, claimed)) == len(jobs)
        assert set().union(*claimed) == jobs
        owners = dict(sql(pg_url, "SELECT id, node FROM jobs"))
        for n in nodes:
            assert all(owners[j] == n.node for j in got[n.node])
            n.stop()  # all free again for the next round
        assert sql(pg_url, "SELECT count(*) FROM jobs WHERE lease_until IS NOT NULL") == [(0,)]


# ---- a node's life ---------------------------------------------------------------------------


def test_stop_lets_the_jobs_held_go_and_marks_the_node_stopped(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    a.register("0.test")
    held = [add(a, "one.mov"), add(a, "two.mov")]
    gone = add(a, "gone.mov")
    lapse(pg_url, gone.id)
    assert ids(due(b)) == {gone.id}
    a.stop()
    assert a.held == {} and not a.holds(held[0].id)
    assert [lease(pg_url, j.id)[::2] for j in held] == [("suite-1", "free")] * 2
    assert lease(pg_url, gone.id)[::2] == ("suite-2", "held")  # not ours to let go
    assert sql(pg_url, "SELECT stopped_at IS NOT NULL FROM nodes WHERE name = 'suite-1'") == [
        (True,)
    ]
    assert ids(due(b)) == {gone.id, *(j.id for j in held)}  # at once, not after a lease


def test_register_refuses_a_name_live_on_another_host(pg_url: str, make_node: NodeFactory) -> None:
    a = make_node("suite-1")
    add_node(pg_url, "suite-1", "edit-bay-7", pid=321, age=2.0, lease=60)
    with pytest.raises(LedgerError, match='"suite-1" is in use by a live daemon on host edit-bay'):
        a.register("0.test")
    assert sql(pg_url, "SELECT host, pid FROM nodes") == [("edit-bay-7", 321)]


@pytest.mark.parametrize("other", ["dead", "stopped"])
def test_register_takes_a_name_whose_daemon_on_another_host_is_gone(
    pg_url: str, make_node: NodeFactory, other: str
) -> None:
    a = make_node("suite-1")
    add_node(
        pg_url,
        "suite-1",
        "edit-bay-7",
        age=120.0 if other == "dead" else 1.0,
        lease=60,
        stopped=other == "stopped",
    )
    a.register("0.test")
    assert sql(pg_url, "SELECT host, instance, stopped_at FROM nodes") == [
        (a.host, a.instance, None)
    ]


def test_register_lets_the_jobs_of_this_hosts_previous_run_go(
    pg_url: str, make_node: NodeFactory
) -> None:
    before = make_node("suite-1")
    before.register("0.test")
    job, done = add(before, "a.mov"), add(before, "b.mov")
    before.transition(done.id, Stage.FAILED, error="bad file")
    _, old_token, _ = lease(pg_url, job.id)
    # The daemon died (no stop): a new run of the same node on the same host.
    again = make_node("suite-1")
    assert again.instance != before.instance
    again.register("0.test")  # its heartbeat is fresh, but it is this host's: no refusal
    assert lease(pg_url, job.id) == ("suite-1", old_token, "free")
    assert sql(pg_url, "SELECT instance, stopped_at FROM nodes") == [(again.instance, None)]
    assert due(again) == [(job.id, "queued", "studio-a")]
    assert lease(pg_url, job.id)[1] != old_token
    with pytest.raises(LeaseLost):
        before.update(job.id, progress=0.5)  # were it still running, it could write nothing


# ---- operators and finished jobs ---------------------------------------------------------------


def test_an_operator_retry_of_a_parked_job_fences_its_holder(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    lost = losses(a)
    job = add(a, "a.mov")
    park(a, job.id)
    assert a.holds(job.id)  # a parked job stays its node's
    assert a.renew() == []
    operator = PgLedger(pg_url)  # `watchd retry` on any host
    try:
        assert operator.retry(job.id).stage is Stage.QUEUED
    finally:
        operator.close()
    _, token, state = lease(pg_url, job.id)
    assert state == "free" and token != a.held[job.id]
    before = everything(pg_url, job.id)
    with pytest.raises(LeaseLost):
        a.transition(job.id, Stage.QUEUED, expect=Stage.PARKED, kind="unpark")
    assert everything(pg_url, job.id) == before
    assert lost == [job.id] and not a.holds(job.id)
    assert due(b) == [(job.id, "queued", "studio-a")]


def test_renew_reports_a_job_an_operator_retried(pg_url: str, make_node: NodeFactory) -> None:
    a = make_node("suite-1")
    lost = losses(a)
    job = add(a, "a.mov")
    park(a, job.id)
    operator = PgLedger(pg_url)
    try:
        operator.retry(job.id)
    finally:
        operator.close()
    assert a.renew() == [job.id] and lost == [job.id]
    assert due(a) == [(job.id, "queued", "studio-a")]  # claimed again, a new token
    assert a.get(job.id) == a.require(job.id)


def test_a_nodes_own_retry_is_an_operators(pg_url: str, make_node: NodeFactory) -> None:
    a = make_node("suite-1")
    job = add(a, "a.mov")
    a.transition(job.id, Stage.FAILED, error="bad")
    assert a.retry(job.id, actor="dashboard").stage is Stage.QUEUED  # not fenced: not held
    assert not a.holds(job.id) and lease(pg_url, job.id)[2] == "free"
    assert due(a) == [(job.id, "queued", "studio-a")]


@pytest.mark.parametrize("path", [[Stage.FAILED], [Stage.DUPLICATE, Stage.DELIVERED]])
def test_a_finished_job_lets_its_lease_go(
    pg_url: str, make_node: NodeFactory, path: list[Stage]
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    lost = losses(a)
    job = add(a, "a.mov")
    for stage in path:
        row = a.transition(job.id, stage)
    assert row.stage is path[-1]
    assert lease(pg_url, job.id)[::2] == ("suite-1", "free")
    assert not a.holds(job.id) and a.held == {} and lost == []
    assert a.get(job.id) == row
    assert due(b) == [] and a.renew() == []
    with pytest.raises(LeaseLost):
        a.update(job.id, error="late")


def test_a_refused_terminal_transition_keeps_the_lease(pg_url: str, make_node: NodeFactory) -> None:
    a = make_node("suite-1")
    job = add(a, "a.mov")
    with pytest.raises(IllegalTransition):
        a.transition(job.id, Stage.DELIVERED)  # queued -> delivered: not allowed
    assert a.holds(job.id) and lease(pg_url, job.id)[2] == "held"
    assert a.require(job.id).stage is Stage.QUEUED


# ---- inboxes this host cannot reach ------------------------------------------------------------


def test_a_paused_inbox_is_not_claimed_and_its_held_jobs_go(
    pg_url: str, make_node: NodeFactory
) -> None:
    a = make_node("suite-1", inboxes=("studio-a", "studio-b"))
    b = make_node("suite-2", inboxes=("studio-b",))
    mine, there = add(a, "a.mov"), add(a, "b.mov", inbox="studio-b")
    busy = add(a, "busy.mov", inbox="studio-b")
    free = add(b, "free.mov", inbox="studio-b")
    b.release([free.id])
    a.set_busy(busy.id, True)  # a task of a's is advancing it: kept until it ends
    a.paused = {"studio-b"}

    assert due(a, idle_only=True) == [(mine.id, "queued", "studio-a")]
    assert lease(pg_url, free.id)[2] == "free"  # not claimed
    assert lease(pg_url, there.id)[::2] == ("suite-1", "free")  # let go
    assert a.held.keys() == {mine.id, busy.id}
    assert ids(due(b)) == {free.id, there.id}

    a.set_busy(busy.id, False)
    assert due(a) == [(mine.id, "queued", "studio-a")]
    assert a.held.keys() == {mine.id}
    a.paused = set()
    assert ids(due(a)) == {mine.id, busy.id}  # b has the others now


# ---- grants of processing slots ------------------------------------------------------------------


def test_granting_is_serialised_between_nodes(pg_url: str, make_node: NodeFactory) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    add(a, "a.mov")
    b_granted = threading.Event()

    def b_grants() -> None:
        with b.granting() as shared:
            assert shared
            b.counts_by_state()  # the read of the slots in use: waits for a's grants
            b_granted.set()

    with a.granting() as shared:
        assert shared is True
        assert a.counts_by_state() == {"queued": 1}
        thread = threading.Thread(target=b_grants)
        thread.start()
        wait_for(
            lambda: (
                sql(
                    pg_url,
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                == [(1,)]
            )
        )
        assert not b_granted.is_set()
    assert b_granted.wait(10)
    thread.join()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        done.wait(0.02)
    raise AssertionError("condition not met in time")


# ---- the rows of held jobs, cached ---------------------------------------------------------------


def test_a_held_jobs_row_is_served_from_memory_while_held(
    pg_url: str, make_node: NodeFactory
) -> None:
    a = make_node("suite-1")
    job = add(a, "a.mov")
    with counting_queries(a) as taken:
        assert a.get(job.id) == job
        a.update(job.id, progress=0.5)  # one statement, the new row kept
        assert a.get(job.id).progress == 0.5  # type: ignore[union-attr]
        moved = a.transition(job.id, Stage.PROBED)
        assert a.get(job.id) == moved
    assert taken[0] == 2  # the two writes; no read
    # Behind its back (no node would: the lease holds), the cache is not read again...
    sql(pg_url, "UPDATE jobs SET progress = 0.75 WHERE id = %s", (job.id,))
    assert a.get(job.id) == moved
    # ...but once the job is let go, its row is the database's.
    a.release([job.id])
    with counting_queries(a) as taken:
        assert a.get(job.id).progress == 0.75  # type: ignore[union-attr]
    assert taken[0] == 1


def test_a_job_taken_over_is_read_from_the_database(pg_url: str, make_node: NodeFactory) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    job = add(a, "a.mov")
    lapse(pg_url, job.id)
    due(b)
    b.update(job.id, progress=0.5)
    assert a.renew() == [job.id]
    assert a.get(job.id) == b.get(job.id) and a.get(job.id).node == "suite-2"  # type: ignore[union-attr]


# ---- reads for the dashboard -----------------------------------------------------------------


def test_query_reads_this_hosts_tables_locally_and_the_jobs_from_the_cluster(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    add(b, "b.mov")
    assert a.query("SELECT rel_path, node FROM jobs WHERE inbox = ?", ["studio-a"]) == [
        ("b.mov", "suite-2")
    ]
    assert a.query("SELECT count(*) FROM notify_queue") == [(0,)]
    assert a.query("SELECT rel_path FROM jobs WHERE rel_path LIKE 'b%'") == [("b.mov",)]
    # The dashboard's change check sees the other node's writes too.
    before = a.query("PRAGMA data_version")
    b.transition(add(b, "c.mov").id, Stage.PROBED)
    assert a.query("PRAGMA data_version") != before


def test_a_row_written_in_a_transaction_rolled_back_is_not_served(
    pg_url: str, make_node: NodeFactory
) -> None:
    a = make_node("suite-1")
    job = add(a, "a.mov")
    with pytest.raises(RuntimeError, match="the manifest did not verify"), a.batch():
        a.put_clips(job.id, [clip("c1", 1)])
        a.transition(job.id, Stage.PROBED, duration=12.5)
        a.update(job.id, progress=0.5)
        raise RuntimeError("the manifest did not verify")
    assert a.holds(job.id)
    assert a.get(job.id) == a.get_many([job.id])[0] == job  # the database's row: queued


def test_grants_rolled_back_by_a_job_taken_over_are_not_served(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    first, second = add(a, "a.mov"), add(a, "b.mov")
    for job in (first, second):
        a.transition(job.id, Stage.PROBED)
    lapse(pg_url, second.id)
    due(b)  # suite-1 froze; suite-2 took the second job over
    with pytest.raises(LeaseLost), a.granting():
        a.transition(first.id, Stage.CREATING, expect=Stage.PROBED, kind="create_intent")
        a.transition(second.id, Stage.CREATING, expect=Stage.PROBED, kind="create_intent")
    # The whole transaction was rolled back: the first job's create intent was never recorded.
    assert sql(pg_url, "SELECT state FROM jobs WHERE id = %s", (first.id,)) == [("probed",)]
    assert a.holds(first.id) and a.get(first.id).stage is Stage.PROBED  # type: ignore[union-attr]


def test_due_ids_drops_a_held_job_another_node_took_over(
    pg_url: str, make_node: NodeFactory
) -> None:
    a, b = make_node("suite-1"), make_node("suite-2")
    lost = losses(a)
    job, kept = add(a, "a.mov"), add(a, "b.mov")
    lapse(pg_url, job.id)  # suite-1 froze; on waking, its scheduler looks before any renewal
    assert [j.id for j in b.claim([job.id])] == [job.id]
    assert due(a) == [(kept.id, "queued", "studio-a")]  # not handed to a task
    assert lost == [job.id] and a.held.keys() == {kept.id}


def test_due_ids_takes_back_a_parked_job_an_operator_retried(
    pg_url: str, make_node: NodeFactory
) -> None:
    a = make_node("suite-1")
    job = add(a, "a.mov")
    parked = park(a, job.id)
    assert a.get(job.id) == parked
    operator = PgLedger(pg_url)
    try:
        retried = operator.retry(job.id)
    finally:
        operator.close()
    # At once, not at the next renewal: claimed again (a new token), its row the retried one.
    assert due(a) == [(job.id, "queued", "studio-a")]
    assert a.held[job.id] == lease(pg_url, job.id)[1]
    assert a.get(job.id) == replace(retried, node="suite-1")

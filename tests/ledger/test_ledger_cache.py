"""The ledger's row cache: a cached job or clip list is what SQLite holds, whoever wrote it."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.ledger import db as ledger_db
from watchd.ledger.db import ClipRow, JobRow, Ledger, LedgerError
from watchd.ledger.rowcache import affinities
from watchd.ledger.states import IllegalTransition, Stage


def _add(ledger: Ledger, name: str = "a.mp4") -> str:
    return ledger.add_job(
        inbox="/in",
        rel_path=name,
        path=f"/in/{name}",
        rule="r",
        preset={"render": "all"},
        size=100,
        mtime_ns=1,
        inode=1,
        dev=1,
        fingerprint=name,
    ).id


def _clip(clip_id: str, rank: int, selected: int = 1) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "rank": rank,
        "title": f"T{rank}",
        "start_time": 1,
        "end_time": 5.5,
        "virality_score": 90,
        "reasoning": "",
        "thumbnail_url": None,
        "selected": selected,
    }


def _typed(row: Any) -> list[tuple[type, str]]:
    """A row's values with their types: 0 and 0.0 are equal, but not what SQLite gave."""
    return [(type(v), repr(v)) for v in dataclasses.astuple(row)]


def _as_stored(ledger: Ledger, job_id: str) -> JobRow:
    (job,) = ledger.get_many([job_id])  # read by SQL every time, never from the cache
    return job


def _statements(ledger: Ledger) -> list[str]:
    seen: list[str] = []
    ledger.db.conn.set_trace_callback(seen.append)
    return seen


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(None, clock=FakeClock())


@pytest.fixture
def two(tmp_path: Path) -> Any:
    """The daemon's ledger and another process's (the CLI's) on the same file."""
    daemon = Ledger.open(tmp_path, clock=FakeClock())
    cli = Ledger.open(tmp_path, clock=FakeClock())
    yield daemon, cli
    cli.close()
    daemon.close()


def test_rows_match_the_schema_the_cache_predicts_for() -> None:
    ledger = Ledger(None)
    for table, cls in (("jobs", JobRow), ("clips", ClipRow)):
        declared = {r[1]: r[2] for r in ledger.db.execute(f"PRAGMA table_info({table})")}
        assert affinities(cls) == declared


def test_a_job_read_again_costs_no_query(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.transition(jid, Stage.PROBED, duration=12)
    seen = _statements(ledger)
    for _ in range(3):
        assert ledger.require(jid).stage is Stage.PROBED
    assert not [s for s in seen if "FROM jobs" in s]


def test_a_transition_reads_nothing_and_returns_the_row_as_stored(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.get(jid)
    seen = _statements(ledger)
    job = ledger.transition(jid, Stage.PROBED, duration=12, content_type="video/mp4")
    assert not [s for s in seen if s.startswith("SELECT")]
    assert _typed(job) == _typed(_as_stored(ledger, jid))
    assert type(job.duration) is float


def test_cached_rows_stay_what_sqlite_holds_through_random_writes(ledger: Ledger) -> None:
    rnd = random.Random(7)
    ids = [_add(ledger, f"{i}.mp4") for i in range(4)]
    values: list[Any] = [0, 1, 2.5, -0.0, True, None, "x", "12", float("nan"), 10**12]
    fields = ["progress", "duration", "attempts", "step", "error", "next_attempt_at", "size"]
    for _ in range(300):
        jid = rnd.choice(ids)
        name, value = rnd.choice(fields), rnd.choice(values)
        with contextlib.suppress(sqlite3.IntegrityError):  # NULL (or NaN) in NOT NULL
            ledger.update(jid, **{name: value})
        if rnd.random() < 0.3:
            ledger.get(rnd.choice(ids))
        for j in ids:
            job = ledger.get(j)
            assert job is not None and _typed(job) == _typed(_as_stored(ledger, j)), (name, value)


def test_another_process_write_is_seen(two: tuple[Ledger, Ledger]) -> None:
    daemon, cli = two
    jid = _add(daemon)
    daemon.transition(jid, Stage.FAILED, error="boom")
    assert daemon.require(jid).stage is Stage.FAILED  # cached now
    cli.retry(jid)
    assert daemon.require(jid).stage is Stage.QUEUED
    assert daemon.require(jid).error is None
    cli.update(jid, step="from the cli")
    # The transition's own read (and its expect guard) sees it too.
    job = daemon.transition(jid, Stage.PROBED, expect=Stage.QUEUED)
    assert job.step == "from the cli"
    cli.transition(jid, Stage.FAILED)
    cli.forget(jid)
    assert daemon.get(jid) is None


def test_another_process_clip_write_is_seen(two: tuple[Ledger, Ledger]) -> None:
    daemon, cli = two
    jid = _add(daemon)
    daemon.put_clips(jid, [_clip("c1", 1)])
    assert [c.state for c in daemon.clips(jid)] == ["pending"]
    cli.update_clip(jid, "c1", state="rendered")
    assert [c.state for c in daemon.clips(jid)] == ["rendered"]


def test_a_write_through_the_connection_itself_is_seen(ledger: Ledger) -> None:
    jid = _add(ledger)
    assert ledger.require(jid).attempts == 0
    ledger.db.execute("UPDATE jobs SET attempts = 5 WHERE id = ?", (jid,))
    assert ledger.require(jid).attempts == 5


def test_busy_marks_keep_the_cache(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.get(jid)
    ledger.set_busy(jid, True)
    ledger.set_busy(jid, False)
    seen = _statements(ledger)
    ledger.get(jid)
    assert not [s for s in seen if "FROM jobs" in s]


def test_a_failed_transition_leaves_the_old_row(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.transition(jid, Stage.PROBED, duration=3.0)
    before = ledger.require(jid)
    with pytest.raises(LedgerError):
        ledger.transition(jid, Stage.CREATING, step="half", no_such_column=1)
    with pytest.raises(IllegalTransition):
        ledger.transition(jid, Stage.DELIVERED, step="half")
    assert ledger.require(jid) == before


def test_a_transaction_rolled_back_by_sqlite_leaves_no_row_of_it(ledger: Ledger) -> None:
    jid = _add(ledger)
    other = _add(ledger, "b.mp4")
    marker = ledger.require(other).marker
    ledger.require(jid)
    with pytest.raises(Exception, match="UNIQUE"):
        ledger.update(jid, step="never", marker=marker)  # the UPDATE itself fails
    assert ledger.require(jid).step is None
    assert _typed(ledger.require(jid)) == _typed(_as_stored(ledger, jid))


def test_a_failed_commit_leaves_the_old_row(ledger: Ledger, monkeypatch: Any) -> None:
    jid = _add(ledger)
    ledger.require(jid)

    class Refusing:
        """The connection, failing at COMMIT (a full disk, say)."""

        def __init__(self, conn: Any) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise OSError("disk full")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._conn, name)

    real = ledger._conn
    monkeypatch.setattr(ledger, "_conn", Refusing(real))
    with pytest.raises(OSError):
        ledger.transition(jid, Stage.PROBED, duration=1.0)
    monkeypatch.setattr(ledger, "_conn", real)
    assert ledger.require(jid).stage is Stage.QUEUED
    assert ledger.require(jid).duration is None


def test_rows_handed_out_cannot_change_the_cache(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.put_clips(jid, [_clip("c1", 1), _clip("c2", 2, selected=0)])
    job = ledger.require(jid)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "delivered"  # type: ignore[misc]
    clips = ledger.clips(jid)
    clips.clear()
    assert [c.clip_id for c in ledger.clips(jid)] == ["c1", "c2"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ledger.clips(jid)[0].state = "rendered"  # type: ignore[misc]


def test_clips_follow_writes_in_rank_order(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.put_clips(jid, [_clip("b", 2), _clip("a", 1), _clip("c", 3, selected=0)])
    assert [c.clip_id for c in ledger.clips(jid)] == ["a", "b", "c"]
    seen = _statements(ledger)
    ledger.update_clip(jid, "b", state="rendered", render_attempts=1, progress=50)
    chosen = ledger.clips(jid, selected_only=True)
    assert [(c.clip_id, c.state) for c in chosen] == [("a", "pending"), ("b", "rendered")]
    assert not [s for s in seen if s.startswith("SELECT")]
    ledger.put_clips(jid, [_clip("b", 0)])  # a refresh re-ranks
    cached = ledger.clips(jid)
    assert [c.clip_id for c in cached] == ["b", "a", "c"]
    ledger.update_clip(jid, "c", selected=1, words='[["hi", 0, 1]]')
    cached = ledger.clips(jid)
    fresh = ledger._rows(
        ClipRow,
        f"SELECT {ledger_db._CLIP_COLS} FROM clips WHERE job_id = ? ORDER BY rank, clip_id",
        (jid,),
    )
    assert [_typed(c) for c in cached] == [_typed(c) for c in fresh]


def test_forget_drops_the_cached_rows(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.put_clips(jid, [_clip("c1", 1)])
    ledger.clips(jid)
    ledger.transition(jid, Stage.FAILED)
    ledger.forget(jid)
    assert ledger.get(jid) is None
    assert ledger.clips(jid) == []


def test_the_cache_stays_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(ledger_db, "JOB_CACHE_ROWS", 5)
    monkeypatch.setattr(ledger_db, "CLIP_CACHE_JOBS", 3)
    ledger = Ledger(None, clock=FakeClock())
    ids = [_add(ledger, f"{i}.mp4") for i in range(20)]
    for jid in ids:
        ledger.put_clips(jid, [_clip("c1", 1)])
        ledger.clips(jid)
        ledger.get(jid)
    assert (len(ledger._jobs), len(ledger._clips)) == (5, 3)
    assert [j.id for j in map(ledger.require, ids)] == ids  # the rest read again


def test_a_finished_job_gives_up_its_clips(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.put_clips(jid, [_clip("c1", 1)])
    ledger.clips(jid)
    ledger.transition(jid, Stage.FAILED)
    assert ledger._clips.get(jid) is None
    assert [c.clip_id for c in ledger.clips(jid)] == ["c1"]


def test_a_batch_is_one_transaction_and_reads_its_own_writes(ledger: Ledger) -> None:
    job_id = _add(ledger)
    seen = _statements(ledger)
    with ledger.batch():
        ledger.put_clips(job_id, [_clip("c1", 1)])
        ledger.transition(job_id, Stage.PROBED, duration=6.0)
        assert ledger.get(job_id).stage is Stage.PROBED  # type: ignore[union-attr]
        assert [c.clip_id for c in ledger.clips(job_id)] == ["c1"]
        ledger.update_clip(job_id, "c1", state="rendered")
    ledger.db.conn.set_trace_callback(None)
    assert [s for s in seen if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    assert [s for s in seen if "data_version" in s] == ["PRAGMA data_version"]  # at BEGIN only
    assert _as_stored(ledger, job_id).state == "probed"
    assert ledger.clips(job_id)[0].state == "rendered"


def test_a_batch_that_fails_leaves_none_of_its_writes(two: tuple[Ledger, Ledger]) -> None:
    daemon, cli = two
    job_id = _add(daemon)
    with pytest.raises(LedgerError), daemon.batch():
        daemon.put_clips(job_id, [_clip("c1", 1)])
        daemon.transition(job_id, Stage.PROBED)
        daemon.transition(job_id, Stage.DELIVERED, expect=Stage.QUEUED)  # refused: PROBED now
    for ledger in (daemon, cli):
        assert ledger.require(job_id).stage is Stage.QUEUED
        assert ledger.clips(job_id) == []
    daemon.transition(job_id, Stage.PROBED)  # the connection is usable after it
    assert cli.require(job_id).stage is Stage.PROBED


def test_relaxed_writes_skip_the_disk_wait_and_durable_ones_do_not(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, clock=FakeClock())
    job_id = _add(ledger)

    def synchronous_inside(write: Any) -> int:
        seen: list[int] = []
        real = ledger.db.conn

        def peek(sql: str) -> None:
            if sql.startswith("UPDATE jobs"):
                ledger.db.conn.set_trace_callback(None)
                seen.append(int(real.execute("PRAGMA synchronous").fetchone()[0]))
                ledger.db.conn.set_trace_callback(peek)

        real.set_trace_callback(peek)
        try:
            write()
        finally:
            real.set_trace_callback(None)
        return seen[0]

    assert synchronous_inside(lambda: ledger.update(job_id, progress=1)) == 2  # FULL
    with ledger.relaxed():
        assert synchronous_inside(lambda: ledger.update(job_id, progress=2)) == 1  # NORMAL
        with ledger.batch():  # a batch started inside is relaxed as a whole
            ledger.update(job_id, progress=3)
    assert synchronous_inside(lambda: ledger.transition(job_id, Stage.PROBED)) == 2
    ledger.close()
    reopened = Ledger.open(tmp_path, clock=FakeClock())
    assert (reopened.require(job_id).state, reopened.require(job_id).progress) == ("probed", 3)
    reopened.close()

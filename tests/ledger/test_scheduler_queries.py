"""The cheap reads the main loop makes on every tick: due ids, rows by id, upload totals."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchd.clock import FakeClock
from watchd.ledger.db import Ledger
from watchd.ledger.states import TERMINAL, Stage


def _add(ledger: Ledger, name: str, *, inbox: str = "/in", size: int = 100) -> str:
    return ledger.add_job(
        inbox=inbox,
        rel_path=name,
        path=f"{inbox}/{name}",
        rule="",
        preset={},
        size=size,
        mtime_ns=1,
        inode=1,
        dev=1,
        fingerprint=name,
    ).id


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(None, clock=FakeClock())


def test_due_ids_are_due_jobs_without_the_rows(ledger: Ledger) -> None:
    a = _add(ledger, "a.mp4")
    b = _add(ledger, "b.mp4", inbox="/other")
    c = _add(ledger, "c.mp4")
    later = _add(ledger, "later.mp4")
    ledger.transition(b, Stage.PROBED)
    ledger.transition(c, Stage.FAILED)
    ledger.update(later, next_attempt_at=ledger.clock.now() + 60)
    now = ledger.clock.now()
    assert ledger.due_ids(now) == [(j.id, j.state, j.inbox) for j in ledger.due_jobs(now)]
    assert set(ledger.due_ids(now)) == {(a, "queued", "/in"), (b, "probed", "/other")}


def test_idle_only_leaves_out_the_jobs_marked_busy(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path, clock=FakeClock())
    a, b, c = (_add(ledger, f"{n}.mp4") for n in "abc")
    now = ledger.clock.now()
    ledger.set_busy(a, True)
    ledger.set_busy(c, True)
    ledger.set_busy(c, True)  # twice: still one mark
    assert [i for i, _, _ in ledger.due_ids(now, idle_only=True)] == [b]
    assert {i for i, _, _ in ledger.due_ids(now)} == {a, b, c}
    ledger.set_busy(c, False)
    assert {i for i, _, _ in ledger.due_ids(now, idle_only=True)} == {b, c}
    # The marks open no transaction of their own that a write would trip over, and leave
    # nothing on disk: another connection (a restart) sees every job idle.
    ledger.transition(b, Stage.PROBED)
    assert not ledger.db.conn.in_transaction
    other = Ledger.open(tmp_path, clock=FakeClock())
    assert {i for i, _, _ in other.due_ids(now, idle_only=True)} == {a, b, c}
    ledger.close()
    ledger.set_busy(a, False)  # after close (tasks finishing at shutdown): a no-op
    other.close()


def test_get_many_keeps_the_order_given_and_skips_unknown_ids(ledger: Ledger) -> None:
    ids = [_add(ledger, f"f{i}.mp4") for i in range(1200)]  # more than one chunk of ids
    wanted = [ids[1100], "j-unknown", ids[3], *ids[500:1000]]
    assert [j.id for j in ledger.get_many(wanted)] == [i for i in wanted if i != "j-unknown"]
    assert ledger.get_many([]) == []


def test_upload_totals_sum_the_jobs_uploading(ledger: Ledger) -> None:
    assert ledger.upload_totals() == (0, 0)
    one = _add(ledger, "one.mp4", size=1000)
    two = _add(ledger, "two.mp4", size=3000)
    _add(ledger, "queued.mp4", size=5000)
    for jid, sent in ((one, 250), (two, 750)):
        ledger.transition(jid, Stage.PROBED)
        ledger.transition(jid, Stage.CREATING)
        ledger.transition(jid, Stage.UPLOADING, project_id="p" + jid, bytes_uploaded=sent)
    assert ledger.upload_totals() == (1000, 4000)


def test_counts_follow_our_writes_and_another_process(tmp_path: Path) -> None:
    daemon = Ledger.open(tmp_path, clock=FakeClock())
    cli = Ledger.open(tmp_path, clock=FakeClock())
    try:
        a = _add(daemon, "a.mp4")
        assert daemon.counts_by_state() == {"queued": 1}
        daemon.transition(a, Stage.FAILED)
        assert daemon.counts_by_state() == {"failed": 1}
        cli.retry(a)  # `watchd retry` from another process
        assert daemon.counts_by_state() == {"queued": 1}
        _add(cli, "b.mp4")
        assert daemon.counts_by_state() == {"queued": 2}
        counts = daemon.counts_by_state()
        counts["queued"] = 99  # a caller's copy, not the cache
        assert daemon.counts_by_state() == {"queued": 2}
    finally:
        cli.close()
        daemon.close()


def test_due_and_next_due_see_every_active_state(ledger: Ledger) -> None:
    jobs = {stage: _add(ledger, f"{stage}.mp4") for stage in Stage}
    for stage, jid in jobs.items():
        ledger.db.execute(
            "UPDATE jobs SET state = ?, next_attempt_at = 5 WHERE id = ?", (stage.value, jid)
        )
    active = {jid for stage, jid in jobs.items() if stage not in TERMINAL}
    assert {i for i, _, _ in ledger.due_ids(10)} == active
    assert {j.id for j in ledger.due_jobs(10)} == active
    assert ledger.due_ids(4) == []
    assert ledger.next_due_at() == 5

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.ledger.db import MIGRATIONS, Ledger, LedgerError
from watchd.ledger.states import IllegalTransition, Stage


def _add(ledger: Ledger, rel: str = "podcasts/ep1.mp4", fp: str = "fp1", **kw: Any) -> str:
    job = ledger.add_job(
        inbox="/in",
        rel_path=rel,
        path=f"/in/{rel}",
        rule="podcasts",
        preset={"video_type": "podcast"},
        size=kw.get("size", 100),
        mtime_ns=kw.get("mtime_ns", 1),
        inode=7,
        dev=1,
        fingerprint=fp,
    )
    return job.id


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(None, clock=FakeClock())


def test_add_job_records_queued_with_marker_and_event(ledger: Ledger) -> None:
    jid = _add(ledger)
    job = ledger.require(jid)
    assert job.stage is Stage.QUEUED
    assert job.marker.startswith("wd-") and jid[1:] in job.marker
    assert job.preset_dict == {"video_type": "podcast"}
    assert [e.kind for e in ledger.events(jid)] == ["discovered"]


def test_transition_updates_fields_and_appends_event(ledger: Ledger) -> None:
    jid = _add(ledger)
    job = ledger.transition(jid, Stage.PROBED, duration=12.5, content_type="video/mp4")
    assert job.stage is Stage.PROBED and job.duration == 12.5
    ev = ledger.events(jid)[-1]
    assert (ev.from_state, ev.to_state) == ("queued", "probed")


def test_illegal_transition_changes_nothing(ledger: Ledger) -> None:
    jid = _add(ledger)
    with pytest.raises(IllegalTransition):
        ledger.transition(jid, Stage.UPLOADING, project_id="p1")
    job = ledger.require(jid)
    assert job.stage is Stage.QUEUED and job.project_id is None
    assert len(ledger.events(jid)) == 1


def test_expect_guards_concurrent_change(ledger: Ledger) -> None:
    jid = _add(ledger)
    with pytest.raises(LedgerError):
        ledger.transition(jid, Stage.PROBED, expect=Stage.PROBED)


def test_failed_transition_rolls_back_event_too(ledger: Ledger) -> None:
    jid = _add(ledger)
    with pytest.raises(LedgerError):
        ledger.transition(jid, Stage.PROBED, no_such_column=1)
    assert ledger.require(jid).stage is Stage.QUEUED
    assert len(ledger.events(jid)) == 1


def test_terminal_sets_finished_at(ledger: Ledger) -> None:
    jid = _add(ledger)
    job = ledger.transition(jid, Stage.FAILED, error="x", error_code="not_video")
    assert job.finished_at is not None


def test_retry_resumes_at_recorded_stage(ledger: Ledger) -> None:
    jid = _add(ledger)
    ledger.transition(jid, Stage.PROBED)
    ledger.transition(jid, Stage.PARKED, resume_stage=Stage.PROBED.value, park_reason="billing")
    job = ledger.retry(jid)
    assert job.stage is Stage.PROBED and job.park_reason is None
    assert ledger.events(jid)[-1].actor == "cli"


def test_retry_refuses_active_jobs(ledger: Ledger) -> None:
    jid = _add(ledger)
    with pytest.raises(LedgerError, match="only failed or parked"):
        ledger.retry(jid)


def test_forget_only_finished_and_frees_identity(ledger: Ledger) -> None:
    jid = _add(ledger)
    with pytest.raises(LedgerError):
        ledger.forget(jid)
    ledger.transition(jid, Stage.FAILED)
    assert ledger.find_by_identity("/in", "podcasts/ep1.mp4", 100, 1) is not None
    ledger.forget(jid)
    assert ledger.get(jid) is None
    assert ledger.find_by_identity("/in", "podcasts/ep1.mp4", 100, 1) is None
    with pytest.raises(LedgerError, match="unknown job"):
        ledger.forget(jid)


def test_due_jobs_respects_next_attempt(ledger: Ledger) -> None:
    a = _add(ledger, "a.mp4", "f1")
    b = _add(ledger, "b.mp4", "f2")
    ledger.update(b, next_attempt_at=500.0)
    assert [j.id for j in ledger.due_jobs(100.0)] == [a]
    assert {j.id for j in ledger.due_jobs(600.0)} == {a, b}
    ledger.transition(a, Stage.FAILED)
    assert [j.id for j in ledger.due_jobs(600.0)] == [b]
    assert ledger.next_due_at() == 500.0


def test_fingerprint_lookup_and_known_identities(ledger: Ledger) -> None:
    a = _add(ledger, "a.mp4", "same")
    b = _add(ledger, "b.mp4", "same")
    assert [j.id for j in ledger.find_by_fingerprint("same", exclude=b)] == [a]
    known = ledger.known_identities()
    assert known[("/in", "a.mp4")] == {(100, 1)}


def test_outbox_dir_taken(ledger: Ledger) -> None:
    a = _add(ledger, "a.mp4", "fa")
    b = _add(ledger, "b.mp4", "fb")
    assert not ledger.outbox_dir_taken("/out/a")
    ledger.update(a, outbox_dir="/out/a")
    assert ledger.outbox_dir_taken("/out/a")
    assert ledger.outbox_dir_taken("/out/a", exclude=b)
    assert not ledger.outbox_dir_taken("/out/a", exclude=a)
    assert not ledger.outbox_dir_taken("/out/a (2)")


def _clip(**fields: Any) -> dict[str, Any]:
    """A clip as the pipeline records it, with ``fields`` changed or added."""
    return {
        "clip_id": "c1",
        "rank": 1,
        "title": "T",
        "start_time": 1.0,
        "end_time": 5.0,
        "virality_score": 90.0,
        "reasoning": "r",
        **fields,
    }


def test_clips_and_exports(ledger: Ledger) -> None:
    jid = _add(ledger)
    clip = _clip(thumbnail_url=None, selected=1)
    ledger.put_clips(jid, [clip, {**clip, "clip_id": "c2", "rank": 2, "selected": 0}])
    ledger.update_clip(jid, "c1", state="rendered", render_attempts=1)
    ledger.put_clips(jid, [{**clip, "title": "T2"}])  # refresh keeps progress
    rows = ledger.clips(jid, selected_only=True)
    assert [(c.clip_id, c.title, c.state) for c in rows] == [("c1", "T2", "rendered")]
    ledger.put_export(jid, "c1", "premiere", export_id="e1", state="requested")
    ledger.put_export(jid, "c1", "premiere", state="done")
    (ex,) = ledger.exports(jid)
    assert (ex.export_id, ex.state) == ("e1", "done")


def test_migrations_are_numbered_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    ledger = Ledger(path)
    assert ledger.schema_version() == len(MIGRATIONS)
    mode = ledger.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_reader_sees_writes_while_writer_holds_connection(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    writer = Ledger(path)
    jid = _add(writer)
    reader = Ledger(path, readonly=True)
    assert reader.require(jid).stage is Stage.QUEUED
    writer.transition(jid, Stage.PROBED)
    assert reader.require(jid).stage is Stage.PROBED
    reader.close()
    writer.close()


def test_concurrent_writers_wait_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    first = Ledger(path)
    ids = [_add(first, f"f{i}.mp4", f"fp{i}") for i in range(20)]
    errors: list[BaseException] = []

    def work(ledger: Ledger, kind: str) -> None:
        try:
            for jid in ids:
                ledger.record_event(jid, kind)
        except (sqlite3.Error, LedgerError) as e:  # pragma: no cover - the failure we guard
            errors.append(e)

    second = Ledger(path)
    threads = [
        threading.Thread(target=work, args=(first, "a")),
        threading.Thread(target=work, args=(second, "b")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(first.events()) == 20 + 40
    first.close()
    second.close()


def test_set_inbox_inserts_then_updates(ledger: Ledger) -> None:
    ledger.set_inbox("/in", paused=True, reason="gone", entries=0, last_scan_at=None)
    ledger.set_inbox("/in", paused=False, reason=None, entries=3, last_scan_at=5.0)
    ledger.set_inbox("/other", paused=False, reason=None, entries=1, last_scan_at=6.0)
    assert [(i.path, i.paused, i.reason, i.entries, i.last_scan_at) for i in ledger.inboxes()] == [
        ("/in", 0, None, 3, 5.0),
        ("/other", 0, None, 1, 6.0),
    ]


def test_put_clips_refuses_unknown_fields_and_keeps_json_values(ledger: Ledger) -> None:
    jid = _add(ledger)
    clip = _clip(words=[["hi", 0.0, 0.5]])  # stored as JSON, as sqlite-utils' insert did
    with pytest.raises(LedgerError, match="unknown clip fields"):
        ledger.put_clips(jid, [{**clip, "colour": "red"}])
    assert ledger.clips(jid) == []
    ledger.put_clips(jid, [clip])
    assert ledger.clips(jid)[0].words == '[["hi", 0.0, 0.5]]'


def test_a_write_is_one_plain_transaction(ledger: Ledger) -> None:
    """No savepoint inside BEGIN IMMEDIATE, no look-up of the schema per insert, and no
    transaction opened around a busy mark (a statement on a temporary table)."""
    seen: list[str] = []
    ledger.db.conn.set_trace_callback(seen.append)
    jid = _add(ledger)
    ledger.transition(jid, Stage.PROBED)
    ledger.put_clips(jid, [{"clip_id": "c", "rank": 1, "title": "T", "start_time": 0,
                            "end_time": 1, "virality_score": 1}])  # fmt: skip
    ledger.put_export(jid, "c", "premiere")
    ledger.set_busy(jid, True)
    ledger.set_busy(jid, False)
    words = [s.split()[0].upper() for s in seen]
    assert words.count("BEGIN") == words.count("COMMIT") == 4
    assert "SAVEPOINT" not in words and not [s for s in seen if "sqlite_master" in s]
    assert not ledger.db.conn.in_transaction

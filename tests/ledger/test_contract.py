"""One suite, both ledgers: what the pipeline, the daemon and the CLI rely on, held against the
SQLite ledger and the PostgreSQL one alike (huey's StorageTests pattern: the fixture is
parametrized, the tests name no backend)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.ledger.test_db import _clip as clip
from watchd.clock import FakeClock
from watchd.ledger.db import ClipRow, EventRow, JobRow, Ledger, LedgerError
from watchd.ledger.protocol import LedgerAPI
from watchd.ledger.states import IllegalTransition, Stage


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest) -> Iterator[LedgerAPI]:
    clock = FakeClock()
    if request.param == "sqlite":
        lg: LedgerAPI = Ledger(None, clock=clock)
    else:
        from watchd.ledger.pg import PgLedger

        lg = PgLedger(request.getfixturevalue("pg_url"), clock=clock)
    yield lg
    lg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], LedgerAPI]]:
    """Opens another handle on one shared ledger (a file, or a database), as a second process
    or host would."""
    opened: list[LedgerAPI] = []

    def open_one() -> LedgerAPI:
        if request.param == "sqlite":
            lg: LedgerAPI = Ledger(tmp_path / "ledger.db", clock=FakeClock(), fsync=False)
        else:
            from watchd.ledger.pg import PgLedger

            lg = PgLedger(request.getfixturevalue("pg_url"), clock=FakeClock())
        opened.append(lg)
        return lg

    yield open_one
    for lg in opened:
        lg.close()


def tick(ledger: LedgerAPI, seconds: float = 1) -> None:
    cast(FakeClock, ledger.clock).advance(seconds)


def add(ledger: LedgerAPI, rel: str = "podcasts/ep1.mp4", fp: str = "fp1", **kw: Any) -> JobRow:
    """A new job, one second after the one before (lists are in order of creation)."""
    tick(ledger)
    return ledger.add_job(
        inbox=kw.get("inbox", "/in"),
        rel_path=rel,
        path=f"/in/{rel}",
        rule="podcasts",
        preset={"video_type": "podcast", "b": [1, 2]},
        size=kw.get("size", 100),
        mtime_ns=kw.get("mtime_ns", 1_700_000_000_123_456_789),
        inode=kw.get("inode", 2**40 + 7),
        dev=1,
        fingerprint=fp,
    )


def last_event(ledger: LedgerAPI, job_id: str) -> tuple[str, str, str | None, str | None, Any]:
    """The job's last event: kind, actor, from and to state, detail (JSON text)."""
    ev = ledger.events(job_id)[-1]
    return ev.kind, ev.actor, ev.from_state, ev.to_state, ev.detail


# ---- jobs ----------------------------------------------------------------------------------------


def test_add_job_returns_the_stored_row(ledger: LedgerAPI) -> None:
    job = add(ledger)
    assert job == ledger.require(job.id) == ledger.get(job.id)
    assert job.stage is Stage.QUEUED
    assert job.marker == f"wd-{job.id[1:]}"
    assert job.preset_dict == {"video_type": "podcast", "b": [1, 2]}
    assert (job.size, job.mtime_ns, job.inode) == (100, 1_700_000_000_123_456_789, 2**40 + 7)
    assert (job.progress, job.bytes_uploaded, job.attempts, job.next_attempt_at) == (0, 0, 0, 0)
    assert isinstance(job.progress, float) and isinstance(job.created_at, float)
    assert job.finished_at is None and job.project_id is None
    (ev,) = ledger.events(job.id)
    assert (ev.kind, ev.actor, ev.from_state, ev.to_state) == (
        "discovered",
        "watcher",
        None,
        "queued",
    )


def test_get_and_require_an_unknown_job(ledger: LedgerAPI) -> None:
    assert ledger.get("jnothing") is None
    with pytest.raises(LedgerError, match="unknown job jnothing"):
        ledger.require("jnothing")


def test_transition_applies_updates_and_records_the_event(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    tick(ledger, 5)
    job = ledger.transition(
        jid, Stage.PROBED, duration=12.5, content_type="video/mp4", detail={"k": 1}, actor="x"
    )
    assert job == ledger.require(jid)
    assert job.stage is Stage.PROBED and job.duration == 12.5 and job.content_type == "video/mp4"
    assert job.updated_at == job.created_at + 5
    assert last_event(ledger, jid) == ("transition", "x", "queued", "probed", '{"k": 1}')


def test_illegal_transition_raises_and_changes_nothing(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    with pytest.raises(IllegalTransition):
        ledger.transition(jid, Stage.UPLOADING, project_id="p1")
    job = ledger.require(jid)
    assert job.stage is Stage.QUEUED and job.project_id is None
    assert len(ledger.events(jid)) == 1
    ledger.transition(jid, Stage.FAILED)
    with pytest.raises(IllegalTransition):
        ledger.transition(jid, Stage.DELIVERED)


def test_transition_guards(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    with pytest.raises(LedgerError, match="expected probed"):
        ledger.transition(jid, Stage.PROBED, expect=Stage.PROBED)
    with pytest.raises(LedgerError, match="unknown job fields"):
        ledger.transition(jid, Stage.PROBED, no_such_column=1)
    with pytest.raises(LedgerError, match="unknown job"):
        ledger.transition("jnothing", Stage.PROBED)
    assert ledger.require(jid).stage is Stage.QUEUED
    assert len(ledger.events(jid)) == 1
    # The same stage again is no move: allowed, the updates applied.
    assert ledger.transition(jid, Stage.QUEUED, step="again").step == "again"


def test_terminal_sets_finished_at_unless_given(ledger: LedgerAPI) -> None:
    a, b = add(ledger, "a.mp4", "fa").id, add(ledger, "b.mp4", "fb").id
    assert ledger.transition(a, Stage.FAILED, error="x", error_code="not_video").finished_at
    assert ledger.transition(b, Stage.FAILED, finished_at=3.0).finished_at == 3.0


def test_update_changes_fields_only(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    ledger.update(jid, progress=0.5, step="transcribing", bytes_uploaded=10, state=Stage.PROBED)
    job = ledger.require(jid)
    assert (job.progress, job.step, job.bytes_uploaded, job.state) == (
        0.5,
        "transcribing",
        10,
        "probed",
    )
    ledger.update(jid, preset={"z": 1, "a": 2})
    assert ledger.require(jid).preset == '{"a": 2, "z": 1}'
    with pytest.raises(LedgerError, match="unknown job fields"):
        ledger.update(jid, colour="red")
    ledger.update("jnothing", step="x")  # nothing to update: not an error


def test_events_record_and_list(ledger: LedgerAPI) -> None:
    a, b = add(ledger, "a.mp4", "fa").id, add(ledger, "b.mp4", "fb").id
    ledger.record_event(a, "note", {"n": 1})
    ledger.record_event(b, "note", actor="cli")
    assert [e.kind for e in ledger.events(a)] == ["discovered", "note"]
    every = ledger.events()
    assert [e.job_id for e in every] == [a, b, a, b]
    assert all(isinstance(e, EventRow) for e in every)
    assert every[3].actor == "cli" and every[3].detail is None
    assert [e.id for e in every] == sorted(e.id for e in every)


def test_retry_resumes_at_the_recorded_stage(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    ledger.transition(jid, Stage.PROBED)
    ledger.transition(jid, Stage.PARKED, resume_stage=Stage.PROBED.value, park_reason="billing")
    ledger.update(jid, attempts=3, next_attempt_at=99.0, error="e", error_code="c")
    job = ledger.retry(jid)
    assert job.stage is Stage.PROBED and job.park_reason is None
    assert (job.attempts, job.next_attempt_at, job.error, job.error_code) == (0, 0, None, None)
    assert (ledger.events(jid)[-1].kind, ledger.events(jid)[-1].actor) == ("retry", "cli")
    other = add(ledger, "b.mp4", "fb").id
    ledger.transition(other, Stage.FAILED)
    retried = ledger.retry(other)
    assert retried.stage is Stage.QUEUED and retried.finished_at is None


def test_retry_refuses_active_and_unknown_jobs(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    with pytest.raises(LedgerError, match="only failed or parked"):
        ledger.retry(jid)
    with pytest.raises(LedgerError, match="unknown job"):
        ledger.retry("jnothing")


def test_check_retryable_and_wait_counts(ledger: LedgerAPI) -> None:
    a, b = add(ledger).id, add(ledger, "b.mp4", "fb").id
    with pytest.raises(LedgerError, match="only failed or parked"):
        ledger.check_retryable(ledger.require(a))
    assert ledger.wait_counts() == {}
    ledger.update(a, wait="duplicate: same content as job j1", wait_until=1.0, wait_since=0.0)
    ledger.update(b, wait="billing: no minutes")
    ledger.transition(b, Stage.PARKED, park_reason="billing: no minutes")
    ledger.check_retryable(ledger.require(b))
    assert ledger.wait_counts() == {"duplicate": 1, "billing": 1}
    assert ledger.wait_counts(parked=False) == {"duplicate": 1}
    ledger.transition(a, Stage.FAILED)
    assert ledger.wait_counts() == {"billing": 1}


def test_forget_only_finished_and_frees_the_identity(ledger: LedgerAPI) -> None:
    job = add(ledger)
    with pytest.raises(LedgerError, match="only delivered or failed"):
        ledger.forget(job.id)
    ledger.put_clips(job.id, [clip()])
    ledger.put_export(job.id, "c1", "premiere")
    ledger.transition(job.id, Stage.FAILED)
    assert ledger.find_by_identity("/in", job.rel_path, job.size, job.mtime_ns) is not None
    ledger.forget(job.id)
    assert ledger.get(job.id) is None
    assert ledger.clips(job.id) == [] and ledger.exports(job.id) == []
    assert ledger.find_by_identity("/in", job.rel_path, job.size, job.mtime_ns) is None
    assert ledger.events(job.id)[-1].kind == "forgotten"
    with pytest.raises(LedgerError, match="unknown job"):
        ledger.forget(job.id)


def test_retry_clears_the_stop_and_records_one_event(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    ledger.transition(jid, Stage.PARKED, park_reason="tier", resume_stage=Stage.FAILED.value)
    tick(ledger, 3)
    job = ledger.retry(jid, actor="web")
    assert job == ledger.require(jid)
    # A recorded stage a job cannot resume at (failed) sends it to the start.
    assert job.stage is Stage.QUEUED and job.park_reason is None
    assert job.updated_at == ledger.clock.now() and job.finished_at is None
    assert last_event(ledger, jid) == ("retry", "web", "parked", "queued", None)
    with pytest.raises(LedgerError, match=f"job {jid} is queued: only failed or parked"):
        ledger.retry(jid)
    assert len(ledger.events(jid)) == 3
    with pytest.raises(RuntimeError, match="inside"), ledger.batch():
        ledger.transition(jid, Stage.FAILED, error="e")
        assert ledger.retry(jid).stage is Stage.QUEUED
        raise RuntimeError("inside")
    assert ledger.require(jid).stage is Stage.QUEUED and len(ledger.events(jid)) == 3


def test_check_retryable_allows_failed_and_parked_only(ledger: LedgerAPI) -> None:
    failed, parked, queued = (add(ledger, f"{n}.mp4", n) for n in ("f", "p", "q"))
    ledger.check_retryable(ledger.transition(failed.id, Stage.FAILED))
    ledger.check_retryable(ledger.transition(parked.id, Stage.PARKED))
    with pytest.raises(LedgerError, match=f"job {queued.id} is queued: only failed or parked"):
        ledger.check_retryable(queued)


def test_forgotten_since_tells_a_running_daemon_which_files_are_new_again(
    ledger: LedgerAPI,
) -> None:
    assert ledger.forgotten_since(None) == (0, [])
    a = add(ledger, "café.mp4", "fa", size=123, mtime_ns=456)
    b = add(ledger, "b.mp4", "fb")
    after, gone = ledger.forgotten_since(None)
    assert gone == [] and after == ledger.events()[-1].id
    for job in (b, a):
        ledger.transition(job.id, Stage.FAILED)
        ledger.forget(job.id)
    ledger.record_event(a.id, "note")  # not a forget: not told, and not a reason to skip one
    forgotten, gone = ledger.forgotten_since(after)
    assert gone == [("/in", "b.mp4", 100, b.mtime_ns), ("/in", "café.mp4", 123, 456)]
    assert forgotten == ledger.events(a.id)[-2].id
    assert ledger.forgotten_since(forgotten) == (forgotten, [])
    # The event keeps the file's identity as the SQLite ledger writes it (JSON, keys sorted).
    assert ledger.events(a.id)[-2].detail == (
        '{"inbox": "/in", "mtime_ns": 456, "rel_path": "caf\\u00e9.mp4", "size": 123}'
    )
    assert ledger.forgotten_since(None) == (ledger.events()[-1].id, [])


def test_a_forget_is_told_to_the_other_handles(opener: Callable[[], LedgerAPI]) -> None:
    cli, daemon = opener(), opener()
    job = add(cli)
    after, _ = daemon.forgotten_since(None)
    cli.transition(job.id, Stage.FAILED)
    cli.forget(job.id)
    after, gone = daemon.forgotten_since(after)
    assert gone == [("/in", job.rel_path, job.size, job.mtime_ns)]
    assert daemon.forgotten_since(after) == (after, [])


# ---- clips and exports ---------------------------------------------------------------------------


def test_put_clips_inserts_then_refreshes_keeping_progress(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    c1 = clip(thumbnail_url=None, selected=1)
    ledger.put_clips(jid, [{**c1, "clip_id": "c2", "rank": 2, "selected": 0}, c1])
    ledger.update_clip(jid, "c1", state="rendered", render_attempts=1, progress=1.0)
    ledger.put_clips(jid, [{**c1, "title": "T2"}])
    rows = ledger.clips(jid)
    assert [c.clip_id for c in rows] == ["c1", "c2"]  # by rank
    assert all(isinstance(c, ClipRow) for c in rows)
    (chosen,) = ledger.clips(jid, selected_only=True)
    assert (chosen.title, chosen.state, chosen.render_attempts, chosen.progress) == (
        "T2",
        "rendered",
        1,
        1.0,
    )
    assert rows[1].state == "pending" and rows[1].reasoning == "r"


def test_clip_values_are_stored_as_the_sqlite_ledger_stores_them(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    ledger.put_clips(jid, [clip(words=[["hi", 0.0, 0.5]], selected=True)])
    (c,) = ledger.clips(jid)
    assert c.words == '[["hi", 0.0, 0.5]]' and c.selected == 1
    with pytest.raises(LedgerError, match="unknown clip fields"):
        ledger.put_clips(jid, [clip(clip_id="c9", colour="red")])
    with pytest.raises(LedgerError, match="unknown clip fields"):
        ledger.update_clip(jid, "c1", colour="red")
    assert [x.clip_id for x in ledger.clips(jid)] == ["c1"]


def test_exports_insert_then_update(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    ledger.put_clips(jid, [clip(), clip(clip_id="c0", rank=2)])
    ledger.put_export(jid, "c1", "premiere", export_id="e1", state="requested")
    ledger.put_export(jid, "c1", "premiere", state="done", path="/out/x.xml")
    ledger.put_export(jid, "c0", "resolve")
    assert [(e.clip_id, e.format, e.export_id, e.state, e.path) for e in ledger.exports(jid)] == [
        ("c0", "resolve", None, "pending", None),
        ("c1", "premiere", "e1", "done", "/out/x.xml"),
    ]
    with pytest.raises(LedgerError, match="unknown export fields"):
        ledger.put_export(jid, "c1", "premiere", colour="red")


# ---- queries -------------------------------------------------------------------------------------


def test_find_by_identity_and_fingerprint(ledger: LedgerAPI) -> None:
    a = add(ledger, "a.mp4", "same")
    b = add(ledger, "b.mp4", "same")
    c = add(ledger, "a.mp4", "other", inbox="/elsewhere")
    assert ledger.find_by_identity("/in", "a.mp4", a.size, a.mtime_ns) == a
    assert ledger.find_by_identity("/in", "a.mp4", a.size + 1, a.mtime_ns) is None
    assert ledger.find_by_identity("/elsewhere", "a.mp4", c.size, c.mtime_ns) == c
    assert [j.id for j in ledger.find_by_fingerprint("same")] == [a.id, b.id]
    assert [j.id for j in ledger.find_by_fingerprint("same", exclude=b.id)] == [a.id]
    assert ledger.find_by_fingerprint("none") == []
    known = ledger.known_identities()
    assert known[("/in", "a.mp4")] == {(a.size, a.mtime_ns)}
    assert set(known) == {("/in", "a.mp4"), ("/in", "b.mp4"), ("/elsewhere", "a.mp4")}


def test_fingerprint_range_compares_bytes(ledger: LedgerAPI) -> None:
    """A range of fingerprints in byte order (PostgreSQL's collation may sort punctuation apart
    from letters): what ``watchd ledger rebuild``'s jobs without a source are found by."""
    a = add(ledger, "a.mp4", "sha256:aa", size=7)
    add(ledger, "b.mp4", "sha256:bb", size=8)
    c = add(ledger, "c.mp4", "sha256:cc", size=7)
    for fp in ("sha256", "sha256;x", "sha2567", "sha256-x", "SHA256:dd", "fp"):
        add(ledger, f"{fp}.mp4", fp, size=7)
    found = ledger.fingerprint_range("sha256:", "sha256;", size=7)
    assert [j.id for j in found] == [a.id, c.id]


def test_due_jobs_and_next_due_at(ledger: LedgerAPI) -> None:
    assert ledger.next_due_at() is None
    a = add(ledger, "a.mp4", "f1").id
    b = add(ledger, "b.mp4", "f2").id
    ledger.update(b, next_attempt_at=500.0)
    assert [j.id for j in ledger.due_jobs(100.0)] == [a]
    assert [j.id for j in ledger.due_jobs(600.0)] == [a, b]
    assert [r[0] for r in ledger.due_ids(600.0)] == [a, b]
    assert ledger.due_ids(600.0)[0] == (a, "queued", "/in")
    ledger.set_busy(a, True)
    assert [r[0] for r in ledger.due_ids(600.0, idle_only=True)] == [b]
    ledger.set_busy(a, False)
    assert [r[0] for r in ledger.due_ids(600.0, idle_only=True)] == [a, b]
    ledger.transition(a, Stage.FAILED)
    assert [j.id for j in ledger.due_jobs(600.0)] == [b]
    assert ledger.next_due_at() == 500.0


def test_job_lists(ledger: LedgerAPI) -> None:
    a = add(ledger, "a.mp4", "f1").id
    b = add(ledger, "b.mp4", "f2").id
    c = add(ledger, "c.mp4", "f3").id
    ledger.transition(b, Stage.FAILED)
    ledger.transition(c, Stage.PROBED)
    assert [j.id for j in ledger.jobs()] == [a, b, c]
    assert [j.id for j in ledger.jobs([Stage.FAILED, Stage.PROBED])] == [b, c]
    assert [j.id for j in ledger.active_jobs()] == [a, c]
    assert [j.id for j in ledger.get_many([c, "jnothing", a])] == [c, a]
    assert ledger.counts_by_state() == {"queued": 1, "failed": 1, "probed": 1}
    ledger.update(a, state=Stage.UPLOADING.value, bytes_uploaded=40)
    assert ledger.upload_totals() == (40, 100)


def test_waits_are_counted_by_cause_and_found_by_path(ledger: LedgerAPI) -> None:
    a = add(ledger, "a.mp4", "fa")
    b = add(ledger, "b.mp4", "fb")
    c = add(ledger, "c.mp4", "fc")
    assert ledger.wait_counts() == {} and ledger.wait_counts(parked=False) == {}
    ledger.update(a.id, wait="duplicate: same content as job j1", wait_until=1.0, wait_since=0)
    ledger.update(b.id, wait="billing: no minutes")
    ledger.transition(b.id, Stage.PARKED, park_reason="billing: no minutes")
    ledger.update(c.id, wait=" duplicate : same content as job j2")
    assert ledger.wait_counts() == {"duplicate": 2, "billing": 1}
    assert ledger.wait_counts(parked=False) == {"duplicate": 2}
    ledger.update(c.id, wait="tier")  # no detail: the whole text is the cause
    assert ledger.wait_counts(parked=False) == {"duplicate": 1, "tier": 1}
    found = ledger.active_at_path("/in", "a.mp4")
    assert found == ledger.require(a.id) and found.wait_until == 1.0
    ledger.transition(a.id, Stage.FAILED)
    assert ledger.active_at_path("/in", "a.mp4") is None
    assert ledger.wait_counts() == {"billing": 1, "tier": 1}
    # The newest unfinished job at the path, whatever its state; not one in another inbox.
    again = add(ledger, "a.mp4", "fa", mtime_ns=2)
    newer = add(ledger, "a.mp4", "fa2", mtime_ns=3)
    ledger.transition(newer.id, Stage.PARKED)
    add(ledger, "a.mp4", "fa3", inbox="/elsewhere")
    assert ledger.active_at_path("/in", "a.mp4") == ledger.require(newer.id)
    ledger.transition(newer.id, Stage.FAILED)
    assert ledger.active_at_path("/in", "a.mp4") == again
    assert ledger.active_at_path("/in", "none.mp4") is None


def test_outbox_dir_taken(ledger: LedgerAPI) -> None:
    a = add(ledger, "a.mp4", "fa").id
    b = add(ledger, "b.mp4", "fb").id
    assert not ledger.outbox_dir_taken("/out/a")
    ledger.update(a, outbox_dir="/out/a")
    assert ledger.outbox_dir_taken("/out/a")
    assert ledger.outbox_dir_taken("/out/a", exclude=b)
    assert not ledger.outbox_dir_taken("/out/a", exclude=a)


def test_inboxes_and_heartbeat(ledger: LedgerAPI) -> None:
    ledger.set_inbox("/in", paused=True, reason="gone", entries=0, last_scan_at=None)
    ledger.set_inbox("/in", paused=False, reason=None, entries=3, last_scan_at=5.0)
    ledger.set_inbox("/a", paused=True, reason="x", entries=1, last_scan_at=6.0)
    assert [(i.path, i.paused, i.reason, i.entries, i.last_scan_at) for i in ledger.inboxes()] == [
        ("/a", 1, "x", 1, 6.0),
        ("/in", 0, None, 3, 5.0),
    ]
    assert ledger.last_heartbeat() is None
    ledger.heartbeat(42)
    tick(ledger, 2)
    ledger.heartbeat(43)
    beat = ledger.last_heartbeat()
    assert beat is not None and beat["pid"] == 43


# ---- transactions --------------------------------------------------------------------------------


def test_batch_is_all_or_none(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    with pytest.raises(IllegalTransition), ledger.batch():
        ledger.transition(jid, Stage.PROBED)
        ledger.put_clips(jid, [clip()])
        ledger.record_event(jid, "inside")
        assert ledger.require(jid).stage is Stage.PROBED  # a read inside sees the batch
        ledger.transition(jid, Stage.DELIVERED)
    assert ledger.require(jid).stage is Stage.QUEUED
    assert ledger.clips(jid) == []
    assert [e.kind for e in ledger.events(jid)] == ["discovered"]
    with ledger.batch():
        ledger.transition(jid, Stage.PROBED)
        ledger.put_clips(jid, [clip()])
    assert ledger.require(jid).stage is Stage.PROBED and len(ledger.clips(jid)) == 1


def test_a_database_error_rolls_back_and_the_ledger_goes_on(ledger: LedgerAPI) -> None:
    """An error the database raises (here NOT NULL) inside a batch, from a write that waits for
    no answer (PostgreSQL: pipelined), undoes the batch's earlier writes too."""
    jid = add(ledger).id
    with pytest.raises(Exception, match=r"(?i)not.null"), ledger.batch():
        ledger.transition(jid, Stage.PROBED)
        ledger.update(jid, rel_path=None)
    with pytest.raises(Exception, match=r"(?i)not.null"):
        ledger.update(jid, rel_path=None)
    job = ledger.require(jid)
    assert job.stage is Stage.QUEUED and job.rel_path == "podcasts/ep1.mp4"
    assert ledger.transition(jid, Stage.PROBED).stage is Stage.PROBED
    assert [e.kind for e in ledger.events(jid)] == ["discovered", "transition"]


def test_relaxed_writes_are_counted_until_a_durable_one(ledger: LedgerAPI) -> None:
    jid = add(ledger).id
    assert ledger.unsynced_writes == 0
    with ledger.relaxed():
        ledger.update(jid, progress=0.1)
        ledger.update(jid, progress=0.2)
    assert ledger.require(jid).progress == 0.2
    ledger.update(jid, progress=0.3)
    assert ledger.unsynced_writes == 0


def test_make_durable_turns_relaxed_commits_durable_even_inside_a_relaxed_block(
    ledger: LedgerAPI,
) -> None:
    jid = add(ledger).id
    with ledger.relaxed():
        ledger.update(jid, progress=0.1)
        assert ledger.unsynced_writes == 1
        ledger.make_durable()  # a billed call made by another task meanwhile
        assert ledger.unsynced_writes == 0
        ledger.make_durable()  # nothing to do: no write
    assert ledger.require(jid).progress == 0.1 and ledger.unsynced_writes == 0


def test_of_racing_writers_with_the_same_expectation_exactly_one_wins(
    opener: Callable[[], LedgerAPI],
) -> None:
    first = opener()
    jid = add(first).id
    handles = [first, *(opener() for _ in range(3))]
    won: list[int] = []
    lost: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(handles))

    def race(n: int, lg: LedgerAPI) -> None:
        start.wait()
        try:
            lg.transition(jid, Stage.PROBED, expect=Stage.QUEUED, step=f"by {n}")
            won.append(n)
        except LedgerError:
            lost.append(n)
        except BaseException as e:  # pragma: no cover - what the test guards against
            errors.append(e)

    threads = [threading.Thread(target=race, args=(n, lg)) for n, lg in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(won) == 1 and len(lost) == len(handles) - 1
    job = handles[-1].require(jid)
    assert job.stage is Stage.PROBED and job.step == f"by {won[0]}"
    assert [e.kind for e in first.events(jid)] == ["discovered", "transition"]

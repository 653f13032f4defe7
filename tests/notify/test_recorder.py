"""Events are recorded in the transaction of the change that causes them: all or nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.ledger.db import Ledger
from watchd.ledger.states import Stage
from watchd.notify import queue
from watchd.notify.config import NotifierConfig
from watchd.notify.recorder import Recorder


def notifier(name: str = "hook", **kw: Any) -> NotifierConfig:
    return NotifierConfig(
        **{"index": 0, "name": name, "kind": "command", "command": ("/bin/true",), **kw}
    )


def new_job(
    ledger: Ledger, rel: str = "podcasts/ep.mp4", rule: str = "podcasts", outbox: str = "/out"
) -> str:
    job = ledger.add_job(
        inbox="/in",
        rel_path=rel,
        path=f"/in/{rel}",
        rule=rule,
        preset={"_delivery": {"outbox": outbox}},
        size=10,
        mtime_ns=1,
        inode=1,
        dev=1,
        fingerprint=rel,
    )
    return job.id


def queued(ledger: Ledger) -> list[tuple[str, str, dict[str, Any]]]:
    rows = ledger.query(
        "SELECT q.notifier, e.type, e.body FROM notify_queue q "
        "JOIN notify_events e ON e.id = q.event_id ORDER BY e.id, q.notifier"
    )
    return [(n, t, json.loads(b)) for n, t, b in rows]


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(clock=FakeClock())


def attach(ledger: Ledger, *notifiers: NotifierConfig) -> list[int]:
    woken: list[int] = []
    ledger.observer = Recorder(
        notifiers, {"/in": "studio-a"}, ledger.clock, lambda: woken.append(1)
    )
    return woken


def test_queued_delivered_failed_parked_each_once_per_notifier(
    ledger: Ledger, tmp_path: Path
) -> None:
    woken = attach(ledger, notifier("a"), notifier("b", events=frozenset({"job.failed"})))
    a = new_job(ledger, outbox=str(tmp_path / "out"))
    folder = tmp_path / "out" / "podcasts" / "ep"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"status": "partial", "clips": []}))
    for stage in (Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED):
        ledger.transition(a, stage)
    ledger.transition(a, Stage.PARKED, park_reason="billing: no minutes left")
    ledger.transition(a, Stage.PARKED, park_reason="billing: still none")  # no second event
    ledger.transition(a, Stage.PROCESSING)
    ledger.transition(a, Stage.CLIPS_READY)
    ledger.transition(a, Stage.DELIVERING)
    ledger.transition(a, Stage.DELIVERED, outbox_dir=str(folder))
    b = new_job(ledger, "ep2.mp4", "")
    ledger.transition(
        b,
        Stage.FAILED,
        detail={"code": "probe_invalid", "message": "not a video"},  # as fail_job writes it
        error_code="probe_invalid",
        error="not a video — Check it.",
    )
    got = [(n, t) for n, t, _ in queued(ledger)]
    assert got == [
        ("a", "job.queued"),
        ("a", "job.parked"),
        ("a", "job.partial"),
        ("a", "job.queued"),
        ("a", "job.failed"),
        ("b", "job.failed"),
    ]
    assert len(woken) == 5
    bodies = {t: body for _, t, body in queued(ledger)}
    parked = bodies["job.parked"]["data"]
    assert parked["error"]["code"] == "billing" and parked["inbox"] == "studio-a"
    partial = bodies["job.partial"]["data"]
    assert partial["manifest"] == {"status": "partial", "clips": []}
    assert partial["outbox"] == "podcasts/ep" and partial["state"] == "delivered"
    failed = bodies["job.failed"]["data"]
    assert failed["error"] == {
        "code": "probe_invalid",
        "message": "not a video",
        "hint": "Check it.",
    }
    assert failed["rule"] == "" and failed["source"]["path"] == "ep2.mp4"
    # One event row per event, shared by its notifiers, with one webhook-id.
    assert len(ledger.query("SELECT id FROM notify_events")) == 5


def test_a_rolled_back_transition_leaves_no_event(ledger: Ledger) -> None:
    attach(ledger, notifier())
    job = new_job(ledger)
    before = queued(ledger)
    with pytest.raises(RuntimeError), ledger.batch():
        ledger.transition(job, Stage.FAILED, detail={"code": "x", "message": "y"})
        raise RuntimeError("crash before the commit")
    assert queued(ledger) == before
    assert ledger.require(job).stage is Stage.QUEUED


def test_filters_by_rule_and_no_notifier_writes_nothing(ledger: Ledger) -> None:
    attach(ledger, notifier(rules=frozenset({"podcasts"})))
    new_job(ledger, "other/x.mp4", "other")
    assert queued(ledger) == []
    new_job(ledger)
    assert [t for _, t, _ in queued(ledger)] == ["job.queued"]
    attach(ledger)
    new_job(ledger, "podcasts/y.mp4")
    assert len(queued(ledger)) == 1


def test_inbox_events_only_when_paused_flips(ledger: Ledger) -> None:
    attach(ledger, notifier(rules=frozenset({"podcasts"})))
    args: dict[str, Any] = {"entries": 1, "last_scan_at": 1.0}
    ledger.set_inbox("/in", paused=False, reason=None, **args)
    ledger.set_inbox("/in", paused=True, reason="inbox missing", **args)
    ledger.set_inbox("/in", paused=True, reason="inbox missing", **args)
    ledger.set_inbox("/in", paused=False, reason=None, **args)
    got = [(t, body["data"]) for _, t, body in queued(ledger)]
    assert got == [
        ("inbox.paused", {"inbox": "studio-a", "reason": "inbox missing"}),
        ("inbox.resumed", {"inbox": "studio-a", "reason": None}),
    ]


def test_health_and_status_lines(ledger: Ledger) -> None:
    attach(ledger, notifier("a"), notifier("b"))
    new_job(ledger)
    rows = {r.notifier: r for r in [*queue.due(ledger, "a", 1e12), *queue.due(ledger, "b", 1e12)]}
    now = ledger.clock.now()
    with ledger.transaction() as conn:
        queue.delivered(conn, rows["a"], "200", now)
        queue.failed(conn, rows["b"], "500", "Internal Server Error", now, now + 5)
    assert queue.due(ledger, "a", 1e12) == []
    assert queue.next_due(ledger, "b") == now + 5
    failing = queue.failing_notifiers(ledger)
    assert [(h.name, h.failing, h.waiting, h.last_status) for h in failing] == [("b", 1, 1, "500")]
    assert queue.status_lines(ledger) == [
        "! NOTIFIER b failing: 500 Internal Server Error (1 failed attempt(s) in a row, "
        "1 event(s) waiting)"
    ]
    # The event row stays while b still has to get it; goes with the last queue row.
    assert len(ledger.query("SELECT id FROM notify_events")) == 1
    with ledger.transaction() as conn:
        queue.failed(conn, rows["b"], "500", "again", now, None)
    assert ledger.query("SELECT id FROM notify_events") == []


def test_a_payload_that_cannot_be_built_does_not_stop_the_transition(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attach(ledger, notifier())
    job = new_job(ledger)

    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise ValueError("a bug")

    monkeypatch.setattr("watchd.notify.events.job_data", broken)
    ledger.transition(job, Stage.FAILED, detail={"code": "x", "message": "y"})
    assert ledger.require(job).stage is Stage.FAILED
    assert [t for _, t, _ in queued(ledger)] == ["job.queued"]
    assert "cannot build the job.failed event" in caplog.text

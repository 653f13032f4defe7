"""The pipeline's answer to a tier-limit refusal: learn the limit from our own projects the
service was counting, park the job with the reason, and wake it when one of ours frees a slot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from watchd.carmic.errors import ConcurrencyLimited
from watchd.clock import FakeClock
from watchd.ledger.db import JobRow, Ledger
from watchd.ledger.states import Stage
from watchd.pipeline.outcomes import Park
from watchd.pipeline.runner import TIER_RECHECK, Pipeline
from watchd.pipeline.scheduler import COUNTED_AT_CREATE, COUNTED_AT_PROCESS, ProcessingLimit

PATH = (Stage.PROBED, Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED, Stage.PROCESSING)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "ledger.db", clock=FakeClock(start=1000.0))


def pipeline(ledger: Ledger, limit: ProcessingLimit | None = None) -> Pipeline:
    # These methods only read and write the ledger: no client call is made.
    return Pipeline(ledger, cast(Any, None), clock=ledger.clock, limit=limit)


def job_at(ledger: Ledger, n: int, stage: Stage) -> JobRow:
    """A job moved along the main path up to ``stage`` (a project from UPLOADING on)."""
    job = ledger.add_job(
        inbox="/in", rel_path=f"f{n}.mp4", path=f"/in/f{n}.mp4", rule="", preset={}, size=1,
        mtime_ns=n, inode=n, dev=1, fingerprint=f"fp{n}",
    )  # fmt: skip
    for s in PATH[: PATH.index(stage) + 1]:
        extra = {"project_id": f"p{n}"} if s is Stage.UPLOADING else {}
        job = ledger.transition(job.id, s, **extra)
    return job


def refusal(retry_after: float | None = 5.0) -> ConcurrencyLimited:
    return ConcurrencyLimited(
        "Concurrent processing limit reached", status=409, retry_after=retry_after
    )


def park(p: Pipeline, job: JobRow, outcome: Park) -> None:
    p.ledger.transition(
        job.id,
        Stage.PARKED,
        park_reason=outcome.reason,
        resume_stage=outcome.resume.value,
        next_attempt_at=p.clock.now() + (outcome.delay or 0),
    )


def test_limit_learning_only_goes_down() -> None:
    lim = ProcessingLimit()
    assert lim.learn(0) is False and lim.effective() is None
    assert lim.learn(2) is True and lim.effective() == 2
    assert lim.learn(3) is False and lim.learn(2) is False
    assert lim.learn(1) is True and lim.effective() == 1


def test_a_refused_create_learns_from_our_projects_not_from_other_creates(
    ledger: Ledger,
) -> None:
    p = pipeline(ledger)
    job_at(ledger, 1, Stage.UPLOADING)  # has a project: the service counts it
    job_at(ledger, 2, Stage.CREATING)  # its create is in flight: no project yet
    refused = job_at(ledger, 3, Stage.CREATING)
    outcome = p.tier_refused(refused, refusal(), at_process=False)
    assert p.limit.effective() == 1
    assert outcome.reason.startswith("tier limit: Concurrent processing limit")
    assert outcome.resume is Stage.PROBED and outcome.delay == 5.0
    wait = p.tier_waits[refused.id]
    assert (wait.stages, wait.holders, wait.claims_slot) == (COUNTED_AT_CREATE, 1, False)


def test_a_refused_process_counts_only_projects_in_processing(ledger: Ledger) -> None:
    p = pipeline(ledger)
    job_at(ledger, 1, Stage.PROCESSING)
    job_at(ledger, 2, Stage.UPLOADED)  # uploaded, not yet processing: not counted at /process
    refused = job_at(ledger, 3, Stage.UPLOADED)
    outcome = p.tier_refused(refused, refusal(retry_after=None), at_process=True)
    assert p.limit.effective() == 1
    assert outcome.resume is Stage.UPLOADED and outcome.delay == TIER_RECHECK
    assert p.tier_waits[refused.id].stages == COUNTED_AT_PROCESS
    assert p.tier_refused(refused, refusal(retry_after=0), at_process=True).delay == 1.0


def test_a_refusal_while_none_of_ours_runs_learns_nothing_and_waits_retry_after(
    ledger: Ledger,
) -> None:
    p = pipeline(ledger)
    refused = job_at(ledger, 1, Stage.CREATING)
    park(p, refused, p.tier_refused(refused, refusal(), at_process=False))
    assert p.limit.effective() is None
    assert p.wake_tier_waits(ledger.clock.now(), None) == 0
    # Even with a limit known from the tier, nothing of ours freed a slot: no early wake.
    assert p.wake_tier_waits(ledger.clock.now(), 1) == 0
    assert ledger.require(refused.id).next_attempt_at == ledger.clock.now() + 5.0


def test_parked_jobs_wake_when_one_of_ours_frees_its_slot(ledger: Ledger) -> None:
    p = pipeline(ledger)
    holder = job_at(ledger, 1, Stage.PROCESSING)
    at_process = [job_at(ledger, n, Stage.UPLOADED) for n in (2, 3)]
    for job in at_process:
        park(p, job, p.tier_refused(job, refusal(), at_process=True))
    now = ledger.clock.now()
    # Our holder still processes: nobody wakes before the service's Retry-After.
    assert p.wake_tier_waits(now, 0) == 0
    assert p.wake_tier_waits(now, 1) == 0
    assert all(ledger.require(j.id).next_attempt_at == now + 5.0 for j in at_process)

    ledger.transition(holder.id, Stage.CLIPS_READY)
    # One slot is free: the oldest refusal asks again at once and takes it; the other waits.
    assert p.wake_tier_waits(now, 1) == 1
    first, second = (ledger.require(j.id) for j in at_process)
    assert first.next_attempt_at == now and second.next_attempt_at == now + 5.0
    assert list(p.tier_waits) == [second.id]


def test_create_waiters_all_go_back_to_the_queue_without_taking_a_slot(ledger: Ledger) -> None:
    p = pipeline(ledger, ProcessingLimit(learned=1))
    holder = job_at(ledger, 1, Stage.UPLOADING)
    waiting = [job_at(ledger, n, Stage.CREATING) for n in (2, 3)]
    for job in waiting:
        park(p, job, p.tier_refused(job, refusal(), at_process=False))
    ledger.transition(holder.id, Stage.UPLOADED)
    assert p.wake_tier_waits(ledger.clock.now(), 0) == 0  # still ours: still counted
    ledger.transition(holder.id, Stage.PROCESSING)
    ledger.transition(holder.id, Stage.CLIPS_READY)
    # Both go back to the create queue, where the learned limit lets one through at a time.
    assert p.wake_tier_waits(ledger.clock.now(), 1) == 0
    assert all(ledger.require(j.id).next_attempt_at == ledger.clock.now() for j in waiting)
    assert p.tier_waits == {}


def test_a_waiter_that_left_parked_is_forgotten(ledger: Ledger) -> None:
    p = pipeline(ledger)
    job_at(ledger, 1, Stage.PROCESSING)
    job = job_at(ledger, 2, Stage.UPLOADED)
    park(p, job, p.tier_refused(job, refusal(), at_process=True))
    ledger.transition(job.id, Stage.UPLOADED)  # `watchd retry`, or its Retry-After came
    assert p.wake_tier_waits(ledger.clock.now(), 1) == 0
    assert p.tier_waits == {}

"""The pipeline's answer to a tier-limit refusal: learn the limit from our own projects the
service was counting, park the job with the reason, and wake it when one of ours frees a slot."""

from __future__ import annotations

import json
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
        extra: dict[str, Any] = {"project_id": f"p{n}"} if s is Stage.UPLOADING else {}
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
    assert (wait.stages, wait.holders) == (COUNTED_AT_CREATE, 1)


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


def test_a_refused_process_counts_our_process_still_on_the_wire(ledger: Ledger) -> None:
    # The service granted the first /process but answers it after the second one's refusal
    # (it looks at the upload first): the first one is counted all the same.
    p = pipeline(ledger)
    granted, refused = (job_at(ledger, n, Stage.UPLOADED) for n in (1, 2))
    with p.asking_to_process(granted.id), p.asking_to_process(refused.id):
        park(p, refused, p.tier_refused(refused, refusal(), at_process=True))
    assert p.process_asks == set()
    assert p.limit.effective() == 1 and p.tier_waits[refused.id].holders == 1
    # Its answer in, the first one processes: the refused one waits for it to finish.
    ledger.transition(granted.id, Stage.PROCESSING)
    assert p.wake_tier_waits(1) == []
    ledger.transition(granted.id, Stage.CLIPS_READY)
    assert [j.id for j in p.wake_tier_waits(1)] == [refused.id]


def test_a_refusal_while_none_of_ours_runs_learns_nothing_and_waits_retry_after(
    ledger: Ledger,
) -> None:
    p = pipeline(ledger)
    refused = job_at(ledger, 1, Stage.CREATING)
    park(p, refused, p.tier_refused(refused, refusal(), at_process=False))
    assert p.limit.effective() is None
    # Even with a limit known from the tier, nothing of ours freed a slot: no early wake.
    assert p.wake_tier_waits(1) == []
    assert ledger.require(refused.id).next_attempt_at == ledger.clock.now() + 5.0


@pytest.mark.parametrize("at_process", [True, False])
def test_one_waiter_wakes_per_slot_one_of_ours_frees(ledger: Ledger, at_process: bool) -> None:
    p = pipeline(ledger)
    holder = job_at(ledger, 1, Stage.PROCESSING)
    refused_at = Stage.UPLOADED if at_process else Stage.CREATING
    waiters = [job_at(ledger, n, refused_at) for n in (2, 3)]
    for job in waiters:
        park(p, job, p.tier_refused(job, refusal(), at_process=at_process))
    assert [p.tier_waits[j.id].holders for j in waiters] == [1, 1]
    now = ledger.clock.now()
    # Our holder still processes: nobody wakes before the service's Retry-After.
    assert p.wake_tier_waits(1) == []
    assert all(ledger.require(j.id).next_attempt_at == now + 5.0 for j in waiters)

    ledger.transition(holder.id, Stage.CLIPS_READY)
    # One slot is free: the oldest refusal resumes at once; the other stays parked.
    assert p.wake_tier_waits(0) == []  # no room: others are queued for the slot
    (first,) = p.wake_tier_waits(1)
    assert first.id == waiters[0].id and first.next_attempt_at == 0
    assert first.stage is (Stage.UPLOADED if at_process else Stage.PROBED)
    second = ledger.require(waiters[1].id)
    assert second.stage is Stage.PARKED and second.next_attempt_at == now + 5.0
    assert list(p.tier_waits) == [second.id]
    (unpark,) = [e for e in ledger.events(first.id) if e.kind == "unpark"]
    assert json.loads(unpark.detail or "{}")["reason"].startswith("tier limit: ")
    # Holding the slot again, the first one is what the second waits for now.
    if at_process:
        ledger.transition(first.id, Stage.PROCESSING)
    else:
        ledger.transition(first.id, Stage.CREATING)
        ledger.transition(first.id, Stage.UPLOADING, project_id="p2")
    assert p.wake_tier_waits(1) == []
    ledger.transition(first.id, Stage.FAILED)
    assert [j.id for j in p.wake_tier_waits(1)] == [second.id]


def test_a_waiter_that_left_parked_is_forgotten(ledger: Ledger) -> None:
    p = pipeline(ledger)
    job_at(ledger, 1, Stage.PROCESSING)
    job = job_at(ledger, 2, Stage.UPLOADED)
    park(p, job, p.tier_refused(job, refusal(), at_process=True))
    ledger.transition(job.id, Stage.UPLOADED)  # `watchd retry`, or its Retry-After came
    assert p.wake_tier_waits(1) == []
    assert p.tier_waits == {}

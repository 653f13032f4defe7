"""The runner's error policy (one ledger write per outcome) and its scheduling: the processing
limit, fairness across inboxes and rules, what is due, and parked jobs coming back."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from tests.pipeline.conftest import World
from watchd.carmic.errors import (
    AuthError,
    BadRequest,
    BillingRequired,
    CarmicError,
    ConcurrencyLimited,
    Forbidden,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    PermanentError,
    RateLimited,
    ServerError,
    Unprocessable,
    UnsupportedMediaType,
)
from watchd.ledger.db import JobRow
from watchd.ledger.states import Stage
from watchd.pipeline.outcomes import Fail, Park, RetryLater
from watchd.pipeline.runner import JOB_BACKOFF, Pipeline
from watchd.pipeline.scheduler import ProcessingLimit


def nominal(attempt: int) -> float:
    return min(JOB_BACKOFF.max_delay, JOB_BACKOFF.base * JOB_BACKOFF.factor ** (attempt - 1))


def assert_backoff(delay: float, attempt: int) -> None:
    top = nominal(attempt)
    assert top * (1 - JOB_BACKOFF.jitter) <= delay <= top, (attempt, delay)


# ---- RetryLater -----------------------------------------------------------------------------


async def test_retry_later_with_a_delay_counts_an_attempt_and_records_the_reason(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    await p.handle_error(job, RetryLater("not yet", delay=42.0))
    j = world.job(job.id)
    assert (j.state, j.attempts, j.error) == ("queued", 1, "not yet")
    assert j.next_attempt_at == world.clock.now() + 42.0
    assert world.kinds(job.id) == ["discovered"]  # a wait is not a transition


async def test_a_handler_that_changes_nothing_backs_off_instead_of_spinning(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    calls: list[str] = []

    async def idle(_: Pipeline, j: JobRow) -> None:
        calls.append(j.id)

    p.handlers[Stage.QUEUED] = idle
    await asyncio.wait_for(p.run_job(job.id), timeout=10)
    j = world.job(job.id)
    assert calls == [job.id]
    assert (j.state, j.attempts) == ("queued", 1)
    assert j.error == "queued: no progress made (internal error)"
    assert_backoff(j.next_attempt_at - world.clock.now(), 1)


async def test_retry_later_uncounted_keeps_the_attempts(world: World) -> None:
    job = world.drop()
    world.ledger.update(job.id, attempts=3)
    p = world.pipeline()
    await p.handle_error(world.job(job.id), RetryLater("busy", delay=5.0, count=False))
    j = world.job(job.id)
    assert (j.attempts, j.error, j.next_attempt_at) == (3, "busy", world.clock.now() + 5.0)


async def test_retry_later_without_a_delay_backs_off_with_job_backoff(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    expected = random.Random(0)
    for attempt in range(1, 11):
        await p.handle_error(world.job(job.id), RetryLater("flaky"))
        j = world.job(job.id)
        delay = j.next_attempt_at - world.clock.now()
        assert j.attempts == attempt
        assert delay == pytest.approx(JOB_BACKOFF.delay(attempt, expected))
        assert_backoff(delay, attempt)
    assert nominal(10) == JOB_BACKOFF.max_delay  # capped at five minutes, not hours


# ---- transient, auth, local I/O ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        NetworkError("connection reset"),
        ServerError("boom", status=503),
        RateLimited("slow down", status=429, retry_after=90.0),
        ConcurrencyLimited("tier limit", status=429, retry_after=1.0),
    ],
    ids=["network", "5xx", "429", "concurrency"],
)
async def test_transient_errors_wait_for_retry_after_or_the_backoff(
    world: World, exc: CarmicError
) -> None:
    job = world.force(world.drop().id, Stage.PROCESSING)
    p = world.pipeline()
    await p.handle_error(job, exc)
    j = world.job(job.id)
    delay = j.next_attempt_at - world.clock.now()
    if isinstance(exc, RateLimited):
        # A pause Carmic asked for is a wait, not an error.
        assert (j.state, j.attempts, j.error) == ("processing", 1, None)
        assert j.wait == "rate limit: slow down" and j.wait_until == j.next_attempt_at
    else:
        assert (j.state, j.attempts, j.error) == ("processing", 1, str(exc))
    assert delay >= (exc.retry_after or 0.0)
    if exc.retry_after is None or exc.retry_after < nominal(1):
        assert_backoff(delay, 1)


async def test_auth_error_waits_at_least_a_minute_and_never_fails(world: World) -> None:
    job = world.force(world.drop().id, Stage.RENDERING)
    p = world.pipeline()
    for n in range(1, 4):
        await p.handle_error(world.job(job.id), AuthError("bad password", status=401))
        j = world.job(job.id)
        assert (j.state, j.attempts) == ("rendering", n)
        assert j.next_attempt_at - world.clock.now() >= 60.0
        assert "bad password" in (j.error or "")


async def test_local_os_error_backs_off(world: World) -> None:
    job = world.force(world.drop().id, Stage.DELIVERING)
    p = world.pipeline()
    await p.handle_error(job, OSError(28, "No space left on device"))
    j = world.job(job.id)
    assert (j.state, j.attempts) == ("delivering", 1)
    assert "No space left" in (j.error or "")
    assert_backoff(j.next_attempt_at - world.clock.now(), 1)


# ---- Park / Fail / permanent errors -----------------------------------------------------------


async def test_park_records_reason_resume_stage_and_recheck_time(world: World) -> None:
    job = world.force(world.drop().id, Stage.RENDERING)
    p = world.pipeline(park_retry_seconds=600.0)
    await p.handle_error(job, Park("billing: out of minutes", resume=Stage.RENDERING))
    j = world.job(job.id)
    assert (j.state, j.resume_stage, j.park_reason) == (
        "parked",
        "rendering",
        "billing: out of minutes",
    )
    assert j.next_attempt_at == world.clock.now() + 600.0
    (ev,) = world.events(job.id, "parked")
    assert (ev.from_state, ev.to_state) == ("rendering", "parked")
    assert json.loads(ev.detail or "") == {"reason": "billing: out of minutes"}


@pytest.mark.parametrize(
    ("stage", "resume"),
    [(Stage.CREATING, Stage.PROBED), (Stage.UPLOADED, Stage.UPLOADED)],
    ids=["create-402-nothing-created", "process-402"],
)
async def test_billing_required_parks_never_fails(
    world: World, stage: Stage, resume: Stage
) -> None:
    job = world.force(world.drop().id, stage)
    p = world.pipeline()
    await p.handle_error(job, BillingRequired("Insufficient processing minutes", status=402))
    j = world.job(job.id)
    assert (j.state, j.resume_stage) == ("parked", resume.value)
    assert j.park_reason == "billing: Insufficient processing minutes"
    assert world.detail(job.id, "parked") == {"reason": j.park_reason}


async def test_parked_job_resumes_at_its_stage_when_due(world: World) -> None:
    job = world.drop()
    p = world.pipeline(park_retry_seconds=900.0)
    await p.handle_error(job, Park("tier: waiting", resume=Stage.QUEUED))
    assert await world.step(p) == []  # not due yet
    world.clock.advance(900.0)
    assert await world.step(p) == [job.id]
    j = world.job(job.id)
    assert j.state == "probed"
    assert world.kinds(job.id) == ["discovered", "parked", "unpark", "probed"]
    assert world.detail(job.id, "unpark") == {"reason": "tier: waiting"}


async def test_fail_records_code_message_hint_and_resume_stage(world: World) -> None:
    job = world.force(world.drop().id, Stage.CREATING)
    p = world.pipeline()
    await p.handle_error(job, Fail("nope", "it cannot work", hint="do this", resume=Stage.PROBED))
    j = world.job(job.id)
    assert (j.state, j.error_code, j.resume_stage) == ("failed", "nope", "probed")
    assert j.error == "it cannot work — do this"
    assert world.detail(job.id, "failed") == {"code": "nope", "message": "it cannot work"}
    folder = world.outbox / "talk"
    assert "do this" in (folder / "FAILED.txt").read_text()
    assert json.loads((folder / "manifest.json").read_text())["status"] == "failed"
    assert (world.inbox / "_failed" / "talk.mp4").is_file()


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        (BadRequest("trim_end: bad", status=400), "Fix the rule's settings"),
        (Forbidden("no access", status=403), "the service user's role"),
        (NotFound("no such project", status=404), "watchd forget"),
        (PayloadTooLarge("too big", status=413), "below 5 GB"),
        (UnsupportedMediaType("no", status=415), "Convert the video to MP4"),
        (Unprocessable("bad field", status=422), "Fix the rule's settings"),
        (PermanentError("odd", status=418), "Fix the cause"),
    ],
    ids=["400", "403", "404", "413", "415", "422", "other"],
)
async def test_permanent_errors_fail_with_a_hint_by_status(
    world: World, exc: CarmicError, hint: str
) -> None:
    job = world.force(world.drop().id, Stage.UPLOADED)
    p = world.pipeline()
    await p.handle_error(job, exc)
    j = world.job(job.id)
    assert (j.state, j.error_code, j.resume_stage) == ("failed", exc.code, "uploaded")
    assert hint in (j.error or "")
    assert world.detail(job.id, "failed")["message"] == f"Carmic refused the request: {exc}"


async def test_unexpected_errors_retry_then_fail_as_internal(world: World) -> None:
    job = world.drop()
    p = world.pipeline(max_unexpected_errors=3)

    async def boom(_: Pipeline, __: JobRow) -> None:
        raise ZeroDivisionError("bug")

    p.handlers[Stage.QUEUED] = boom
    for n in (1, 2):
        await world.step(p)
        j = world.job(job.id)
        assert (j.state, j.attempts) == ("queued", 0)
        assert j.error == "internal error: ZeroDivisionError('bug')"
        assert_backoff(j.next_attempt_at - world.clock.now(), n)
        world.clock.advance(j.next_attempt_at - world.clock.now())
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.error_code, j.resume_stage) == ("failed", "internal_error", "queued")


# ---- schedule(): the processing limit and fairness ---------------------------------------------


def probed_jobs(world: World, groups: dict[str, int]) -> list[str]:
    """``groups`` rule -> number of jobs, each put straight into PROBED (ids in drop order)."""
    ids = []
    for rule, n in groups.items():
        for i in range(n):
            job = world.drop(f"{rule}/{i}.mp4", rule=rule, sample=i % 3)
            world.force(job.id, Stage.PROBED)
            ids.append(job.id)
            world.clock.advance(1.0)  # distinct ages: oldest first inside a group
    return ids


def hold_slots(p: Pipeline) -> None:
    """CREATING jobs stay there (holding their slot) instead of calling the API."""

    async def hold(pp: Pipeline, job: JobRow) -> None:
        pp.ledger.update(job.id, next_attempt_at=pp.clock.now() + 1e6)

    p.handlers[Stage.CREATING] = hold


async def test_schedule_grants_creation_up_to_the_limit_and_records_the_intent(
    world: World,
) -> None:
    ids = probed_jobs(world, {"a": 3})
    p = world.pipeline(limit=ProcessingLimit(configured=2))
    hold_slots(p)
    started = await world.step(p)
    assert started == ids[:2]
    assert [world.job(i).state for i in ids] == ["creating", "creating", "probed"]
    for i in ids[:2]:
        (ev,) = world.events(i, "create_intent")
        assert (ev.from_state, ev.to_state) == ("probed", "creating")
    assert p.in_flight() == 2
    # A restart counts the same slots in use from the ledger: nothing more is granted.
    p2 = await world.restart(p, limit=ProcessingLimit(configured=2))
    hold_slots(p2)
    await world.step(p2)
    assert world.job(ids[2]).state == "probed"
    assert not world.events(ids[2], "create_intent")


async def test_schedule_without_a_limit_grants_every_probed_job(world: World) -> None:
    ids = probed_jobs(world, {"a": 2, "b": 2})
    p = world.pipeline()
    hold_slots(p)
    await world.step(p)
    assert {world.job(i).state for i in ids} == {"creating"}


async def test_schedule_is_fair_across_rules_with_one_slot(world: World) -> None:
    ids = probed_jobs(world, {"a": 3, "b": 1, "c": 1})
    p = world.pipeline(limit=ProcessingLimit(tier=1))

    async def finish(pp: Pipeline, job: JobRow) -> None:
        # The project went through: the slot is free again.
        pp.ledger.transition(job.id, Stage.FAILED, kind="test_done")

    p.handlers[Stage.CREATING] = finish
    order = []
    for _ in ids:
        started = await world.step(p)
        assert len(started) == 1
        order.extend(started)
    a0, a1, a2, b0, c0 = ids
    assert order == [a0, b0, c0, a1, a2]


async def test_schedule_is_fair_across_inboxes(world: World) -> None:
    first = world.drop("x.mp4")
    other_inbox = world.root / "inbox2"
    other_inbox.mkdir()
    second_path = other_inbox / "y.mp4"
    second_path.write_bytes(world.samples[1].read_bytes())
    second = world.ledger.add_job(
        inbox=str(other_inbox),
        rel_path="y.mp4",
        path=str(second_path),
        rule="",
        preset={},
        size=1,
        mtime_ns=1,
        inode=1,
        dev=1,
        fingerprint="other",
    )
    third = world.drop("z.mp4", sample=2)
    for j in (first, second, third):
        world.force(j.id, Stage.PROBED)
    p = world.pipeline(limit=ProcessingLimit(configured=2))
    hold_slots(p)
    await world.step(p)
    # One from each inbox, though both jobs of the first inbox are older.
    assert world.job(second.id).state == "creating"
    assert sorted(world.job(i).state for i in (first.id, third.id)) == ["creating", "probed"]


async def test_schedule_skips_paused_inboxes_and_jobs_not_due(world: World) -> None:
    ids = probed_jobs(world, {"a": 1})
    later = world.drop("later.mp4", sample=1)
    world.ledger.update(later.id, next_attempt_at=world.clock.now() + 30)
    p = world.pipeline()
    hold_slots(p)
    p.paused_inboxes.add(str(world.inbox))
    assert await world.step(p) == []
    assert world.job(ids[0]).state == "probed"
    p.paused_inboxes.clear()
    assert await world.step(p) == ids
    world.clock.advance(30)
    assert await world.step(p) == [later.id]


async def test_a_running_job_is_not_started_twice_and_stop_ends_scheduling(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    assert p.schedule(world.clock.now()) == [job.id]
    assert p.schedule(world.clock.now()) == []  # its task is still running
    await p.stop()
    assert p.schedule(world.clock.now()) == []
    assert world.job(job.id).state == "queued"  # cancelled before it did anything

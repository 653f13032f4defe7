"""The pipeline runner: drives each job's state machine, one stage at a time.

Each job is advanced by one asyncio task that runs stage handlers until the job is terminal,
parked, or has to wait (``next_attempt_at`` in the future). Handlers only ever move a job forward
through :meth:`Ledger.transition`; failures come back as exceptions and are turned into exactly one
ledger write here, so the retry/park/fail policy lives in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchd import failures
from watchd.carmic.errors import (
    AuthError,
    BillingRequired,
    CarmicError,
    ConcurrencyLimited,
    PermanentError,
    RateLimited,
    TransientError,
)
from watchd.carmic.retry import RetryPolicy
from watchd.clock import Clock, SystemClock
from watchd.cluster.context import CURRENT_JOB
from watchd.cluster.errors import DatabaseUnavailable, LeaseLost
from watchd.ledger.db import JobRow
from watchd.ledger.protocol import LedgerAPI
from watchd.ledger.states import HOLDS_PROCESSING_SLOT, TERMINAL, Stage
from watchd.pipeline import waits
from watchd.pipeline.outcomes import Fail, Park, RetryLater, SourceMissing, Wait
from watchd.pipeline.scheduler import (
    COUNTED_AT_CREATE,
    COUNTED_AT_PROCESS,
    FairPicker,
    ProcessingLimit,
    TierWait,
)
from watchd.watching.openfiles import SharedWalks

if TYPE_CHECKING:
    from watchd.carmic.client import CarmicClient

log = logging.getLogger("watchd.pipeline")

Handler = Callable[["Pipeline", JobRow], Awaitable[None]]
ProbeFn = Callable[..., Awaitable[Any]]


# A job's own retries (a stage that failed transiently) back off much further than one HTTP
# call's: a network outage or a NAS hiccup can last hours, and nothing is lost by waiting.
JOB_BACKOFF = RetryPolicy(attempts=1_000_000, base=2.0, factor=2.0, max_delay=300.0, jitter=0.2)
# A tier-limit refusal without a usable Retry-After is asked again after this long (unless one
# of our own projects frees a slot sooner); never sooner than the floor, whatever the hint.
TIER_RECHECK = 30.0
TIER_RECHECK_FLOOR = 1.0


@dataclass
class PipelineSettings:
    realtime: str = "sse"  # sse | poll
    poll_seconds: float = 10.0
    max_uploads: int = 2
    max_render_retries: int = 2
    probe_timeout: float = 120.0
    max_bytes: int = 5_000_000_000
    park_retry_seconds: float = 900.0  # billing/tier waits are re-checked this often
    missing_source_grace: float = 60.0
    settle_seconds: float = 5.0  # a file that changed is looked at again after this long
    hold_seconds: float = 600.0  # a file that looks truncated is held this long before it fails
    backoff: RetryPolicy = JOB_BACKOFF
    max_unexpected_errors: int = 8


class Pipeline:
    def __init__(
        self,
        ledger: LedgerAPI,
        client: CarmicClient,
        *,
        settings: PipelineSettings | None = None,
        clock: Clock | None = None,
        probe_fn: ProbeFn | None = None,
        limit: ProcessingLimit | None = None,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.settings = settings or PipelineSettings()
        self.clock: Clock = clock or SystemClock()
        if probe_fn is None:
            from watchd.probe import probe as default_probe

            probe_fn = default_probe
        self.probe_fn: ProbeFn = probe_fn
        self.limit = limit or ProcessingLimit()
        self.picker = FairPicker()
        self.upload_slots = asyncio.Semaphore(max(1, self.settings.max_uploads))
        self.open_checks = SharedWalks()  # the last look before an upload, shared by all jobs
        self.paused_inboxes: set[str] = set()
        self.fresh_intents: set[str] = set()  # CREATING jobs whose POST this process has not sent
        # job id -> (upload URL, monotonic time this process received it)
        self.upload_urls: dict[str, tuple[str, float]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        # Jobs parked on a tier-limit refusal, in refusal order (this process's memory only: after
        # a restart they wait out their Retry-After).
        self.tier_waits: dict[str, TierWait] = {}
        self.process_asks: set[str] = set()  # jobs whose /process is on the wire
        self.on_event = on_event or (lambda kind, data: None)
        self.rng = random.Random()
        # The workspace's template names (caption styles besides the built-ins), set by the
        # daemon; None while unknown. A job naming another style fails before its create.
        self.workspace_styles: frozenset[str] | None = None
        self._stopping = False
        self._unexpected: dict[str, int] = {}
        # With several hosts: awaited before each stage of a job (watchd/cluster/lease.py), and
        # this host's path of each inbox name (a job's paths are the host that took it's).
        self.lease_gate: Callable[[], Awaitable[None]] | None = None
        self.inbox_paths: dict[str, Path] = {}
        self.outbox_paths: dict[str, Path] = {}
        from watchd.pipeline import deliver, ingest, render

        self.handlers: dict[Stage, Handler] = {
            Stage.QUEUED: ingest.handle_queued,
            Stage.CREATING: ingest.handle_creating,
            Stage.UPLOADING: ingest.handle_uploading,
            Stage.UPLOADED: ingest.handle_uploaded,
            Stage.PROCESSING: ingest.handle_processing,
            Stage.CLIPS_READY: render.handle_clips_ready,
            Stage.RENDERING: render.handle_rendering,
            Stage.EXPORTING: render.handle_exporting,
            Stage.DELIVERING: deliver.handle_delivering,
            Stage.DUPLICATE: deliver.handle_duplicate,
        }
        self._fail_job = deliver.fail_job

    # ---- scheduling ------------------------------------------------------------------------

    def schedule(self, now: float) -> list[str]:
        """Start a task for every due job that has none; grant project creation to PROBED jobs
        while the processing limit allows, fairly across inboxes and rules. Returns the ids
        started."""
        if self._stopping:
            return []
        started: list[str] = []
        # Ids only, of the due jobs without a task (marked busy by _start): runs every tick.
        waiting_create: list[str] = []
        for job_id, state, inbox in self.ledger.due_ids(now, idle_only=True):
            if job_id in self.tasks:
                continue  # the busy marks mirror self.tasks; kept as the guard it always was
            if state == Stage.PROBED.value:
                if inbox not in self.paused_inboxes:
                    waiting_create.append(job_id)
                continue
            self._start(job_id)
            started.append(job_id)
        limit = self.limit.effective()
        capacity = None if limit is None else limit - self.in_flight()
        if capacity is not None and self.tier_waits:
            # A job the tier refused takes a slot one of ours freed before anyone new does.
            for job in self.wake_tier_waits(capacity - len(waiting_create)):
                if job.stage is Stage.PROBED:
                    waiting_create.append(job.id)
                else:
                    capacity -= 1  # back at /process: in a slot from now on
                    self._start(job.id)
                    started.append(job.id)
        if waiting_create and (capacity is None or capacity > 0):
            try:
                with self.ledger.granting() as shared:
                    if shared and capacity is not None and limit is not None:
                        # Read again under the grants' lock: the slots the other hosts took
                        # since are counted too.
                        capacity = min(capacity, limit - self.in_flight())
                    granted = self._grant(waiting_create, capacity)
            except LeaseLost as e:
                # Taken over since this tick's look (then none of the grants is made): the
                # next tick grants from what this node still holds.
                log.info("grants of processing slots deferred: %s", e)
                granted = []
            for job_id in granted:
                self.fresh_intents.add(job_id)
                self._start(job_id)
                started.append(job_id)
        return started

    def _grant(self, waiting_create: list[str], capacity: int | None) -> list[str]:
        if capacity is not None and capacity <= 0:
            return []
        granted: list[str] = []
        waiting = self.ledger.get_many(waiting_create)
        for job in self.picker.pick(waiting, capacity):
            # Recording the intent is what claims the slot: the count is derived from the
            # ledger, so a restart sees exactly the same number of slots in use.
            self.ledger.transition(
                job.id, Stage.CREATING, expect=Stage.PROBED, kind="create_intent"
            )
            granted.append(job.id)
        return granted

    def in_flight(self) -> int:
        return sum(
            n
            for state, n in self.ledger.counts_by_state().items()
            if Stage(state) in HOLDS_PROCESSING_SLOT
        )

    # ---- the tier's processing limit --------------------------------------------------------

    def holders(self, stages: frozenset[Stage], *, exclude: str = "") -> int:
        """How many of our jobs have a project and stand in ``stages``."""
        return sum(1 for j in self.ledger.jobs(stages) if j.project_id and j.id != exclude)

    def tier_refused(self, job: JobRow, err: ConcurrencyLimited, *, at_process: bool) -> Park:
        """The service refused ``job`` on the tier's processing limit (at create or at
        /process): learn the limit from how many of our projects it was counting, and park the
        job until one of them frees its slot or the service's Retry-After has passed."""
        stages = COUNTED_AT_PROCESS if at_process else COUNTED_AT_CREATE
        holders = self.holders(stages, exclude=job.id)
        if at_process:
            # Another /process of ours on the wire may have been granted before this refusal:
            # the service can answer it second (it looks at the upload before it answers).
            holders += len(self.process_asks - {job.id})
        if self.limit.learn(holders):
            self.job_log(job).warning(
                "learned the workspace's processing limit from a refusal while %d of our "
                "projects were in processing; processing limit now %s",
                holders,
                self.limit.effective(),
            )
        self.tier_waits[job.id] = TierWait(stages, holders)
        hint = err.retry_after if err.retry_after is not None else TIER_RECHECK
        return Park(
            f"tier limit: {err.message}",
            resume=Stage.UPLOADED if at_process else Stage.PROBED,
            delay=max(TIER_RECHECK_FLOOR, hint),
        )

    @contextlib.contextmanager
    def asking_to_process(self, job_id: str) -> Iterator[None]:
        """Marks ``job_id``'s /process as on the wire for as long as the block runs."""
        self.process_asks.add(job_id)
        try:
            yield
        finally:
            self.process_asks.discard(job_id)

    def wake_tier_waits(self, room: int) -> list[JobRow]:
        """Resume the tier-parked jobs whose refusal one of our own projects has since answered
        by freeing its slot, oldest refusal first, at most ``room`` of them (without waiting
        out the service's Retry-After). Returns them as they are now."""
        resumed: list[JobRow] = []
        for job_id, wait in list(self.tier_waits.items()):
            job = self.ledger.get(job_id)
            if job is None or job.stage is not Stage.PARKED or job_id in self.tasks:
                # Retried by hand, or resuming already (its Retry-After came first).
                del self.tier_waits[job_id]
                continue
            if room <= 0:
                break
            if self.holders(wait.stages) >= wait.holders:
                continue
            del self.tier_waits[job_id]
            resumed.append(self.unpark(job, "one of our projects freed its slot"))
            room -= 1
        return resumed

    def unpark(self, job: JobRow, why: str) -> JobRow:
        """Move a parked job back to the stage it waits to resume at, due at once."""
        resume = Stage(job.resume_stage or Stage.QUEUED.value)
        new = self.ledger.transition(
            job.id,
            resume,
            kind="unpark",
            detail={"reason": job.park_reason},
            next_attempt_at=0,
            **waits.CLEARED,
        )
        self.job_log(job).info(
            "resuming at %s (%s) after waiting (%s)", resume, why, job.park_reason
        )
        return new

    def _start(self, job_id: str) -> None:
        task = asyncio.create_task(self.run_job(job_id), name=f"job-{job_id}")
        self.tasks[job_id] = task
        self.ledger.set_busy(job_id, True)  # schedule() no longer reads it while it runs
        task.add_done_callback(functools.partial(self._done, job_id))

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(job_id) is task:
            del self.tasks[job_id]
            self.ledger.set_busy(job_id, False)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: task crashed: %r", job_id, task.exception())

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop starting work; cancel running tasks. The ledger already holds every job's last
        completed stage, so cancelling loses at most the step in flight, which is redone."""
        self._stopping = True
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # ---- one job ---------------------------------------------------------------------------

    async def run_job(self, job_id: str) -> None:
        CURRENT_JOB.set(job_id)  # this task's own context: the lease gate knows whose it is
        try:
            await self._run_job(job_id)
        except LeaseLost as e:
            log.info("%s; this node stops working on it", e, extra={"job_id": job_id})
        except DatabaseUnavailable as e:
            log.warning("paused: %s", e, extra={"job_id": job_id})

    def lease_lost(self, job_id: str) -> None:
        """Another node carries ``job_id`` on: cancel this process's task for it."""
        task = self.tasks.get(job_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.tier_waits.pop(job_id, None)
        self.upload_urls.pop(job_id, None)

    async def _run_job(self, job_id: str) -> None:
        handed: JobRow | None = None  # the job as the last handler was given it
        while not self._stopping:
            job = self.ledger.get(job_id)
            if job is None or job.stage in TERMINAL:
                return
            if job.next_attempt_at > self.clock.now():
                return
            stage = job.stage
            if stage is Stage.PARKED:
                self.unpark(job, "re-check due")
                continue
            if stage is Stage.PROBED:
                return  # creation waits for a slot from schedule()
            handler = self.handlers[stage]
            if self.lease_gate is not None:
                await self.lease_gate()
            try:
                if job == handed:
                    # The last handler returned and changed nothing: it would spin for ever.
                    raise RetryLater(f"{stage}: no progress made (internal error)")
                handed = job
                await handler(self, job)
                self._unexpected.pop(job_id, None)
            except (asyncio.CancelledError, LeaseLost, DatabaseUnavailable):
                raise
            except Exception as exc:
                handed = None
                await self.handle_error(job, exc)
            await asyncio.sleep(0)  # never hog the loop, however fast the stages go

    async def handle_error(self, job: JobRow, exc: BaseException) -> None:
        jl = self.job_log(job)
        stage = job.stage
        now = self.clock.now()
        keeps_waiting = isinstance(exc, SourceMissing) and job.inbox in self.paused_inboxes
        waiting = isinstance(exc, Wait | Park | BillingRequired | RateLimited) or keeps_waiting
        if job.wait and not waiting:
            waits.end_wait(self, job)  # what follows is not the same wait
        if isinstance(exc, Wait):
            waits.start_wait(self, job, exc.cause, exc.detail, exc.delay or 0.0)
        elif isinstance(exc, RetryLater):
            attempts = job.attempts + (1 if exc.count else 0)
            delay = exc.delay if exc.delay is not None else self.backoff(attempts)
            self.ledger.update(
                job.id, attempts=attempts, next_attempt_at=now + delay, error=exc.reason
            )
            jl.info("%s: %s; next try in %.0fs", stage, exc.reason, delay)
        elif isinstance(exc, Park):
            delay = exc.delay if exc.delay is not None else self.settings.park_retry_seconds
            # A wait, not an error: the reason goes to park_reason and the wait columns.
            cause, _, detail = exc.reason.partition(":")
            self.ledger.transition(
                job.id,
                Stage.PARKED,
                kind="parked",
                detail={"reason": exc.reason},
                resume_stage=exc.resume.value,
                park_reason=exc.reason,
                next_attempt_at=now + delay,
                **waits.wait_fields(job, cause.strip(), detail.strip(), now + delay, now),
            )
            jl.warning(
                "parked: %s (re-checked every %.0fs, or run `watchd retry %s`)",
                exc.reason,
                delay,
                job.id,
            )
        elif isinstance(exc, Fail):
            await self._fail_job(self, job, exc)
        elif isinstance(exc, SourceMissing):
            if job.inbox in self.paused_inboxes:
                waits.start_wait(
                    self, job, "inbox paused", "the source cannot be reached until it is back", 30
                )
            elif job.attempts < 2:
                # A NAS hiccup looks the same as a deletion for a moment: look again later.
                grace = self.settings.missing_source_grace
                self.ledger.update(
                    job.id,
                    attempts=job.attempts + 1,
                    next_attempt_at=now + grace,
                    error=f"source file not found: {exc.path}; looking again in {grace:.0f}s",
                )
            else:
                await self._fail_job(
                    self,
                    job,
                    Fail(
                        "source_missing",
                        f"{job.name} disappeared from the inbox before it was uploaded",
                        resume=Stage.QUEUED,
                    ),
                )
        elif isinstance(exc, BillingRequired):
            await self.handle_error(
                job, Park(f"billing: {exc.message}", resume=_resume_after_billing(stage))
            )
        elif isinstance(exc, RateLimited):
            # Carmic asked for a pause (429): a wait, told once, not an error.
            attempts = job.attempts + 1
            delay = max(exc.retry_after or 0.0, self.backoff(attempts))
            where = f" ({exc.endpoint})" if exc.endpoint else ""
            waits.start_wait(
                self, job, "rate limit", f"{exc.message}{where}", delay, attempts=attempts
            )
        elif isinstance(exc, ConcurrencyLimited | TransientError):
            attempts = job.attempts + 1
            delay = max(exc.retry_after or 0.0, self.backoff(attempts))
            self.ledger.update(
                job.id, attempts=attempts, next_attempt_at=now + delay, error=str(exc)
            )
            jl.warning("%s: %s; retrying in %.0fs", stage, exc, delay)
        elif isinstance(exc, AuthError):
            # The service account cannot log in (password changed?): every job waits; none fails.
            attempts = job.attempts + 1
            delay = max(60.0, self.backoff(attempts))
            self.ledger.update(
                job.id, attempts=attempts, next_attempt_at=now + delay, error=str(exc)
            )
            jl.error("%s: cannot log in to Carmic: %s; retrying in %.0fs", stage, exc, delay)
        elif isinstance(exc, PermanentError | CarmicError):
            await self._fail_job(
                self,
                job,
                Fail(
                    exc.code,
                    f"Carmic refused the request: {exc}",
                    hint=failures.hint(exc.code, job.id, exc.status),
                    resume=stage,
                ),
            )
        elif isinstance(exc, OSError):
            # Local disk trouble (outbox unwritable, disk full, NAS hiccup): nothing is lost by
            # waiting, and the operator sees the error in `watchd status`.
            attempts = job.attempts + 1
            delay = self.backoff(attempts)
            self.ledger.update(
                job.id, attempts=attempts, next_attempt_at=now + delay, error=f"{exc}"
            )
            jl.error("%s: local I/O error: %s; retrying in %.0fs", stage, exc, delay)
        else:
            n = self._unexpected.get(job.id, 0) + 1
            self._unexpected[job.id] = n
            jl.exception("%s: unexpected error (%d): %r", stage, n, exc, exc_info=exc)
            if n >= self.settings.max_unexpected_errors:
                await self._fail_job(
                    self,
                    job,
                    Fail(
                        "internal_error",
                        f"watchd hit an internal error: {exc!r}",
                        resume=stage,
                    ),
                )
            else:
                delay = self.backoff(n)
                self.ledger.update(
                    job.id, next_attempt_at=now + delay, error=f"internal error: {exc!r}"
                )

    # ---- helpers for stage handlers --------------------------------------------------------

    def backoff(self, attempts: int) -> float:
        return self.settings.backoff.delay(max(1, attempts), self.rng)

    def job_log(self, job: JobRow) -> logging.LoggerAdapter[logging.Logger]:
        return logging.LoggerAdapter(
            log,
            {
                "job_id": job.id,
                "project_id": job.project_id,
                "rule": job.rule,
                "state": job.state,
                "source_path": job.path,
            },
        )

    def advance(
        self,
        job: JobRow,
        to: Stage,
        *,
        kind: str = "transition",
        detail: Any = None,
        say: str = "",
        relaxed: bool = False,
        **fields: Any,
    ) -> JobRow:
        """Move ``job`` on, resetting its retry counters, and log the change at INFO, with what
        ``say`` adds (``uploading -> uploaded: 176628 bytes at 8.2 MB/s``): one line where a
        milestone and its transition used to take two. ``relaxed``: a transition whose loss to
        a power cut is harmless (see :meth:`Ledger.relaxed`). A wait the job was in ends."""
        if job.wait:
            waits.end_wait_line(self, job)
            fields = {**waits.CLEARED, **fields}
        with self.ledger.relaxed() if relaxed else contextlib.nullcontext():
            new = self.ledger.transition(
                job.id,
                to,
                expect=job.stage,
                kind=kind,
                detail=detail,
                attempts=0,
                next_attempt_at=0,
                error=None,
                **fields,
            )
        if say:
            self.job_log(new).info("%s -> %s: %s", job.state, to, say)
        else:
            self.job_log(new).info("%s -> %s", job.state, to)
        self.on_event("transition", {"job_id": job.id, "from": job.state, "to": to.value})
        return new

    def durable(self) -> None:
        """Before a billed or destructive call: nothing committed so far may be lost to a power
        cut, a relaxed commit of another job's task made since this job's last durable write
        included (see Ledger.make_durable)."""
        self.ledger.make_durable()

    def source_path(self, job: JobRow) -> Path:
        root = self.inbox_paths.get(job.inbox)
        if root is None:
            return Path(job.path)
        recorded = Path(job.path)
        if recorded.is_relative_to(root):
            return recorded  # the same mount path on every host: the name exactly as found
        return root / job.rel_path


def _resume_after_billing(stage: Stage) -> Stage:
    # A 402 at create means nothing was created: resume by asking for a slot again.
    return Stage.PROBED if stage is Stage.CREATING else stage

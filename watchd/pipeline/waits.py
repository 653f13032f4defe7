"""A job's waits: things that pass by themselves, kept apart from its errors.

A wait (a rate limit, the first job of the same content, the tier's processing limit, billing,
a file held because it may still be written) is stored in the job's ``wait`` (``"cause:
detail"``), ``wait_until`` and ``wait_since`` columns, never in ``error``. The log gets one line
when a wait starts and one when it ends, however often the job looks again in between.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from watchd.ledger.db import JobRow

if TYPE_CHECKING:
    from watchd.pipeline.runner import Pipeline

CLEARED: dict[str, Any] = {"wait": None, "wait_until": None, "wait_since": None}


def cause_of(wait: str | None) -> str:
    """``"export rate limit: 429 ..."`` -> ``"export rate limit"`` ("" for no wait)."""
    if not wait:
        return ""
    return wait.split(":", 1)[0].strip()


def wait_fields(job: JobRow, cause: str, detail: str, until: float, now: float) -> dict[str, Any]:
    """The ledger fields of a wait for ``cause`` until ``until``: the wait keeps its start
    while its cause stays the same."""
    same = cause_of(job.wait) == cause and job.wait_since is not None
    return {
        "wait": f"{cause}: {detail}" if detail else cause,
        "wait_until": until,
        "wait_since": job.wait_since if same else now,
        "error": None,
    }


def start_wait(
    p: Pipeline, job: JobRow, cause: str, detail: str, delay: float, **fields: Any
) -> None:
    """Record that ``job`` waits ``delay`` seconds for ``cause``; logs only when the wait
    starts (a new cause), not on every look."""
    now = p.clock.now()
    values = wait_fields(job, cause, detail, now + delay, now)
    p.ledger.update(job.id, next_attempt_at=now + delay, **values, **fields)
    if cause_of(job.wait) != cause:
        p.job_log(job).info("waiting: %s", values["wait"])
        p.on_event("wait", {"job_id": job.id, "cause": cause})


def end_wait_line(p: Pipeline, job: JobRow, *, level: int = logging.INFO) -> None:
    """The line that says ``job``'s wait is over (nothing when it was not waiting)."""
    if not job.wait:
        return
    took = p.clock.now() - (job.wait_since or p.clock.now())
    p.job_log(job).log(level, "wait over after %.0fs: %s", max(0.0, took), cause_of(job.wait))


def end_wait(p: Pipeline, job: JobRow) -> None:
    """The job goes on without a transition (a rate limit passed mid-stage): clear its wait."""
    if not job.wait:
        return
    end_wait_line(p, job)
    p.ledger.update(job.id, **CLEARED)

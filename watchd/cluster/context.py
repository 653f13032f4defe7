"""The job a task works on, for the lease gate (watchd/cluster/lease.py)."""

from __future__ import annotations

import contextvars

# Set by the pipeline's runner at the start of each job's task (a task's own context).
CURRENT_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "watchd_current_job", default=None
)

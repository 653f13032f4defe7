"""How a stage handler says "not now", "give up" or "wait for a person".

Handlers raise these (or a :mod:`watchd.carmic.errors` class); the runner turns each into one
ledger transition, so the policy lives in one place.
"""

from __future__ import annotations

from watchd.ledger.states import Stage


class Outcome(Exception):
    pass


class RetryLater(Outcome):
    """Try this stage again after ``delay`` seconds (no failure counted when ``count`` is False)."""

    def __init__(self, reason: str, delay: float | None = None, *, count: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.count = count


class Wait(RetryLater):
    """Not an error: the job waits for something that will pass by itself (a rate limit, the
    first job of the same content, a writer that may come back). ``watchd status`` shows it as a
    wait with its ``cause`` and until when, the log says when it starts and when it ends."""

    def __init__(self, cause: str, detail: str, delay: float) -> None:
        super().__init__(f"{cause}: {detail}", delay, count=False)
        self.cause = cause
        self.detail = detail


class Fail(Outcome):
    """The job cannot succeed as it is: a person must act (the hint says how)."""

    def __init__(
        self, code: str, message: str, *, hint: str = "", resume: Stage | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.resume = resume


class Park(Outcome):
    """Wait on something outside the daemon (billing minutes, tier); retried on a schedule and by
    ``watchd retry``; resumes at ``resume``."""

    def __init__(self, reason: str, resume: Stage, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.resume = resume
        self.delay = delay


class SourceMissing(Outcome):
    def __init__(self, path: str) -> None:
        super().__init__(f"source file is gone: {path}")
        self.path = path

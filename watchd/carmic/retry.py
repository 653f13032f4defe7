"""When to try an idempotent Carmic call again, as a checked value object (rq's ``Retry``).

``RetryPolicy.delay`` is a pure function of the attempt number and a random source, so tests
pin the jitter with a seeded ``random.Random`` and never sleep on wall time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from watchd.carmic.errors import CarmicError, ConcurrencyLimited, RateLimited, TransientError


@dataclass(frozen=True)
class RetryPolicy:
    """Jittered exponential backoff for idempotent calls.

    ``attempts`` counts every try including the first (1 = never retry). The n-th retry waits
    ``min(max_delay, base * factor**(n-1))``, of which the fraction ``jitter`` is random
    ("equal jitter": never less than ``1 - jitter`` of the nominal delay, so retries from many
    tasks spread out without any of them hammering at once). A 429 waits its Retry-After
    instead, unless that is longer than ``max_retry_after``: then the call gives up at once and
    the caller (the pipeline) reschedules the job with the error's ``retry_after``.
    """

    attempts: int = 5
    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        problems = []
        if self.attempts < 1:
            problems.append(f"attempts must be >= 1 (got {self.attempts})")
        if self.base < 0:
            problems.append(f"base must be >= 0 (got {self.base})")
        if self.factor < 1:
            problems.append(f"factor must be >= 1 (got {self.factor})")
        if self.max_delay < 0:
            problems.append(f"max_delay must be >= 0 (got {self.max_delay})")
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be within [0, 1] (got {self.jitter})")
        if self.max_retry_after < 0:
            problems.append(f"max_retry_after must be >= 0 (got {self.max_retry_after})")
        if problems:
            raise ValueError("invalid RetryPolicy: " + "; ".join(problems))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempt``-th failure (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based (got {attempt})")
        # Cap the exponent first: factor**attempt overflows a float long before attempts run out.
        exponent = min(attempt - 1, 64)
        nominal = min(self.max_delay, self.base * self.factor**exponent)
        return nominal * (1.0 - self.jitter) + nominal * self.jitter * rng.random()

    def wait_for(self, error: CarmicError, attempt: int, rng: random.Random) -> float | None:
        """How long to wait before retrying after ``error`` on the ``attempt``-th try, or
        ``None`` when the call should give up and raise ``error``."""
        if attempt >= self.attempts:
            return None
        # A tier concurrency limit does not clear in seconds: the pipeline parks the job.
        if not isinstance(error, TransientError) or isinstance(error, ConcurrencyLimited):
            return None
        if isinstance(error, RateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return max(0.0, error.retry_after)
        return self.delay(attempt, rng)


NO_RETRY = RetryPolicy(attempts=1)

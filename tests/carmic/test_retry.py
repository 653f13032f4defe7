"""RetryPolicy: a pure, checked value object."""

from __future__ import annotations

import random

import pytest

from watchd.carmic.errors import (
    BadRequest,
    ConcurrencyLimited,
    NetworkError,
    RateLimited,
    ServerError,
)
from watchd.carmic.retry import NO_RETRY, RetryPolicy


def test_delay_grows_exponentially_without_jitter() -> None:
    p = RetryPolicy(base=1, factor=2, max_delay=10, jitter=0)
    rng = random.Random(0)
    assert [p.delay(n, rng) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_jitter_stays_within_its_band_and_is_reproducible() -> None:
    p = RetryPolicy(base=4, factor=2, max_delay=100, jitter=0.5)
    a = [p.delay(3, random.Random(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # same seed, same answer: delay is pure
    rng = random.Random(1)
    for _ in range(500):
        d = p.delay(3, rng)
        assert 8 <= d <= 16


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=30, jitter=0).delay(10_000, random.Random()) == 30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"base": -1},
        {"factor": 0.5},
        {"max_delay": -1},
        {"jitter": 1.5},
        {"max_retry_after": -2},
    ],
)
def test_invalid_values_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_attempt_is_one_based() -> None:
    with pytest.raises(ValueError):
        RetryPolicy().delay(0, random.Random())


def test_wait_for_transient_errors_until_attempts_run_out() -> None:
    p = RetryPolicy(attempts=3, base=1, jitter=0)
    rng = random.Random(0)
    assert p.wait_for(ServerError("x", status=502), 1, rng) == 1
    assert p.wait_for(NetworkError("x"), 2, rng) == 2
    assert p.wait_for(NetworkError("x"), 3, rng) is None


def test_wait_for_never_retries_permanent_or_concurrency_errors() -> None:
    p = RetryPolicy()
    rng = random.Random(0)
    assert p.wait_for(BadRequest("x", status=400), 1, rng) is None
    assert p.wait_for(ConcurrencyLimited("x", status=429, retry_after=1), 1, rng) is None


def test_rate_limited_waits_retry_after_up_to_the_cap() -> None:
    p = RetryPolicy(max_retry_after=60, base=1, jitter=0)
    rng = random.Random(0)
    assert p.wait_for(RateLimited("x", status=429, retry_after=12.5), 1, rng) == 12.5
    assert p.wait_for(RateLimited("x", status=429, retry_after=0), 1, rng) == 0
    # Longer than we are willing to block a call: give up, the pipeline reschedules.
    assert p.wait_for(RateLimited("x", status=429, retry_after=61), 1, rng) is None
    # No Retry-After: ordinary backoff.
    assert p.wait_for(RateLimited("x", status=429), 1, rng) == 1


def test_no_retry_policy() -> None:
    assert NO_RETRY.wait_for(NetworkError("x"), 1, random.Random()) is None

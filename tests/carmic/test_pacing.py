"""TokenBucket: never more than N calls in any window, time passed through a FakeClock."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchd.carmic.pacing import TokenBucket
from watchd.clock import FakeClock


async def test_burst_of_capacity_then_waits_a_full_window() -> None:
    clock = FakeClock()
    b = TokenBucket(5, clock=clock, margin=0)
    t0 = clock.monotonic()
    for _ in range(5):
        assert await b.acquire() == 0
    waited = await b.acquire()
    assert waited == pytest.approx(60)
    assert clock.monotonic() - t0 == pytest.approx(60)


async def test_margin_widens_the_window() -> None:
    clock = FakeClock()
    b = TokenBucket(1, clock=clock, margin=1.5)
    await b.acquire()
    assert b.wait_time() == pytest.approx(61.5)


def test_zero_is_unlimited() -> None:
    clock = FakeClock()
    b = TokenBucket(0, clock=clock)
    assert b.unlimited
    assert all(b.try_acquire() for _ in range(1000))


def test_fractional_rates_keep_their_average() -> None:
    b = TokenBucket(2.5, clock=FakeClock(), margin=0)
    assert b.capacity == 2
    assert b.window == pytest.approx(48)


def test_negative_rate_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1, clock=FakeClock())


async def test_block_for_holds_every_token_back() -> None:
    clock = FakeClock()
    b = TokenBucket(0, clock=clock)
    b.block_for(30)
    assert not b.try_acquire()
    assert await b.acquire() == pytest.approx(30)
    assert b.try_acquire()


async def test_concurrent_waiters_are_served_in_order_without_exceeding_the_rate() -> None:
    clock = FakeClock()
    b = TokenBucket(2, clock=clock, margin=0)
    stamps: list[tuple[int, float]] = []

    async def take(i: int) -> None:
        await b.acquire()
        stamps.append((i, clock.monotonic()))

    await asyncio.gather(*(take(i) for i in range(6)))
    assert [i for i, _ in stamps] == list(range(6))
    times = [t for _, t in stamps]
    for k in range(len(times) - 2):
        assert times[k + 2] - times[k] >= 60 - 1e-9


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(min_value=1, max_value=10),
    gaps=st.lists(st.floats(min_value=0, max_value=40), min_size=1, max_size=60),
)
def test_no_window_ever_holds_more_than_the_rate(rate: int, gaps: list[float]) -> None:
    """Whatever the arrival pattern, the granted calls fit any sliding 60 s window."""
    clock = FakeClock()
    b = TokenBucket(rate, clock=clock, margin=0)
    granted: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        if b.try_acquire():
            granted.append(clock.monotonic())
    for i in range(len(granted) - rate):
        assert granted[i + rate] - granted[i] >= 60 - 1e-9

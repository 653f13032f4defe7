"""The change feed: nothing kept without subscribers; changes coalesced, none held back."""

from __future__ import annotations

import asyncio
import threading

import pytest

from watchd.web.feed import ChangeFeed, TooManySubscribers


async def test_changes_are_coalesced_and_none_is_lost() -> None:
    feed = ChangeFeed(asyncio.get_running_loop(), interval=0.05)
    feed.note("j1")  # nobody listens: dropped, no timer
    assert feed._timer is None
    sub = feed.subscribe()
    for i in range(50):
        feed.note(f"j{i % 3}")
    assert await sub.wait(2) == {"j0", "j1", "j2"}
    assert feed.flushes == 1
    feed.note("j9")
    assert await sub.wait(2) == {"j9"}
    assert await sub.wait(0.05) == set()  # a quiet spell: the keep-alive's empty set
    sub.close()
    assert feed.subscribers == 0
    assert await sub.wait(1) is None


async def test_a_note_from_another_thread_arrives() -> None:
    feed = ChangeFeed(asyncio.get_running_loop(), interval=0.01)
    sub = feed.subscribe()
    t = threading.Thread(target=feed.note, args=("j7",))
    t.start()
    t.join()
    assert await sub.wait(2) == {"j7"}


async def test_close_ends_every_subscription_and_limits_hold() -> None:
    feed = ChangeFeed(asyncio.get_running_loop(), max_subscribers=2)
    a, _b = feed.subscribe(), feed.subscribe()
    with pytest.raises(TooManySubscribers):
        feed.subscribe()
    waiting = asyncio.create_task(a.wait(10))
    await asyncio.sleep(0)
    feed.close()
    assert await asyncio.wait_for(waiting, 1) is None

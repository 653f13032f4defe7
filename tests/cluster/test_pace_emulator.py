"""Three clients (as three hosts, each its own PgLedger on one database) creating projects in one
workspace of the bundled emulator: with shared pacing, not one 429.

The emulator's clock runs ``SPEED`` times faster than the wall, so its minute window lasts a
couple of seconds; the clients' window is shrunk to match (their times are the database's).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import RateLimited
from watchd.carmic.pacing import BucketFactory, TokenBucket
from watchd.clock import Clock
from watchd.cluster.pace import shared_buckets
from watchd.ledger.pg import PgLedger

emulator = pytest.importorskip("watchd.emulator", reason="the bundled emulator is not available")

SPEED = 30.0
WINDOW = 60.0 / SPEED  # the emulator's minute, in wall seconds
MARGIN = 0.5  # 15 s of the emulator's clock: more than a loopback call takes on a busy host
CREATES_PER_MINUTE = 5
PER_HOST = 3


class FastClock:
    """Wall time running ``speed`` times faster (the emulator's clock)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._wall0 = time.time()
        self._mono0 = time.monotonic()

    def now(self) -> float:
        return self._wall0 + (time.time() - self._wall0) * self.speed

    def monotonic(self) -> float:
        return self._mono0 + (time.monotonic() - self._mono0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


@pytest.fixture
def emu() -> Iterator[Any]:
    settings = emulator.EmulatorSettings(
        port=0,
        storage_port=0,
        inspect=True,
        tier="ENTERPRISE",  # no processing limit: only the pace is under test
        creates_per_minute=CREATES_PER_MINUTE,
    )
    with emulator.Emulator(settings, clock=FastClock(SPEED)) as e:
        yield e


def shrunk_local(workspace: str, kind: str, per_minute: float, clock: Clock) -> TokenBucket:
    return TokenBucket(per_minute, clock=clock, window=WINDOW, margin=MARGIN)


async def create_from_three_hosts(emu: Any, factories: list[BucketFactory]) -> list[str]:
    """Each host creates PER_HOST projects at once; returns the endpoints refused with 429."""
    refused: list[str] = []
    clients = [
        CarmicClient(
            emu.api_url,
            emu.seed_email,
            emu.seed_password,
            creates_per_minute=CREATES_PER_MINUTE,
            bucket_factory=factory,
            on_rate_limited=lambda endpoint, retry_after: refused.append(endpoint),
        )
        for factory in factories
    ]

    async def create(client: CarmicClient, n: int) -> None:
        with contextlib.suppress(RateLimited):  # counted by on_rate_limited
            await client.create_project(filename=f"f{n}.mp4", filesize=1000, duration=4.0)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(create(c, n) for c in clients for n in range(PER_HOST))),
            timeout=30,
        )
    finally:
        for c in clients:
            await c.aclose()
    return refused


async def test_three_hosts_sharing_the_pace_meet_no_429(emu: Any, hosts: list[PgLedger]) -> None:
    factories = [shared_buckets(lg, window=WINDOW, margin=MARGIN) for lg in hosts]
    began = time.monotonic()
    assert await create_from_three_hosts(emu, factories) == []
    creates = [
        r
        for r in emu.snapshot()["requests"]
        if r["method"] == "POST" and r["path"].endswith("/v1/projects/create")
    ]
    assert [r["status"] for r in creates] == [200] * (3 * PER_HOST)
    # 9 creates at 5 a window: the second window's calls wait one window, no more.
    assert time.monotonic() - began < 2 * (WINDOW + MARGIN) + 2.0


async def test_without_sharing_the_same_load_meets_429s(emu: Any) -> None:
    refused = await create_from_three_hosts(emu, [shrunk_local] * 3)
    assert len(refused) == 3 * PER_HOST - CREATES_PER_MINUTE

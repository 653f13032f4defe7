"""The client keeps at most API_CONCURRENCY API exchanges on the wire; the rest wait their turn
in order (a thousand jobs asking at once must not queue inside httpcore's pool)."""

from __future__ import annotations

import asyncio
import random

import httpx

from tests.carmic.fakeapi import API, EMAIL, PASSWORD, FakeApi, ok
from watchd.carmic.client import API_CONCURRENCY, CarmicClient
from watchd.carmic.retry import RetryPolicy
from watchd.clock import FakeClock


class HeldTransport(httpx.AsyncBaseTransport):
    """FakeApi behind a gate: ``/v1/health`` answers only once ``release`` is set."""

    def __init__(self, api: FakeApi) -> None:
        self.api = api
        self.release = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.arrived = asyncio.Condition()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/v1/health"):
            return self.api(request)
        async with self.arrived:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.arrived.notify_all()
        await self.release.wait()
        self.in_flight -= 1
        return ok({"status": "ok"})


async def test_at_most_api_concurrency_exchanges_at_once() -> None:
    transport = HeldTransport(FakeApi())
    client = CarmicClient(
        API,
        EMAIL,
        PASSWORD,
        http=httpx.AsyncClient(transport=transport),
        storage_http=httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(500))
        ),
        clock=FakeClock(),
        retry=RetryPolicy(attempts=1, base=1, factor=2, jitter=0),
        rng=random.Random(0),
    )
    async with client:
        calls = [asyncio.create_task(client.health()) for _ in range(3 * API_CONCURRENCY)]
        async with transport.arrived:
            await asyncio.wait_for(
                transport.arrived.wait_for(lambda: transport.in_flight == API_CONCURRENCY), 5
            )
        for _ in range(5):
            await asyncio.sleep(0)  # give any call that slipped past the gate its chance
        assert transport.in_flight == transport.most == API_CONCURRENCY
        transport.release.set()
        results = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert results == [{"status": "ok"}] * (3 * API_CONCURRENCY)
    assert transport.most == API_CONCURRENCY

"""Reconnecting SSE streams over MockTransport: tickets, clean ends, read timeouts, give-up."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent

from tests.carmic.fakeapi import FakeApi, err, make_client
from watchd.carmic.errors import NetworkError, NotFound, TransientError
from watchd.carmic.models import JSON
from watchd.carmic.sse import StreamSettings, parse_event
from watchd.clock import FakeClock

STREAM = ("GET", "/v1/projects/p1/stream")
SSE_HEADERS = {"Content-Type": "text/event-stream"}


def event(payload: Any, name: str | None = None) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


def stream_of(*parts: bytes | Exception) -> httpx.Response:
    """A 200 event stream that sends ``parts`` (raising the exceptions where they stand)."""

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            if isinstance(part, Exception):
                raise part
            yield part

    return httpx.Response(200, headers=SSE_HEADERS, content=body())


def ticketed(api: FakeApi, answers: list[Callable[[], httpx.Response]]) -> list[httpx.Request]:
    """Stream route: each connection takes the next answer, after checking its ticket."""
    seen: list[httpx.Request] = []

    def route(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if not api.take_ticket(request):
            return err(401, "Invalid or expired ticket")
        return answers.pop(0)()

    api.routes[STREAM] = route
    return seen


async def take(it: AsyncIterator[JSON], n: int) -> list[JSON]:
    out: list[JSON] = []
    async with aclosing(it) as events:  # type: ignore[type-var]
        async for e in events:
            out.append(e)
            if len(out) == n:
                break
    return out


@pytest.mark.parametrize("shape", ["data", "bare"])
async def test_reconnects_on_clean_end_with_a_fresh_ticket(shape: str) -> None:
    api = FakeApi()
    api.ticket_shape = shape
    seen = ticketed(
        api,
        [
            lambda: stream_of(
                b": keepalive\n\n",
                event({"status": "TRANSCRIBING", "progress": 20}),
                b": keepalive\n\n",
                event({"status": "PROCESSING", "progress": 50}),
            ),
            lambda: stream_of(event({"status": "CLIPS_READY", "progress": 100})),
        ],
    )
    async with make_client(api) as client:
        events = await take(client.project_events("p1"), 3)
    assert [e["status"] for e in events] == ["TRANSCRIBING", "PROCESSING", "CLIPS_READY"]
    tickets = [r.url.params["ticket"] for r in seen]
    assert len(tickets) == 2 and len(set(tickets)) == 2
    for r in seen:
        assert "Authorization" not in r.headers  # ticket auth only
        assert r.headers["Accept"] == "text/event-stream"


async def test_reconnects_after_a_read_timeout() -> None:
    api = FakeApi()
    ticketed(
        api,
        [
            lambda: stream_of(
                event({"status": "TRANSCRIBING"}),
                httpx.ReadTimeout("no data within the read timeout"),
            ),
            lambda: stream_of(event({"status": "FACE_TRACKING"})),
        ],
    )
    clock = FakeClock()
    async with make_client(api, clock=clock) as client:
        events = await take(client.project_events("p1"), 2)
    assert [e["status"] for e in events] == ["TRANSCRIBING", "FACE_TRACKING"]
    # A productive connection is reopened without backoff; only the short pause of a stream
    # that ended within a second (FakeClock time does not pass while it is read).
    assert clock.sleeps == [0.25]


async def test_stream_request_uses_the_read_timeout_setting() -> None:
    api = FakeApi()
    seen = ticketed(api, [lambda: stream_of(event({"status": "X"}))])
    settings = StreamSettings(read_timeout=33, connect_timeout=4)
    async with make_client(api, stream_settings=settings) as client:
        await take(client.project_events("p1"), 1)
    assert seen[0].extensions["timeout"] == {"connect": 4, "read": 33, "write": 4, "pool": 4}


async def test_heartbeats_non_json_and_envelopes() -> None:
    api = FakeApi()
    ticketed(
        api,
        [
            lambda: stream_of(
                event({"t": 1}, name="ping"),
                b"data: not json\n\n",
                b"data: [1, 2]\n\n",
                event({"data": {"status": "UPLOADING", "progress": 5}}),
                b"retry: 1000\n\n",
                event({"status": "COMPLETED"}, name="status"),
            )
        ],
    )
    async with make_client(api) as client:
        events = await take(client.project_events("p1"), 2)
    assert events == [{"status": "UPLOADING", "progress": 5}, {"status": "COMPLETED"}]


@pytest.mark.parametrize(
    "failure",
    [
        lambda: err(502, "Bad Gateway"),
        lambda: httpx.Response(200, json={"status": "PROCESSING"}),  # not an event stream
        lambda: stream_of(),  # ends at once without an event
        lambda: stream_of(httpx.ReadTimeout("silent")),
    ],
    ids=["502", "json-not-sse", "empty-end", "silent"],
)
async def test_gives_up_after_consecutive_failed_connections(
    failure: Callable[[], httpx.Response],
) -> None:
    api = FakeApi()
    seen = ticketed(api, [failure] * 10)
    clock = FakeClock()
    settings = StreamSettings(max_failures=3)
    async with make_client(api, clock=clock, stream_settings=settings) as client:
        with pytest.raises(NetworkError, match="after 3 failed connections") as ei:
            await take(client.project_events("p1"), 1)
    assert isinstance(ei.value, TransientError)
    assert len(seen) == 3
    assert clock.sleeps == [1, 2]  # the policy's backoff between attempts


async def test_refused_ticket_is_retried_with_a_new_one() -> None:
    api = FakeApi()
    answers = [lambda: stream_of(event({"status": "PROCESSING"}))]
    calls = {"n": 0}

    def route(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            api.take_ticket(request)
            return err(401, "Ticket already used")
        assert api.take_ticket(request)
        return answers.pop(0)()

    api.routes[STREAM] = route
    async with make_client(api) as client:
        events = await take(client.project_events("p1"), 1)
    assert events == [{"status": "PROCESSING"}]
    assert calls["n"] == 2


async def test_unknown_project_is_raised_at_once() -> None:
    api = FakeApi()
    seen = ticketed(api, [lambda: err(404, "Project not found")] * 5)
    async with make_client(api) as client:
        with pytest.raises(NotFound):
            await take(client.project_events("p1"), 1)
    assert len(seen) == 1


async def test_ticket_failures_count_toward_giving_up() -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/sse-ticket")] = lambda r: err(503, "Redis down")
    clock = FakeClock()
    async with make_client(api, clock=clock, stream_settings=StreamSettings(max_failures=2)) as c:
        with pytest.raises(NetworkError, match="Redis down"):
            await take(c.project_events("p1"), 1)
    # Each stream attempt asks once: the stream's own budget, not the call retry policy.
    assert api.count("POST", "/v1/sse-ticket") == 2


async def test_export_events() -> None:
    api = FakeApi()
    api.routes[("GET", "/v1/exports/e1/stream")] = lambda r: (
        stream_of(event({"status": "PROCESSING", "progress": 50}))
        if api.take_ticket(r)
        else err(401, "bad ticket")
    )
    async with make_client(api) as client:
        events = await take(client.export_events("e1"), 1)
    assert events == [{"status": "PROCESSING", "progress": 50}]


async def test_a_long_quiet_connection_counts_as_healthy() -> None:
    """Keepalives for a minute, then a clean end: not a failure (no backoff, no give-up)."""
    api = FakeApi()
    clock = FakeClock()

    def quiet() -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            yield b": keepalive\n\n"
            clock.advance(61)
            yield b": keepalive\n\n"

        return httpx.Response(200, headers=SSE_HEADERS, content=body())

    ticketed(api, [quiet, quiet, quiet, lambda: stream_of(event({"status": "CLIPS_READY"}))])
    settings = StreamSettings(max_failures=2, healthy_after=60)
    async with make_client(api, clock=clock, stream_settings=settings) as client:
        events = await take(client.project_events("p1"), 1)
    assert events == [{"status": "CLIPS_READY"}]
    assert clock.sleeps == []  # long connections: no failure, no pause


async def test_streams_that_end_after_each_event_are_reopened_calmly() -> None:
    """A server that closes every stream after one event: a short pause per reconnect, the
    server's ``retry:`` when it gives one, never a failure count."""
    api = FakeApi()
    ticketed(
        api,
        [lambda: stream_of(event({"status": "PROCESSING"}))] * 3
        + [lambda: stream_of(b"retry: 2000\n\n", event({"status": "PROCESSING"}))] * 2
        + [lambda: stream_of(b"retry: 999999\n\n", event({"status": "CLIPS_READY"}))],
    )
    clock = FakeClock()
    async with make_client(api, clock=clock, stream_settings=StreamSettings(max_failures=2)) as c:
        events = await take(c.project_events("p1"), 6)
    assert [e["status"] for e in events][-1] == "CLIPS_READY"
    assert clock.sleeps == [0.25, 0.25, 0.25, 2.0, 2.0]


def test_parse_event_directly() -> None:
    assert parse_event(ServerSentEvent(data='{"status": "X"}')) == {"status": "X"}
    assert parse_event(ServerSentEvent(event="keepalive", data='{"a": 1}')) is None
    assert parse_event(ServerSentEvent(data="")) is None
    # A payload that has both keeps its own status (not unwrapped).
    both = {"status": "Y", "data": {"status": "Z"}}
    assert parse_event(ServerSentEvent(data=json.dumps(both))) == both


def test_stream_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        StreamSettings(max_failures=0)
    with pytest.raises(ValueError):
        StreamSettings(read_timeout=0)
    with pytest.raises(ValueError):
        StreamSettings(reconnect_delay=-1)


async def test_leaving_the_loop_early_like_the_pipeline_does() -> None:
    """The pipeline returns from inside ``async for`` without closing the iterator: that must be
    clean (no warnings, which the suite turns into errors)."""
    api = FakeApi()
    ticketed(api, [lambda: stream_of(event({"status": "CLIPS_READY"}), event({"status": "X"}))])

    async def follow(client: Any) -> str:
        async for e in client.project_events("p1"):
            if e["status"] == "CLIPS_READY":
                return str(e["status"])
        return ""

    async with make_client(api) as client:
        assert await follow(client) == "CLIPS_READY"

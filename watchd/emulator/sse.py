"""Server-sent events (§3.12): a publish/subscribe hub and the streaming response.

Whoever changes a project or an export publishes a *snapshot* of it on its topic; every
subscriber's queue gets it at once (no polling, so a change reaches the client in
milliseconds), renders it for its own client and sends it unless it equals the last event.
Between events the stream sends ``: keepalive`` comments, and it ends after a terminal state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Hub", "StreamLimits", "stream_events"]

_CLOSED = object()


class Hub:
    """Topics -> subscriber queues."""

    def __init__(self) -> None:
        self._subscribers: dict[Hashable, set[asyncio.Queue[Any]]] = {}
        self._closed = False

    def publish(self, topic: Hashable, snapshot: Any) -> None:
        """Hand ``snapshot`` to every subscriber of ``topic``."""
        for queue in self._subscribers.get(topic, ()):
            queue.put_nowait(snapshot)

    def subscribe(self, topic: Hashable) -> asyncio.Queue[Any]:
        """A queue that gets every snapshot published on ``topic`` from now on."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(_CLOSED)
        self._subscribers.setdefault(topic, set()).add(queue)
        return queue

    def unsubscribe(self, topic: Hashable, queue: asyncio.Queue[Any]) -> None:
        """Stop delivering to ``queue``."""
        subs = self._subscribers.get(topic)
        if subs is not None:
            subs.discard(queue)
            if not subs:
                del self._subscribers[topic]

    def subscriber_count(self, topic: Hashable) -> int:
        """How many streams follow ``topic``."""
        return len(self._subscribers.get(topic, ()))

    def close(self) -> None:
        """End every stream (emulator shutdown)."""
        self._closed = True
        for subs in self._subscribers.values():
            for queue in subs:
                queue.put_nowait(_CLOSED)


@dataclass(frozen=True)
class StreamLimits:
    """Keepalive period and the fault knobs that cut a stream."""

    keepalive: float
    cut_after_events: int = 0  # abort the connection after this many events (0: never)
    cut_after_seconds: float = 0.0  # ... or after this long (0: never)


def _frame(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def stream_events(
    request: web.Request,
    hub: Hub,
    topic: Hashable,
    first: Any,
    render: Callable[[Any], dict[str, Any]],
    terminal: Callable[[Any], bool],
    limits: StreamLimits,
    on_event: Callable[[], None] | None = None,
) -> web.StreamResponse:
    """Serve ``topic`` as ``text/event-stream``: ``first`` at once, then every change.

    ``render`` turns a snapshot into the event's JSON payload; the stream ends after an event
    for which ``terminal`` is true. The fault limits abort the connection without a proper end,
    as a proxy or a crashed worker would.
    """
    queue = hub.subscribe(topic)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    loop = asyncio.get_running_loop()
    cut_at = loop.time() + limits.cut_after_seconds if limits.cut_after_seconds else None
    sent = 0
    last: dict[str, Any] | None = None
    try:
        await response.prepare(request)
        snapshot: Any = first
        while True:
            if snapshot is _CLOSED:
                break
            if snapshot is not None:
                payload = render(snapshot)
                if payload != last:
                    await response.write(_frame(payload))
                    last = payload
                    sent += 1
                    if on_event is not None:
                        on_event()
                if terminal(snapshot):
                    break
                if limits.cut_after_events and sent >= limits.cut_after_events:
                    _abort(request)
                    return response
            timeout = limits.keepalive
            if cut_at is not None:
                timeout = min(timeout, max(0.0, cut_at - loop.time()))
            try:
                snapshot = await asyncio.wait_for(queue.get(), timeout=timeout)
            except TimeoutError:
                if cut_at is not None and loop.time() >= cut_at:
                    _abort(request)
                    return response
                await response.write(b": keepalive\n\n")
                snapshot = None
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away: nothing more to say
    finally:
        hub.unsubscribe(topic, queue)
    return response


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()

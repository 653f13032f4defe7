"""Reconnecting Server-Sent-Event streams (project and export progress).

An SSE endpoint authenticates with a ticket in the query string (``EventSource`` cannot send
headers); tickets are single-use and live 30 s, so every connection gets a fresh one. A stream
that ends cleanly (the server closes it after a terminal state, or a proxy times it out) or goes
silent past the read timeout is simply reopened: the read timeout is set above the server's
keepalive interval, so silence means a dead connection, not a quiet project. Keepalive comments
(``: keepalive``) are dropped by the parser. After ``max_failures`` consecutive connections that
brought nothing, the stream gives up with a :class:`TransientError` and the caller polls instead.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource, ServerSentEvent, SSEError

from watchd.carmic.envelope import error_from_response
from watchd.carmic.errors import NetworkError, TransientError
from watchd.carmic.http import ResponseHook, build_request, send, translate_errors
from watchd.carmic.models import JSON
from watchd.carmic.retry import RetryPolicy
from watchd.clock import Clock

log = logging.getLogger("watchd.carmic.sse")

# Event names some servers use for heartbeats carried as events rather than comments.
_HEARTBEATS = frozenset({"ping", "keepalive", "keep-alive", "heartbeat"})


@dataclass(frozen=True)
class StreamSettings:
    """How streams are kept up.

    ``read_timeout`` must exceed the server's keepalive interval (keepalives of 15-30 s are
    usual); a connection that stayed open ``healthy_after`` seconds counts as good even when no
    event came, so a quiet but live stream never exhausts ``max_failures``.
    """

    read_timeout: float = 45.0
    connect_timeout: float = 10.0
    max_failures: int = 5
    healthy_after: float = 60.0
    # A stream that brought events but ended within ``quick_end`` seconds is reopened after
    # ``reconnect_delay`` (or the server's ``retry:``), so a server or proxy that closes every
    # stream after one event cannot turn the loop into a storm of tickets and connections.
    quick_end: float = 1.0
    reconnect_delay: float = 0.25
    max_server_retry: float = 30.0

    def __post_init__(self) -> None:
        if self.read_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("SSE timeouts must be positive")
        if self.max_failures < 1:
            raise ValueError(f"max_failures must be >= 1 (got {self.max_failures})")
        if min(self.quick_end, self.reconnect_delay, self.max_server_retry) < 0:
            raise ValueError("SSE reconnect delays must not be negative")


def parse_event(sse: ServerSentEvent) -> JSON | None:
    """The JSON object an event carries, or ``None`` for heartbeats and anything unparseable.

    An event wrapped in the API envelope (``{"data": {...}}``) is unwrapped.
    """
    if sse.event in _HEARTBEATS or not sse.data.strip():
        return None
    try:
        payload = json.loads(sse.data)
    except ValueError:
        log.debug("ignoring a non-JSON SSE event %r", sse.event)
        return None
    if not isinstance(payload, dict):
        return None
    inner = payload.get("data")
    if isinstance(inner, dict) and "status" not in payload:
        payload = inner
    return payload


class _Refused(Exception):
    """The stream endpoint answered, but not with a stream we can use (retry with a new ticket)."""


async def reconnecting_events(
    http: httpx.AsyncClient,
    *,
    ticket: Callable[[], Awaitable[str]],
    url_for: Callable[[str], str],
    endpoint: str,
    clock: Clock,
    policy: RetryPolicy,
    rng: random.Random,
    settings: StreamSettings,
    on_response: ResponseHook | None = None,
) -> AsyncIterator[JSON]:
    """Yield the JSON events of an SSE endpoint for as long as the consumer wants them.

    ``ticket`` fetches a fresh single-use ticket; ``url_for(ticket)`` is the stream's URL.
    Permanent errors (the project does not exist, no access) are raised at once.
    """
    timeout = httpx.Timeout(
        connect=settings.connect_timeout,
        read=settings.read_timeout,
        write=settings.connect_timeout,
        pool=settings.connect_timeout,
    )
    failures = 0
    server_retry: float | None = None  # the stream's own ``retry:`` advice, in seconds
    while True:
        productive = False
        started = clock.monotonic()
        why = "the stream ended"
        try:
            request = build_request(
                http,
                "GET",
                url_for(await ticket()),
                headers={"Accept": "text/event-stream", "Cache-Control": "no-store"},
                timeout=timeout,
            )
            response = await send(
                http, request, endpoint=endpoint, stream=True, on_response=on_response
            )
            try:
                if response.status_code != 200:
                    await response.aread()
                    error = error_from_response(response, endpoint=endpoint, now=clock.now())
                    # 401: the ticket was refused (used, expired); a new one may do.
                    if response.status_code != 401 and not isinstance(error, TransientError):
                        raise error
                    raise _Refused(str(error))
                with translate_errors(endpoint, request.url):
                    async for sse in EventSource(response).aiter_sse():
                        if sse.retry is not None:
                            server_retry = min(sse.retry / 1000, settings.max_server_retry)
                        event = parse_event(sse)
                        if event is None:
                            continue
                        productive = True
                        failures = 0
                        yield event
            finally:
                await response.aclose()
        except (TransientError, _Refused, SSEError) as e:
            why = str(e)
        lasted = clock.monotonic() - started
        if productive or lasted >= settings.healthy_after:
            pause = server_retry
            if pause is None:
                pause = settings.reconnect_delay if lasted < settings.quick_end else 0.0
            log.debug("%s: reconnecting in %.2fs (%s)", endpoint, pause, why)
            if pause > 0:
                await clock.sleep(pause)
            continue
        failures += 1
        if failures >= settings.max_failures:
            raise NetworkError(
                f"event stream unavailable after {failures} failed connections: {why}",
                endpoint=endpoint,
            )
        delay = policy.delay(failures, rng)
        log.debug("%s: connection %d failed (%s); again in %.1fs", endpoint, failures, why, delay)
        await clock.sleep(delay)

"""The emulator's shared context: live settings, clock, state, stores and background tasks.

One :class:`Core` per running emulator, created and used on its event loop. Handlers of both
origins reach it through their application; the engine and the SSE streams get it passed in.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

from watchd.clock import Clock, SystemClock
from watchd.emulator.auth import TokenIssuer
from watchd.emulator.inspection import Inspection
from watchd.emulator.objects import ObjectStore
from watchd.emulator.ratelimit import RateLimiter
from watchd.emulator.settings import EmulatorSettings
from watchd.emulator.signing import Presigner
from watchd.emulator.sse import Hub
from watchd.emulator.state import State, User, Workspace

__all__ = ["Alarm", "Core"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})


class Alarm:
    """Sleeps measured on an injectable clock.

    With the system clock it sleeps exactly; with any other clock (a test's FakeClock, moved by
    hand) it polls briefly, so advancing that clock wakes the sleepers within a few ms.
    """

    def __init__(self, clock: Clock, poll: float = 0.01) -> None:
        self.clock = clock
        self._real = isinstance(clock, SystemClock)
        self._poll = poll

    async def until(self, deadline: float) -> None:
        """Return once the clock reads ``deadline`` or later."""
        while (remaining := deadline - self.clock.now()) > 0:
            await asyncio.sleep(remaining if self._real else min(remaining, self._poll))

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` have passed on the clock."""
        if seconds > 0:
            await self.until(self.clock.now() + seconds)


class Core:
    """Everything a request handler or a background job needs."""

    def __init__(
        self, settings: EmulatorSettings, clock: Clock, data_dir: Path, executor: Executor
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.alarm = Alarm(clock)
        self.state = State(settings.seed)
        self.tokens = TokenIssuer()
        self.limiter = RateLimiter()
        self.signer = Presigner()
        self.store = ObjectStore(data_dir, executor)
        self.hub = Hub()
        self.inspection = Inspection()
        self.executor = executor
        self.fault_rng = random.Random(f"faults:{settings.seed}")
        self.api_port = 0
        self.storage_port = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.seed_user, self.seed_workspace = self._seed()

    def _seed(self) -> tuple[User, Workspace]:
        s = self.settings
        return self.state.add_user(
            s.seed_email,
            s.seed_password,
            now=self.now(),
            tier=s.tier,
            minutes=s.minutes,
            first_name="Demo",
            last_name="User",
            workspace_name=s.seed_workspace,
        )

    # ---- time and work ----------------------------------------------------------------------

    def now(self) -> float:
        """The emulator clock's time (wall seconds)."""
        return self.clock.now()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` in the background; stopped (cancelled) with the emulator."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator task %s failed", task.get_name(), exc_info=task.exception())

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function (PyAV, zips, hashing) in the emulator's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def cancel_tasks(self) -> None:
        """Cancel every background job and wait for them to finish."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- faults -------------------------------------------------------------------------------

    def draw(self, probability: float) -> bool:
        """A seeded coin toss for the fault knobs."""
        return probability > 0 and self.fault_rng.random() < probability

    # ---- URLs ---------------------------------------------------------------------------------

    def storage_base(self, request_host: str | None) -> str:
        """The storage origin as a client reaches it.

        Bound to a concrete address, that address; bound to a wildcard (``--host 0.0.0.0`` on a
        NAS), the host name the client used for the API, so that URLs work from other machines.
        """
        host = self.settings.host
        if host in _WILDCARD_HOSTS:
            host = _hostname(request_host) or "127.0.0.1"
        elif ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.storage_port}"

    def presign_get(self, key: str, base: str) -> str:
        """A presigned GET of ``key`` on the storage origin ``base``."""
        return self.signer.presign(
            "GET", base, key, ttl=self.settings.download_url_ttl, now=self.now()
        )

    def presign_put(self, key: str, base: str) -> str:
        """A presigned PUT of ``key`` on the storage origin ``base``."""
        return self.signer.presign(
            "PUT", base, key, ttl=self.settings.upload_url_ttl, now=self.now()
        )


def _hostname(host_header: str | None) -> str | None:
    """The host part of a Host header (IPv6 literals keep their brackets)."""
    if not host_header:
        return None
    if host_header.startswith("["):
        end = host_header.find("]")
        return host_header[: end + 1] if end > 0 else None
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header

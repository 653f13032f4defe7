"""The :class:`Emulator`: both origins on their ports, in a background thread or in the caller's
event loop.

As a context manager (``with Emulator(settings) as emu``) it runs its own event loop in a
thread and its public methods are thread-safe; ``await emu.serve_forever()`` (or ``async with``)
runs it on the current loop instead, for ``watchd emulator`` in the foreground.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from watchd.clock import Clock, SystemClock
from watchd.emulator.api import build_api_app
from watchd.emulator.control import apply_changes
from watchd.emulator.core import Core
from watchd.emulator.engine import Engine
from watchd.emulator.inspection import build_snapshot
from watchd.emulator.settings import TIERS, EmulatorSettings
from watchd.emulator.storage import build_storage_app

__all__ = ["Emulator", "Registered"]

log = logging.getLogger("watchd.emulator")

T = TypeVar("T")

_START_TIMEOUT = 30.0
_CALL_TIMEOUT = 30.0
_SHUTDOWN_TIMEOUT = 1.0  # open SSE streams and uploads get this long after the hub closes
_MEDIA_WORKERS = 4


class _AccessLogger(AbstractAccessLogger):
    """aiohttp's access log without query strings (presigned signatures, SSE tickets)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.debug(
            "%s %s -> %s (%.0f ms)", request.method, request.path, response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


class Registered(NamedTuple):
    """A user made by :meth:`Emulator.register_user` (unpacks as ``user_id, workspace_id``)."""

    user_id: str
    workspace_id: str


class Emulator:
    """The bundled Carmic API emulator."""

    def __init__(
        self, settings: EmulatorSettings | None = None, *, clock: Clock | None = None
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.clock: Clock = clock or SystemClock()
        self._core: Core | None = None
        self._runners: list[web.AppRunner] = []
        self._executor: ThreadPoolExecutor | None = None
        self._temp_dir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.api_url = ""
        self.storage_url = ""

    # ---- identity -----------------------------------------------------------------------------

    @property
    def core(self) -> Core:
        """The running emulator's shared context (RuntimeError when not running)."""
        if self._core is None:
            raise RuntimeError("the emulator is not running")
        return self._core

    @property
    def seed_email(self) -> str:
        """The seeded user's email."""
        return self.settings.seed_email

    @property
    def seed_password(self) -> str:
        """The seeded user's password."""
        return self.settings.seed_password

    @property
    def workspace_id(self) -> str:
        """The seeded workspace's id."""
        return self.core.seed_workspace.id

    @property
    def user_id(self) -> str:
        """The seeded user's id."""
        return self.core.seed_user.id

    # ---- async life cycle -----------------------------------------------------------------------

    async def astart(self) -> None:
        """Bind both origins on the running loop."""
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.current_thread()
        self._executor = ThreadPoolExecutor(
            _MEDIA_WORKERS, thread_name_prefix="carmic-emulator-media"
        )
        if s.data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="carmic-emulator-"))
        data_dir = s.data_dir or self._temp_dir
        assert data_dir is not None
        core = Core(s, self.clock, data_dir, self._executor)
        self._core = core
        try:
            api = await self._serve(build_api_app(core, Engine(core)), s.port)
            core.api_port = api
            core.storage_port = await self._serve_storage(
                build_storage_app(core), s.port, s.storage_port
            )
        except BaseException:
            await self.aclose()
            raise
        host = core.storage_base(None).split("://", 1)[1].rsplit(":", 1)[0]
        self.api_url = f"http://{host}:{core.api_port}/api"
        self.storage_url = f"http://{host}:{core.storage_port}"
        log.info("Carmic emulator: API %s, storage %s", self.api_url, self.storage_url)

    async def _serve(self, app: web.Application, port: int) -> int:
        runner = web.AppRunner(
            app,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            access_log_class=_AccessLogger,
            access_log=logging.getLogger("watchd.emulator.access"),
        )
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        return int(runner.addresses[-1][1])

    async def _serve_storage(self, app: web.Application, api_port: int, port: int) -> int:
        # `watchd emulator` serves the API on P; its storage next door on P+1 if free.
        if port == 0 and api_port:
            try:
                return await self._serve(app, api_port + 1)
            except OSError:
                pass
        return await self._serve(app, port)

    async def aclose(self) -> None:
        """Stop serving and release everything (idempotent)."""
        core = self._core
        if core is not None:
            core.hub.close()
            await core.cancel_tasks()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if core is not None:
            await core.cancel_tasks()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if core is not None:
            core.store.close(remove=self._temp_dir is not None)
        self._temp_dir = None

    async def __aenter__(self) -> Emulator:
        await self.astart()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or the task is cancelled), then close."""
        await self.astart()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.aclose()

    # ---- background thread ----------------------------------------------------------------------

    def start(self) -> Emulator:
        """Serve from a background thread with its own event loop; returns once bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(
            target=self._thread_main, name="carmic-emulator", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the emulator did not start in time")
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise self._startup_error
        return self

    def _thread_main(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                await self.astart()
            except BaseException as e:
                self._startup_error = e
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await self.aclose()

        asyncio.run(main())

    def stop(self) -> None:
        """Stop the background thread and everything it started (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=_CALL_TIMEOUT)
        self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- thread-safe control --------------------------------------------------------------------

    def _call(self, fn: Callable[[Core], T]) -> T:
        """Run ``fn(core)`` on the emulator's loop (directly when already on it)."""
        loop = self._loop
        core = self.core
        if loop is None or threading.current_thread() is self._loop_thread:
            return fn(core)

        async def run() -> T:
            return fn(core)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(_CALL_TIMEOUT)

    def snapshot(self) -> dict[str, Any]:
        """The inspection state (what ``GET /api/_emulator/state`` serves)."""
        return self._call(build_snapshot)

    def update(self, **changes: Any) -> None:
        """Change knobs live: ``faults``, ``variants``, ``timings`` (objects or dicts of
        changes), ``minutes``, ``tier`` (of ``workspace_id``, default the seeded workspace),
        ``access_ttl`` and the other live settings. Raises ValueError and changes nothing when
        a value is invalid."""
        self._call(lambda core: apply_changes(core, changes))
        self.settings = self.core.settings

    def add_minutes(self, n: int, workspace_id: str | None = None) -> int:
        """Top up a workspace's minute pool (the seeded one by default); returns the new pool."""

        def add(core: Core) -> int:
            ws = core.state.workspaces[workspace_id] if workspace_id else core.seed_workspace
            ws.minutes_left += n
            return ws.minutes_left

        return self._call(add)

    def register_user(
        self,
        email: str,
        password: str,
        *,
        tier: str | None = None,
        minutes: int | None = None,
        workspace_name: str | None = None,
    ) -> Registered:
        """A user with a workspace of their own (no rate limits, no password rules)."""

        def add(core: Core) -> Registered:
            s = core.settings
            user, ws = core.state.add_user(
                email,
                password,
                now=core.now(),
                tier=tier or s.new_user_tier or s.tier,
                minutes=s.minutes if minutes is None else minutes,
                workspace_name=workspace_name,
            )
            return Registered(user.id, ws.id)

        if tier is not None and tier not in TIERS:
            raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
        return self._call(add)

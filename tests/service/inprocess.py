"""An in-process Daemon on a thread of its own, for tests that need to reach into its loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

from watchd.daemon import Daemon

T = TypeVar("T")


class DaemonThread:
    """A Daemon running on its own thread and event loop."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.thread = threading.Thread(target=self._main, name="daemon-under-test")
        self.thread.start()

    def _main(self) -> None:
        self.code = asyncio.run(self.daemon.run())

    def on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the daemon's loop, between two of its steps, and return its result."""
        loop = self.daemon._loop
        assert loop is not None
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as e:
                done.set_exception(e)

        loop.call_soon_threadsafe(call)
        return done.result(timeout=30)

    def stop(self) -> int | None:
        if self.thread.is_alive() and self.daemon._loop is not None:
            self.daemon._loop.call_soon_threadsafe(self.daemon.request_stop)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return self.code


def healthz(daemon: Daemon) -> tuple[int, str]:
    url = daemon.metrics_server.url + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

"""Wake-ups between the nodes: LISTEN on one dedicated connection, in a thread of its own.

A node that frees a processing slot or lets its jobs go (watchd/cluster/ledger.py) sends a
NOTIFY; the others wake their main loop at once instead of at their next look (the loop looks
every second anyway: this is the fast path, polling the fallback). A lost connection is opened
again with backoff; nothing depends on a notification arriving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from watchd.cluster.ledger import CHANNEL

log = logging.getLogger("watchd.cluster")


class Wakeups:
    """Calls ``wake()`` (from its own thread) for each notification on :data:`CHANNEL`."""

    def __init__(self, url: str, wake: Callable[[], None], *, password: str | None = None) -> None:
        self.url = url
        self.wake = wake
        self._kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
        if password:
            self._kwargs["password"] = password
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchd-wakeups", daemon=True)
        self.received = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, **self._kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 1.0
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self.received += 1
                            self.wake()
            except psycopg.Error as e:
                log.debug(
                    "wake-ups: %s; listening again in %.0f s", " ".join(str(e).split()), delay
                )
                self._stop.wait(delay)
                delay = min(30.0, delay * 2)

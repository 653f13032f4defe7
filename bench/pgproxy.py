"""A counting TCP proxy between the daemons and PostgreSQL: how many round trips they make.

A round trip is a client's message(s) followed by the server's answer: counted each time the
server sends on a connection after the client sent something since the server last did.
Pipelined statements (sent together, answered together) count once, as they cost one wait;
a NOTIFY the server pushes unasked counts nothing. Reading the protocol is not needed.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass


@dataclass
class Counts:
    connections: int = 0
    round_trips: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class CountingProxy:
    """``with CountingProxy(port) as proxy:`` listens on ``proxy.port`` (loopback) and
    forwards to ``127.0.0.1:<port>``; ``proxy.counts`` so far, ``proxy.reset()``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.counts = Counts()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pg-proxy")
        self._server: asyncio.Server | None = None

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result()
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def url(self, database_url: str) -> str:
        """``database_url`` (on the target's port) sent through the proxy."""
        return database_url.replace(f":{self.target[1]}/", f":{self.port}/", 1)

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(**vars(self.counts))

    def reset(self) -> None:
        with self._lock:
            self.counts = Counts()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        with self._lock:
            self.counts.connections += 1
        asked = [False]  # the client sent something the server has not answered yet

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await r.read(65536):
                    with self._lock:
                        if up:
                            self.counts.bytes_up += len(data)
                            asked[0] = True
                        else:
                            self.counts.bytes_down += len(data)
                            if asked[0]:
                                self.counts.round_trips += 1
                                asked[0] = False
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(
            pump(client_r, server_w, True), pump(server_r, client_w, False), return_exceptions=True
        )

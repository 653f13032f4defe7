"""CPU per HTTP request of the client stacks the daemon could use, on loopback.

``python -m bench.http_transport [--requests N] [--concurrency N] [--rounds N]``
``python -m bench.http_transport --upload-gib N [--rounds N]``

An aiohttp server in a child process (so its CPU is not counted) answers a small JSON body and
a ~100 kB body; this process sends the same requests with (a) ``httpx.AsyncClient()`` on its
default transport (httpcore), (b) ``httpx.AsyncClient`` over
:class:`watchd.carmic.aiotransport.AiohttpTransport`, (c) a bare ``aiohttp.ClientSession`` (the
floor), (d) the daemon's own path: (b)'s client, but the request built by
:func:`watchd.carmic.http.build_request` and sent by :func:`watchd.carmic.http.send` (no
``AsyncClient.build_request``/``send``), and prints this process's CPU (``time.process_time``)
per request, best of the rounds. Why the daemon's clients use (b) and (d): see the commits that
introduced them.

With ``--upload-gib`` it measures instead the CPU of
:func:`watchd.carmic.transfer.upload_file` putting a sparse file of that size to the bundled
emulator's storage (in a child process, keeping no bytes), on each transport: CPU seconds per
GiB and MB/s, alternating, best of the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from watchd.carmic.aiotransport import AiohttpTransport
from watchd.carmic.http import (
    STORAGE_LIMITS,
    STORAGE_TIMEOUT,
    build_request,
    join_url,
    send,
    ssl_context,
)
from watchd.carmic.transfer import download_file, upload_file

SMALL = b'{"id": "job_123", "status": "processing", "progress": 42}'
LARGE = b"x" * 100_000


def _serve(conn: Connection) -> None:
    async def small(_: web.Request) -> web.Response:
        return web.Response(body=SMALL, content_type="application/json")

    async def large(_: web.Request) -> web.Response:
        return web.Response(body=LARGE, content_type="application/octet-stream")

    async def blob(request: web.Request) -> web.StreamResponse:
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = size
        await response.prepare(request)
        block = bytes(1 << 20)
        for offset in range(0, size, len(block)):
            await response.write(block[: size - offset])
        await response.write_eof()
        return response

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/small", small)
        app.router.add_get("/large", large)
        app.router.add_get("/blob/{size}", blob)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        await runner.cleanup()

    asyncio.run(run())


Get = Callable[[str], Awaitable[int]]


async def _measure(get: Get, url: str, requests: int, concurrency: int) -> float:
    """Process CPU milliseconds per request of ``requests`` GETs, ``concurrency`` at a time."""
    for _ in range(50):  # warm the pool and the caches
        await get(url)
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await get(url)

    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - cpu0) * 1000 / requests


def _httpx_get(client: httpx.AsyncClient) -> Get:
    async def get(url: str) -> int:
        response = await client.get(url)
        assert len(response.content) > 0
        return response.status_code

    return get


def _carmic_get(client: httpx.AsyncClient) -> Get:
    async def get(url: str) -> int:
        # As CarmicClient builds its requests: the API's base URL joined with the route.
        base, name = url.rsplit("/", 1)
        request = build_request(client, "GET", join_url(base, f"/{name}"))
        response = await send(client, request, endpoint="bench")
        assert len(response.content) > 0
        return response.status_code

    return get


def _aiohttp_get(session: aiohttp.ClientSession) -> Get:
    async def get(url: str) -> int:
        async with session.get(url) as response:
            assert len(await response.read()) > 0
            return response.status

    return get


async def _round(base: str, requests: int, concurrency: int) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16, keepalive_expiry=30)
    for path in ("/small", "/large"):
        url = base + path
        async with httpx.AsyncClient(limits=limits) as client:
            out["a httpx default", path] = await _measure(
                _httpx_get(client), url, requests, concurrency
            )
        transport = AiohttpTransport(ssl_context=ssl.create_default_context(), limits=limits)
        async with httpx.AsyncClient(transport=transport, limits=limits) as client:
            out["b httpx + aiohttp", path] = await _measure(
                _httpx_get(client), url, requests, concurrency
            )
        transport = AiohttpTransport(ssl_context=ssl.create_default_context(), limits=limits)
        async with httpx.AsyncClient(transport=transport, limits=limits) as client:
            out["d carmic.http.send", path] = await _measure(
                _carmic_get(client), url, requests, concurrency
            )
        async with aiohttp.ClientSession() as session:
            out["c bare aiohttp", path] = await _measure(
                _aiohttp_get(session), url, requests, concurrency
            )
    return out


def _emulate(conn: Connection, size: int, count: int, folder: str) -> None:
    """The emulator (keeping no bytes) in this child process; sends ``count`` presigned upload
    URLs for a file of ``size`` bytes, then serves until told to stop."""
    from bench.rig import emulator, padded_video, sample_video
    from tests.emulator.helpers import Api

    with emulator(store_uploads=False) as emu, Api(emu) as api:
        api.login()
        path = padded_video(sample_video(Path(folder)), Path(folder) / "big.mp4", size)
        conn.send((str(path), [api.create_for(path)["upload_url"] for _ in range(count)]))
        conn.recv()


async def _upload(make: Callable[[], httpx.AsyncClient], url: str, path: Path) -> float:
    """CPU seconds of one upload."""
    async with make() as http:
        cpu0 = time.process_time()
        await upload_file(http, url, path, "video/mp4", now=time.time)
        return time.process_time() - cpu0


async def _download(make: Callable[[], httpx.AsyncClient], url: str, dest: Path) -> float:
    """CPU seconds of one download (the file removed afterwards)."""
    async with make() as http:
        cpu0 = time.process_time()
        await download_file(http, url, dest, now=time.time)
        cpu = time.process_time() - cpu0
    dest.unlink()
    return cpu


def _uploads(gib: float, rounds: int) -> None:
    size = int(gib * (1 << 30))
    clients: dict[str, Callable[[], httpx.AsyncClient]] = {
        "a httpx default": lambda: httpx.AsyncClient(
            verify=ssl_context(), timeout=STORAGE_TIMEOUT, limits=STORAGE_LIMITS
        ),
        "b httpx + aiohttp": lambda: httpx.AsyncClient(
            transport=AiohttpTransport(ssl_context=ssl_context(), limits=STORAGE_LIMITS),
            timeout=STORAGE_TIMEOUT,
            limits=STORAGE_LIMITS,
        ),
    }
    ctx = multiprocessing.get_context("spawn")
    emu_end, emu_child = ctx.Pipe()
    blob_end, blob_child = ctx.Pipe()
    cpu: dict[tuple[str, str], list[float]] = {}
    wall: dict[tuple[str, str], list[float]] = {}

    def timed(key: tuple[str, str], work: Coroutine[Any, Any, float]) -> None:
        started = time.perf_counter()
        cpu.setdefault(key, []).append(asyncio.run(work))
        wall.setdefault(key, []).append(time.perf_counter() - started)

    with tempfile.TemporaryDirectory(prefix="bench-transport-") as folder:
        emu = ctx.Process(target=_emulate, args=(emu_child, size, rounds * len(clients), folder))
        blobs = ctx.Process(target=_serve, args=(blob_child,))
        emu.start()
        blobs.start()
        try:
            path, urls = emu_end.recv()
            blob_url = f"http://127.0.0.1:{blob_end.recv()}/blob/{size}"
            dest = Path(folder) / "download.mp4"
            for i in range(rounds):
                for who in list(clients) if i % 2 == 0 else list(reversed(clients)):
                    timed((who, "up"), _upload(clients[who], urls.pop(), Path(path)))
                    timed((who, "down"), _download(clients[who], blob_url, dest))
        finally:
            for end, process in ((emu_end, emu), (blob_end, blobs)):
                end.send(None)
                process.join(timeout=60)
    print(
        f"upload_file of a {gib:g} GiB sparse file to the emulator's storage and download_file "
        f"of as much from an aiohttp server (best of {rounds}; the servers in other processes)"
    )
    head = ("up CPU s/GiB", "up MB/s", "down CPU s/GiB", "down MB/s")
    print(f"{'client':20} " + " ".join(f"{h:>14}" for h in head))
    for who in clients:
        up, down = (who, "up"), (who, "down")
        cells = (
            min(cpu[up]) / gib,
            size / min(wall[up]) / 1e6,
            min(cpu[down]) / gib,
            size / min(wall[down]) / 1e6,
        )
        print(f"{who:20} " + " ".join(f"{c:14.2f}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.http_transport", description=__doc__)
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--upload-gib", type=float, default=0, help="measure uploads of this size")
    args = p.parse_args(argv)
    if args.upload_gib:
        _uploads(args.upload_gib, args.rounds)
        return 0

    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(child,))
    server.start()
    try:
        base = f"http://127.0.0.1:{parent.recv()}"
        best: dict[tuple[str, str], float] = {}
        for _ in range(args.rounds):
            for key, ms in asyncio.run(_round(base, args.requests, args.concurrency)).items():
                best[key] = min(ms, best.get(key, ms))
    finally:
        parent.send(None)
        server.join(timeout=30)
    print(
        f"process CPU per GET, ms (best of {args.rounds} rounds of {args.requests} requests, "
        f"{args.concurrency} concurrent; server in another process)"
    )
    print(f"{'client':20} {'small JSON':>11} {'100 kB':>8}")
    for who in sorted({k[0] for k in best}):
        print(f"{who:20} {best[who, '/small']:11.3f} {best[who, '/large']:8.3f}")
    for path in ("/small", "/large"):
        a, b = best["a httpx default", path], best["b httpx + aiohttp", path]
        d = best["d carmic.http.send", path]
        print(f"{path}: (b) costs {b / a:.0%} of (a), (d) {d / b:.0%} of (b)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

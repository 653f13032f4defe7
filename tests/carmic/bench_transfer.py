"""Upload read-chunk size benchmark against the loopback storage stub (not collected by pytest).

    .venv/bin/python -m tests.carmic.bench_transfer [--size-mib 1024] [--runs 3]

Uploads a sparse file (reads cost no disk time, so the client's own per-chunk overhead shows)
to a stub that only hashes what it receives, once per chunk size and run, and prints the median
wall time, throughput and process CPU time. Client and stub share one process, as in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.carmic.storage_stub import StorageStub
from watchd.carmic.transfer import upload_file

CHUNKS = (256 << 10, 1 << 20, 4 << 20)


async def one(src: Path, chunk: int) -> tuple[float, float]:
    stub = await StorageStub(keep_bytes=False).start()
    try:
        async with httpx.AsyncClient() as http:
            url = stub.presign("PUT", "bench.bin")
            cpu0, t0 = time.process_time(), time.perf_counter()
            await upload_file(http, url, src, "video/mp4", chunk_size=chunk, now=time.time)
            return time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await stub.stop()


async def main(size: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        src = Path(d, "sparse.bin")
        with open(src, "wb") as f:
            f.truncate(size)
        print(f"{size >> 20} MiB sparse file, {runs} runs each (median)")
        print(f"{'chunk':>8} {'wall s':>8} {'MB/s':>8} {'cpu s':>8}")
        results: dict[int, list[tuple[float, float]]] = {c: [] for c in CHUNKS}
        for _ in range(runs):  # interleaved, so that machine noise spreads over every size
            for chunk in CHUNKS:
                results[chunk].append(await one(src, chunk))
        for chunk in CHUNKS:
            wall = statistics.median(w for w, _ in results[chunk])
            cpu = statistics.median(c for _, c in results[chunk])
            print(f"{chunk >> 10:>6}Ki {wall:8.2f} {size / wall / 1e6:8.0f} {cpu:8.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    asyncio.run(main(args.size_mib << 20, args.runs))

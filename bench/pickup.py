"""2. Pick-up latency: a local writer closes a file -> the first byte of its upload.

A writer creates a file in the inbox, writes it in a few pieces and closes it; the wall time of
the close is the start. The end is when the emulator's storage received the first body byte of
that file's PUT (its inspection records it). In between: the watcher's event (or poll), the
settle time, intake (fingerprint, ledger), the local probe, the project creation and the last
check that nobody has the file open. Files go one at a time, so each is measured alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import Options, Report, Table, median, spread
from bench.rig import (
    Run,
    emulator,
    make_env,
    sample_video,
    storage_puts,
    unique_copy,
    uploads,
    wait_for_uploads,
)
from watchd.emulator import Emulator, Timings

NAME = "pickup"
TITLE = "pick-up latency: writer closes -> first upload byte"
SETTLE = 1.0
POLL_INTERVAL = 2.0
SLACK = 0.5


def write_like_a_copy(data: bytes, dest: Path, pieces: int = 4) -> float:
    """Write ``data`` to ``dest`` in pieces, as a copy does, and return the wall time of the
    close."""
    step = max(1, len(data) // pieces)
    with open(dest, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
    return time.time()


def latencies(emu: Emulator, root: Path, sample: Path, scan: str, samples: int) -> list[float]:
    """Seconds from close to first upload byte for ``samples`` files, one after the other."""
    env = make_env(
        root,
        emu,
        daemon={"settle_seconds": SETTLE, "scan": scan, "poll_interval": POLL_INTERVAL},
    )
    sources = [
        unique_copy(sample, root / "src" / f"f{i}.mp4", f"{scan}-{i}") for i in range(samples)
    ]
    run = Run(env)
    out: list[float] = []
    try:
        run.wait_ready()
        for src in sources:
            done = uploads(emu) + 1
            closed = write_like_a_copy(src.read_bytes(), env.inbox / src.name)
            wait_for_uploads(emu, done, timeout=60)
            put = storage_puts(emu)[-1]
            out.append(float(put["first_byte"]) - closed)
    finally:
        run.stop()
    return out


def run(opts: Options) -> Report:
    """Events mode and poll mode, one file at a time."""
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    sample = sample_video(work)
    samples = 3 if opts.quick else 2 * opts.runs
    table = Table(
        ["scan mode", "settle s", "poll s", "files", "median s", "range", "median - settle s"],
        title="close() to the first byte at the storage, one file at a time",
    )
    # Processing never finishes: jobs already uploaded wait quietly on their SSE stream.
    with emulator(store_uploads=False, timings=Timings(step=600, keepalive=5)) as emu:
        for scan in ("events", "poll"):
            lat = latencies(emu, work / scan, sample, scan, samples)
            med = median(lat)
            interval = POLL_INTERVAL if scan == "poll" else 0.0
            target = SETTLE + interval + SLACK
            table.add(scan, SETTLE, interval or "-", len(lat), med, spread(lat), med - SETTLE)
            report.check(
                f"{scan} mode median latency",
                f"{med:.2f} s",
                f"<= settle {SETTLE:g}"
                + (f" + interval {interval:g}" if interval else "")
                + f" + {SLACK} = {target:g} s",
                med <= target,
            )
    report.tables.append(table)
    report.notes.append(
        "Each file is a real 6 s MP4 (86 kB): the figure is the daemon's own delay, not "
        "transfer time."
    )
    return report

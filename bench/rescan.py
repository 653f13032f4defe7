"""5. Rescan at scale: start-up over an inbox of 100,000 files the ledger already knows.

The inbox (``on_success = "keep"``: delivered sources stay where they are) holds 100,000 small
files in 100 folders, and the ledger holds a delivered job for each (with a clip and two events,
as a real history would), written straight into SQLite so that the set-up takes seconds. The
daemon is started several times: the figure is the time from the process start to its READY
(logged in, every inbox watched, the first full scan done) and the CPU it used until then.

Then the steady state: with the same tree, rescans every few seconds; the ledger records each
scan's time, which counts the passes. The CPU per pass is what the loop costs beyond the
daemon's background (measured alone first, with rescans out of the way): multiplied out to the
default ``rescan_seconds`` it is the share of a core a large inbox costs all day.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from bench.common import Options, Report, Sample, Table, cpu_seconds, median, spread, wait_until
from bench.rig import Run, emulator, ledger_counts, ledger_query, make_env
from tests.e2e.harness import Env
from watchd.ledger.db import Ledger

NAME = "rescan"
TITLE = "rescan at scale: start-up over 100,000 known files, steady-state rescans"
ENTRIES = 100_000
QUICK_ENTRIES = 5_000
FOLDERS = 100
READY_TARGET = 5.0
DEFAULT_RESCAN = 300.0  # the config's default rescan_seconds
RESCAN_EVERY = 4.0  # rescan_seconds for the steady-state phase
PASSES = 5


def build_tree(
    inbox: Path, entries: int, folders: int = FOLDERS
) -> list[tuple[str, os.stat_result]]:
    """``entries`` small files in ``folders`` folders; their relative paths and stats."""
    out = []
    for i in range(entries):
        folder = inbox / f"show-{i % folders:03d}"
        if i < folders:
            folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"episode-{i:06d}.mp4"
        with open(path, "wb") as f:
            f.write(b"\0" * (1000 + i % 977))
        out.append((path.relative_to(inbox).as_posix(), path.stat()))
    return out


def fill_ledger(
    state: Path, inbox_path: Path, outbox: Path, files: list[tuple[str, os.stat_result]]
) -> None:
    """One delivered job per file (plus a clip and two events), in one transaction."""
    Ledger.open(state).close()  # the schema, by the daemon's own migrations
    inbox = str(inbox_path)
    preset = json.dumps(
        {
            "video_type": "auto",
            "render": {"mode": "all"},
            "_delivery": {"inbox": inbox, "outbox": str(outbox), "on_success": "keep"},
        },
        sort_keys=True,
    )
    now = time.time() - 86_400
    conn = sqlite3.connect(state / "ledger.db")
    (first,) = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()
    jobs, clips, events = [], [], []
    for n, (rel, st) in enumerate(files, start=first):
        job_id = f"j{n:010x}"
        jobs.append(
            (job_id, inbox, rel, f"{inbox}/{rel}", "", preset, "delivered", st.st_size,
             st.st_mtime_ns, st.st_ino, st.st_dev, f"fp-{n}", f"wd-{n:010x}", 100.0, now, now,
             now)
        )  # fmt: skip
        clips.append((job_id, f"c{n}", 1, f"Clip {n}", 0.0, 30.0, 80.0, "delivered", now))
        events.append((job_id, now, "watcher", "discovered", None, "queued"))
        events.append((job_id, now, "daemon", "transition", "delivering", "delivered"))
    with conn:
        conn.executemany(
            "INSERT INTO jobs (id, inbox, rel_path, path, rule, preset, state, size, mtime_ns, "
            "inode, dev, fingerprint, marker, progress, created_at, updated_at, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            jobs,
        )
        conn.executemany(
            "INSERT INTO clips (job_id, clip_id, rank, title, start_time, end_time, "
            "virality_score, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            clips,
        )
        conn.executemany(
            "INSERT INTO events (job_id, at, actor, kind, from_state, to_state) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            events,
        )
    conn.close()


def last_scan(env: Env) -> float | None:
    """When the daemon last finished a scan of the inbox (it records each one)."""
    rows = ledger_query(env.state, "SELECT MAX(last_scan_at) FROM inboxes")
    return rows[0][0] if rows else None


def active_jobs(env: Env) -> int:
    counts = ledger_counts(env.state)
    return sum(n for state, n in counts.items() if state not in ("delivered", "failed"))


def write_config(env: Env, rescan_seconds: float) -> None:
    env.write_config(
        carmic={"creates_per_minute": 1_000_000, "exports_per_minute": 1_000_000},
        daemon={"settle_seconds": 0.5, "rescan_seconds": rescan_seconds, "max_uploads": 2},
        inbox={"on_success": "keep"},
    )


def background_rate(env: Env, seconds: float) -> tuple[float, float, float]:
    """Start once more with rescans out of the way: (seconds to READY, CPU to READY, CPU share
    of one core over ``seconds`` after READY)."""
    write_config(env, 3600)
    run = Run(env)
    try:
        ready = run.wait_ready()
        at_ready = cpu_seconds(run.pid)
        a = Sample.of(run.pid)
        time.sleep(seconds)
        b = Sample.of(run.pid)
    finally:
        run.stop()
    return ready, at_ready, (b.cpu - a.cpu) / (b.t - a.t)


def steady_state(env: Env, passes: int) -> tuple[int, float, float]:
    """With rescans every RESCAN_EVERY seconds: (passes seen, seconds, CPU seconds) between the
    end of the first pass after READY and the end of the last one."""
    write_config(env, RESCAN_EVERY)
    run = Run(env)
    try:
        run.wait_ready()
        first = wait_until(lambda: last_scan(env), timeout=30, what="the first scan")

        def next_pass(after: float) -> float:
            return wait_until(
                lambda: (t := last_scan(env)) is not None and t > after and t,
                timeout=RESCAN_EVERY * 10,
                interval=0.02,
                what="a rescan",
            )

        start_scan = next_pass(first)
        a = Sample.of(run.pid)
        scan = start_scan
        for _ in range(passes):
            scan = next_pass(scan)
        b = Sample.of(run.pid)
    finally:
        run.stop()
    return passes, b.t - a.t, b.cpu - a.cpu


def run(opts: Options) -> Report:
    """Build the tree and the ledger once; start the daemon over them several times."""
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    entries = QUICK_ENTRIES if opts.quick else ENTRIES
    runs = 2 if opts.quick else max(3, opts.runs)
    with emulator() as emu:
        env = make_env(work / "env", emu, inbox={"on_success": "keep"})
        t0 = time.monotonic()
        files = build_tree(env.inbox, entries)
        fill_ledger(env.state, env.inbox, env.outbox, files)
        setup = time.monotonic() - t0
        readies, cpus, rates = [], [], []
        for _ in range(runs):
            ready, cpu, rate = background_rate(env, 2.0 if opts.quick else 10.0)
            readies.append(ready)
            cpus.append(cpu)
            rates.append(rate)
        passes, seconds, cpu = steady_state(env, 2 if opts.quick else PASSES)
        creates = int(emu.core.inspection.counters["creates"])
        left = active_jobs(env)
    size = sum(p.stat().st_size for p in env.state.glob("ledger.db*"))
    base = median(rates)
    per_pass = max(0.0, cpu - base * seconds) / passes
    ready_med = median(readies)

    start = Table(
        ["figure", "median", "range"],
        title=f"start-up over {entries:,} known files in {FOLDERS} folders, {runs} starts",
    )
    start.add("process start -> READY, s", ready_med, spread(readies))
    start.add("CPU until READY, s", median(cpus), spread(cpus))
    start.add(
        "background CPU after READY, % of a core", 100 * base, spread([100 * r for r in rates])
    )
    report.tables.append(start)

    steady = Table(["figure", "value"], title="steady-state rescans")
    steady.add("rescan_seconds (this phase)", RESCAN_EVERY)
    steady.add("passes timed", passes)
    steady.add("CPU per rescan pass, s", per_pass)
    steady.add(f"CPU share with rescans every {RESCAN_EVERY:g} s, %", 100 * cpu / seconds)
    steady.add(
        f"CPU share at the default rescan_seconds {DEFAULT_RESCAN:g}, %",
        100 * (base + per_pass / DEFAULT_RESCAN),
    )
    steady.add("ledger size, MiB", size / (1 << 20))
    steady.add("set-up (tree + ledger), s", setup)
    steady.add("jobs created again / left active", f"{creates} / {left}")
    report.tables.append(steady)

    report.check(
        "time to READY (median)",
        f"{ready_med:.2f} s",
        f"<= {READY_TARGET:g} s",
        ready_med <= READY_TARGET,
    )
    report.check(
        "known files left alone",
        f"{creates} created, {left} active",
        "0, 0",
        not creates and not left,
    )
    report.notes.append(
        "READY is the daemon's own 'ready:' log line (sent to systemd at the same moment): "
        "Python start-up, ledger, login, inotify watches and the first full scan included."
    )
    return report

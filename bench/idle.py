"""6. Idle cost: what the daemon costs when nothing happens.

Ten inboxes, nothing arriving, for a minute: the daemon's CPU (``/proc/<pid>/stat``, all
threads) as a share of one core, and its wake-ups (voluntary context switches of all its
threads, ``/proc/<pid>/task/*/status``): a loop that polls shows up there even when each turn
is cheap. Measured after READY and a short quiet spell (start-up work is not idle), in equal
slices whose median and range show how steady it is.

Three set-ups: events mode with empty inboxes (the target), events mode over a 10,000-file tree
(1,000 known files per inbox, so inotify watches 100 folders), and poll mode over the same tree
(every file stat'ed every ``poll_interval``), which is reported, not judged.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from bench.common import Options, Report, Sample, Table, median, spread, vm_mib
from bench.rescan import build_tree, fill_ledger
from bench.rig import Run, emulator, make_env
from tests.e2e.harness import Env
from watchd.emulator import Emulator

NAME = "idle"
TITLE = "idle cost: 10 inboxes, nothing happening"
INBOXES = 10
TREE = 10_000
QUICK_TREE = 1_000
SECONDS = 60.0
QUICK_SECONDS = 5.0
SLICES = 6
QUIET = 3.0  # after READY, before measuring
POLL_INTERVAL = 2.0
CPU_TARGET = 1.0  # % of one core
# "No busy wake-ups": a loop that sleeps properly wakes a few times a second (the main loop's
# one-second beat, each watcher thread's own timeout); one that spins, hundreds of times.
WAKEUP_LIMIT = 50.0


def _env(root: Path, emu: Emulator, scan: str, files_per_inbox: int) -> Env:
    env = make_env(
        root,
        emu,
        daemon={"scan": scan, "poll_interval": POLL_INTERVAL, "rescan_seconds": 300},
        inbox={"on_success": "keep"},
        extra_inboxes=INBOXES - 1,
    )
    if files_per_inbox:
        pairs = [(env.inbox, env.outbox)] + [
            (root / f"inbox{i}", root / f"outbox{i}") for i in range(2, INBOXES + 1)
        ]
        for inbox, outbox in pairs:
            fill_ledger(env.state, inbox, outbox, build_tree(inbox, files_per_inbox, folders=10))
    return env


def measure(env: Env, seconds: float) -> dict[str, float]:
    """Start, wait for READY and a quiet spell, then sample ``SLICES`` equal slices."""
    run = Run(env)
    try:
        run.wait_ready()
        time.sleep(QUIET)
        samples = [Sample.of(run.pid)]
        for _ in range(SLICES):
            time.sleep(seconds / SLICES)
            samples.append(Sample.of(run.pid))
        threads = len(list(Path(f"/proc/{run.pid}/task").iterdir()))
        hwm = vm_mib(run.pid)
    finally:
        run.stop()
    cpu = [100 * (b.cpu - a.cpu) / (b.t - a.t) for a, b in itertools.pairwise(samples)]
    wake = [(b.wakeups - a.wakeups) / (b.t - a.t) for a, b in itertools.pairwise(samples)]
    first, last = samples[0], samples[-1]
    return {
        "cpu": 100 * (last.cpu - first.cpu) / (last.t - first.t),
        "cpu_median": median(cpu),
        "cpu_min": min(cpu),
        "cpu_max": max(cpu),
        "wakeups": (last.wakeups - first.wakeups) / (last.t - first.t),
        "wake_min": min(wake),
        "wake_max": max(wake),
        "seconds": last.t - first.t,
        "threads": threads,
        "hwm": hwm,
    }


def run(opts: Options) -> Report:
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    seconds = QUICK_SECONDS if opts.quick else SECONDS
    tree = QUICK_TREE if opts.quick else TREE
    per_inbox = tree // INBOXES
    setups = [
        ("events", 0, "events, empty inboxes"),
        ("events", per_inbox, f"events, {tree:,} files"),
        ("poll", per_inbox, f"poll every {POLL_INTERVAL:g} s, {tree:,} files"),
    ]
    table = Table(
        [
            "set-up",
            "seconds",
            "CPU % of a core",
            "slices (median, range)",
            "wake-ups/s",
            "range",
            "threads",
            "VmHWM MiB",
        ],
        title=f"{INBOXES} inboxes, nothing happening, {SLICES} slices of {seconds / SLICES:.3g} s",
    )
    results = {}
    with emulator() as emu:
        for k, (scan, files, label) in enumerate(setups):
            env = _env(work / f"s{k}", emu, scan, files)
            m = measure(env, seconds)
            results[label] = m
            table.add(
                label,
                m["seconds"],
                m["cpu"],
                f"{m['cpu_median']:.2f} ({m['cpu_min']:.2f}–{m['cpu_max']:.2f})",
                m["wakeups"],
                spread([m["wake_min"], m["wake_max"]]),
                int(m["threads"]),
                m["hwm"],
            )
    report.tables.append(table)
    target = results[setups[0][2]]
    report.check(
        "events mode CPU, 10 empty inboxes",
        f"{target['cpu']:.2f} % of a core",
        f"< {CPU_TARGET:g} %",
        target["cpu"] < CPU_TARGET,
    )
    report.check(
        "events mode wake-ups (no busy loop)",
        f"{target['wakeups']:.1f}/s",
        f"<= {WAKEUP_LIMIT:g}/s",
        target["wakeups"] <= WAKEUP_LIMIT,
    )
    report.notes.append(
        "CPU is counted in clock ticks (10 ms): over a 10 s slice the resolution is 0.1 %. "
        "Wake-ups are voluntary context switches of every thread of the daemon."
    )
    return report

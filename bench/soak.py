"""7. Soak: 200 files through a faulty emulator while the daemon is killed again and again.

The emulator answers ~5 % of API calls with a 5xx, commits some creates and then loses the
answer (a 500 or a dropped connection), resets some uploads mid-body, cuts SSE streams after a
few events and hands out 5-second access tokens. Once part of the work is done the minute pool
shrinks to almost nothing (a billing stop: jobs park on 402), and a while later it is topped up
and the parked jobs are retried (``watchd retry``, as an operator would; the daemon itself would
re-check after its park interval). Files arrive at a steady pace over the first part of the run,
also while the daemon is down, and the daemon is SIGKILLed and restarted 10 times at random
moments spread over the run (each kill once a further share of the files is done).

A thread walks the outbox all along and remembers every size it saw of every file under a final
name (a file seen with two sizes was visible before it was complete). Afterwards every figure
must be exact: all files delivered, one billed project and one manifest per file, no partial
file seen, no source lost, each in ``_done/<rule>/<name>`` with its bytes unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Options, Report, Table
from bench.rig import Run, emulator, ledger_counts, make_env, sample_video, unique_copy
from tests.e2e.harness import Env, OutboxWatcher, billed_projects, iter_manifests
from watchd.emulator import Emulator, Faults, Timings

NAME = "soak"
TITLE = "soak: 200 files, faults on, a billing stop, 10 SIGKILL + restarts"
FILES, KILLS = 200, 10
QUICK_FILES, QUICK_KILLS = 20, 3
SEED = 20260705

FAULTS = Faults(
    error_rate=0.05,
    create_commit_then_fail=0.05,
    upload_reset_rate=0.05,
    sse_cut_after=2,
)
ACCESS_TTL = 5
# Short, but long enough that a kill lands with jobs at every stage and that progress comes over
# SSE (a project that is ready by its first status call needs no stream).
TIMINGS = Timings(step=0.3, render=0.2, export=0.1, keepalive=1)
RULES: dict[str, dict[str, Any]] = {
    "podcasts": {"render": {"min_score": 0, "max_clips": 1}},
    "shows": {"render": {"min_score": 0, "max_clips": 2}, "exports": ["premiere"]},
}
BILLING_STOP_AT = 0.35  # share of files done when the minute pool runs dry
BILLING_POOL = 2  # minutes left in the pool then: a job or two, no more
BILLING_STOP_SECONDS = 6.0  # how long the stop lasts at least
TERMINAL = ("delivered", "failed")


@dataclass
class Source:
    """One input file: where it was dropped and what its bytes were."""

    rel: str
    staged: Path
    sha256: str
    size: int


@dataclass
class Log:
    """What the conductor did, for the report."""

    kills: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    billing_stop: float | None = None
    billing_lift: float | None = None
    retried: int = 0
    crash: str | None = None  # the daemon ended without being killed: the end of its log


# ---- the ledger, read beside the daemon ---------------------------------------------------------


def _jobs(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "ledger.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM jobs")]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def _event_counts(state_dir: Path) -> Counter[str]:
    conn = sqlite3.connect(f"file:{state_dir / 'ledger.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT kind, COUNT(*) FROM events GROUP BY kind").fetchall()
    finally:
        conn.close()
    return Counter({str(k): int(n) for k, n in rows})


def _parked_ids(state_dir: Path) -> list[str]:
    return [str(j["id"]) for j in _jobs(state_dir) if j["state"] == "parked"]


def _done(state_dir: Path) -> int:
    counts = ledger_counts(state_dir)
    return sum(counts.get(s, 0) for s in TERMINAL)


# ---- inputs ------------------------------------------------------------------------------------


def _make_sources(work: Path, n: int) -> list[Source]:
    sample = sample_video(work, seconds=8.0)
    rules = list(RULES)
    out = []
    for i in range(n):
        rel = f"{rules[i % len(rules)]}/ep{i:03d}.mp4"
        staged = unique_copy(sample, work / "staging" / rel, f"soak-{i}")
        data = staged.read_bytes()
        out.append(Source(rel, staged, hashlib.sha256(data).hexdigest(), len(data)))
    return out


class Dropper(threading.Thread):
    """Puts the files into the inbox at a steady pace, whether the daemon is up or not: half
    as a plain copy (seen while it is written), half as a rename of a finished file."""

    def __init__(self, inbox: Path, sources: list[Source], seconds: float) -> None:
        super().__init__(name="soak-dropper", daemon=True)
        self.inbox, self.sources, self.seconds = inbox, sources, seconds
        self.stop = threading.Event()

    def run(self) -> None:
        pace = self.seconds / max(1, len(self.sources))
        for i, s in enumerate(self.sources):
            if self.stop.wait(pace):
                return
            dest = self.inbox / s.rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if i % 2:
                tmp = dest.with_name(f".{dest.name}.part")
                shutil.copyfile(s.staged, tmp)
                os.replace(tmp, dest)
            else:
                shutil.copyfile(s.staged, dest)


# ---- the run -----------------------------------------------------------------------------------


class Conductor:
    """Starts, kills and restarts the daemon, stops and lifts billing, retries parked jobs."""

    def __init__(self, env: Env, emu: Emulator, n: int, kills: int, rng: random.Random) -> None:
        self.env, self.emu, self.n, self.kills, self.rng = env, emu, n, kills, rng
        self.log = Log()
        self.run: Run | None = None
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.run = Run(self.env)

    def _kill_due(self, done: int) -> bool:
        k = len(self.log.kills)
        # Spread over the run, the last one well before the end (not on an idle daemon).
        return k < self.kills and done >= self.n * (k + 1) / (self.kills + 2)

    def kill_and_restart(self) -> None:
        assert self.run is not None
        # A random moment: not right when the share was reached.
        time.sleep(self.rng.uniform(0.0, 1.5))
        self.env.kill()
        states = Counter(str(j["state"]) for j in _jobs(self.env.state))
        self.log.kills.append((time.monotonic() - self.t0, dict(states)))
        time.sleep(self.rng.uniform(0.0, 1.0))  # down a moment: files keep arriving
        self.start()

    def billing(self, done: int) -> None:
        now = time.monotonic()
        log = self.log
        if log.billing_stop is None and done >= self.n * BILLING_STOP_AT:
            self.emu.update(minutes=BILLING_POOL)
            log.billing_stop = now
        elif (
            log.billing_stop is not None
            and log.billing_lift is None
            and now - log.billing_stop >= BILLING_STOP_SECONDS
        ):
            self.emu.add_minutes(10_000_000)
            log.billing_lift = now
        if log.billing_lift is not None:
            # Jobs whose 402 was answered before the top-up may park after it: retry them too.
            parked = _parked_ids(self.env.state)
            if parked:
                self.env.cli("retry", *parked)
                log.retried += len(parked)

    def drive(self, timeout: float) -> bool:
        """Until every file is delivered or failed (True), or ``timeout`` (False)."""
        deadline = time.monotonic() + timeout
        last_retry_check = 0.0
        while time.monotonic() < deadline:
            assert self.run is not None
            if self.run.proc.poll() is not None:
                self.log.crash = f"watchd exited by itself ({self.run.proc.returncode}):\n"
                self.log.crash += self.run.log()[-3000:]
                return False
            done = _done(self.env.state)
            if self._kill_due(done):
                self.kill_and_restart()
                continue
            if time.monotonic() - last_retry_check >= 0.5:
                self.billing(done)
                last_retry_check = time.monotonic()
            if done >= self.n and self.log.billing_lift is not None:
                return True
            time.sleep(0.1)
        return False


def run(opts: Options) -> Report:
    """Drop, conduct, then count."""
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    n, kills = (QUICK_FILES, QUICK_KILLS) if opts.quick else (FILES, KILLS)
    rng = random.Random(SEED)
    sources = _make_sources(work, n)
    # A killed daemon leaves requests half sent: the emulator's tracebacks about them are noise.
    emulator_log = logging.getLogger("watchd.emulator")
    level = emulator_log.level
    emulator_log.setLevel(logging.CRITICAL)
    try:
        return _soak(opts, report, work, n, kills, rng, sources)
    finally:
        emulator_log.setLevel(level)


def _soak(
    opts: Options,
    report: Report,
    work: Path,
    n: int,
    kills: int,
    rng: random.Random,
    sources: list[Source],
) -> Report:
    drop_seconds = 5.0 if opts.quick else 40.0
    with emulator(faults=FAULTS, access_ttl=ACCESS_TTL, timings=TIMINGS) as emu:
        env = make_env(work / "env", emu, RULES)
        conductor = Conductor(env, emu, n, kills, rng)
        dropper = Dropper(env.inbox, sources, drop_seconds)
        t0 = time.monotonic()
        with OutboxWatcher(env.outbox) as watcher:
            conductor.start()
            dropper.start()
            try:
                finished = conductor.drive(timeout=180 if opts.quick else 20 * 60)
            finally:
                dropper.stop.set()
                dropper.join()
                if env.proc is not None and env.proc.poll() is None:
                    env.stop()
        wall = time.monotonic() - t0
        snap = emu.snapshot()
    _figures(report, env, sources, snap, watcher, conductor.log, wall, finished)
    return report


# ---- the figures -------------------------------------------------------------------------------


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass
class Outcome:
    """What the outbox, the inbox, the ledger and the emulator say after the run. Each list
    names the files that break a promise (empty when it is kept)."""

    n: int
    not_delivered: list[str] = field(default_factory=list)
    billed_not_once: list[str] = field(default_factory=list)
    manifest_not_once: list[str] = field(default_factory=list)
    manifest_elsewhere: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    source_elsewhere: list[str] = field(default_factory=list)
    ledger_path_wrong: list[str] = field(default_factory=list)
    inbox_strays: list[str] = field(default_factory=list)
    outbox_empty_dirs: list[str] = field(default_factory=list)
    outbox_temporaries: list[str] = field(default_factory=list)


def _outcome(env: Env, sources: list[Source], snap: dict[str, Any]) -> Outcome:
    out = Outcome(len(sources))
    jobs = {str(j["rel_path"]): j for j in _jobs(env.state)}
    for s in sources:
        job = jobs.get(s.rel)
        if job is None or job["state"] != "delivered":
            state = job and f"{job['state']} ({job['error']})"
            out.not_delivered.append(f"{s.rel}: {state or 'never seen'}")

    # One billed project per file, and none billed for anything else.
    billed = billed_projects(snap)
    markers = {str(j["marker"]): rel for rel, j in jobs.items()}
    for s in sources:
        count = len(billed.get(str(jobs[s.rel]["marker"]), [])) if s.rel in jobs else 0
        if count != 1:
            out.billed_not_once.append(f"{s.rel}: {count} billed projects")
    out.billed_not_once += [f"{m}: billed, no job" for m in billed if m not in markers]

    # One manifest per file, in <rule>/<stem>/.
    by_sha = {s.sha256: s for s in sources}
    folders: dict[str, list[str]] = {}
    for folder, m in iter_manifests(env.outbox):
        folders.setdefault(str(m["source"]["sha256"]), []).append(
            folder.relative_to(env.outbox).as_posix()
        )
    for sha, s in by_sha.items():
        got = folders.get(sha, [])
        if len(got) != 1:
            out.manifest_not_once.append(f"{s.rel}: {len(got)} manifests {got}")
        elif got[0] != s.rel.rsplit(".", 1)[0]:
            out.manifest_elsewhere.append(f"{s.rel}: manifest in {got[0]}/")
    out.manifest_not_once += [
        f"{f}: not one of ours" for sha, f in folders.items() if sha not in by_sha
    ]

    # Every source's bytes, found under any name in the inbox tree.
    found: dict[str | None, list[str]] = {}
    for p in sorted(env.inbox.rglob("*")):
        if p.is_file():
            found.setdefault(_sha256(p), []).append(p.relative_to(env.inbox).as_posix())
    for s in sources:
        where = found.get(s.sha256)
        if not where:
            out.lost.append(s.rel)
            continue
        if where != [f"_done/{s.rel}"]:
            out.source_elsewhere.append(f"{s.rel} -> {where}")
        # What `watchd status` and a later `watchd retry` go by.
        if s.rel in jobs and str(jobs[s.rel]["path"]) not in {str(env.inbox / w) for w in where}:
            out.ledger_path_wrong.append(f"{s.rel}: the ledger says {jobs[s.rel]['path']}")
    out.inbox_strays = [
        f"{rel} ({sha and sha[:12]})"
        for sha, rels in found.items()
        if sha not in by_sha
        for rel in rels
    ]
    for dirpath, dirnames, filenames in os.walk(env.outbox):
        rel = Path(dirpath).relative_to(env.outbox).as_posix()
        if not dirnames and not filenames:
            out.outbox_empty_dirs.append(rel)
        out.outbox_temporaries += [f"{rel}/{f}" for f in filenames if f.startswith(".")]
    return out


def _figures(
    report: Report,
    env: Env,
    sources: list[Source],
    snap: dict[str, Any],
    watcher: OutboxWatcher,
    log: Log,
    wall: float,
    finished: bool,
) -> None:
    o = _outcome(env, sources, snap)
    n = o.n
    partial = watcher.partial_files()
    figures = Table(["figure", "value", "must be", "verdict"], title=f"{n} files")

    def exact(what: str, bad: list[str], *, count: bool = False) -> None:
        value, target = (str(len(bad)), "0") if count else (f"{n - len(bad)}/{n}", f"{n}/{n}")
        figures.add(what, value, target, "PASS" if not bad else "FAIL")
        report.check(what, value, target, not bad)
        report.notes += [f"{what}: {b}" for b in bad[:10]]

    exact("files delivered", o.not_delivered)
    exact("files with exactly 1 billed project", o.billed_not_once)
    exact("files with exactly 1 manifest", o.manifest_not_once)
    exact("partial files seen in the outbox", partial, count=True)
    exact("sources lost", o.lost, count=True)
    exact("sources in _done/<rule>/<name>, unchanged", o.source_elsewhere)
    exact("deliveries in <rule>/<stem>/", o.manifest_elsewhere)
    report.tables.append(figures)

    counters = snap["counters"]
    statuses = Counter(int(q["status"]) for q in snap["requests"])
    events = _event_counts(env.state)
    projects = snap["projects"]
    run_table = Table(["what", "count"], title="the run")
    run_table.add("wall time s", wall)
    run_table.add("SIGKILL + restarts", len(log.kills))
    run_table.add("random 5xx injected", counters["injected_errors"])
    run_table.add("creates committed, answer lost", counters["commit_then_fail"])
    run_table.add("upload connections reset", counters["upload_resets"])
    run_table.add("SSE connections (cut after 2 events)", counters["sse_connections"])
    run_table.add("401 answers (5 s token)", statuses.get(401, 0))
    run_table.add("token refreshes / logins", f"{counters['refreshes']} / {counters['logins']}")
    run_table.add("402 answers (billing stop)", statuses.get(402, 0))
    run_table.add("jobs parked / retried after top-up", f"{events['parked']} / {log.retried}")
    run_table.add("billing stop lasted s", (log.billing_lift or 0) - (log.billing_stop or 0))
    run_table.add(
        "projects created / deleted", f"{len(projects)} / {sum(p['deleted'] for p in projects)}"
    )
    run_table.add(
        "orphans deleted / creates recovered",
        f"{events['orphan_deleted']} / {events['create_recovered']}",
    )
    run_table.add("outbox scans by the watcher", watcher.scans)
    others = {
        "ledger paths not where the source is": o.ledger_path_wrong,
        "stray files in the inbox": o.inbox_strays,
        "empty folders in the outbox": o.outbox_empty_dirs,
        "hidden temporaries left in the outbox": o.outbox_temporaries,
    }
    for what, bad in others.items():
        run_table.add(what, len(bad))
        report.notes += [f"{what}: {b}" for b in bad[:10]]
    report.tables.append(run_table)

    kills = Table(["kill", "at s", "jobs by state at the kill"], title="the kills")
    for i, (t, states) in enumerate(log.kills, 1):
        kills.add(str(i), t, ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    report.tables.append(kills)

    if log.crash:
        report.notes.insert(0, log.crash)
    elif not finished:
        report.notes.insert(0, "timed out before every file was done")
    report.notes.append(
        "Faults: 5 % random 5xx, 5 % creates committed then answered with a 500 or a dropped "
        "connection, 5 % upload resets, SSE streams cut after 2 events, 5 s access tokens; "
        f"a billing stop ({BILLING_POOL} minutes left) from {BILLING_STOP_AT:.0%} of the files "
        f"done, lifted after {BILLING_STOP_SECONDS:g} s by a top-up and `watchd retry`. "
        f"{len(log.kills)} kills, each at a random moment (0-1.5 s) after a further "
        f"1/{len(log.kills) + 2} of the files is done."
    )

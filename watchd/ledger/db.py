"""The ledger: one SQLite file that remembers every source file and what was done for it.

One row per source file in ``jobs``; ``clips`` and ``exports`` hang off it; ``events`` is an
append-only history (who did what when). Every state transition is a single write transaction
that also appends its event, so a crash leaves each job in exactly one recorded state.

Transactions start with ``BEGIN IMMEDIATE``: the daemon and the CLI (``retry``/``forget``) write
the same file, and a deferred transaction that reads and then writes could fail on a stale WAL
snapshot instead of waiting for the busy timeout.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed

from watchd.clock import Clock, SystemClock
from watchd.ledger.rowcache import RowCache, affinities, with_values
from watchd.ledger.states import RESUMABLE, TERMINAL, Stage, check_transition

DB_NAME = "ledger.db"
BUSY_TIMEOUT_MS = 10_000


class LedgerError(Exception):
    pass


@dataclass(frozen=True)
class JobRow:
    id: str
    inbox: str
    rel_path: str
    path: str
    rule: str
    preset: str
    state: str
    resume_stage: str | None
    park_reason: str | None
    size: int
    mtime_ns: int
    inode: int
    dev: int
    fingerprint: str
    sha256: str | None
    marker: str
    project_id: str | None
    object_key: str | None
    upload_url: str | None
    content_type: str | None
    duration: float | None
    progress: float
    step: str | None
    bytes_uploaded: int
    attempts: int
    next_attempt_at: float
    error_code: str | None
    error: str | None
    duplicate_of: str | None
    outbox_dir: str | None
    disposed_to: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    # What the job waits for (a wait is not an error): "cause: detail", until when, since when.
    wait: str | None = None
    wait_until: float | None = None
    wait_since: float | None = None
    # The cluster node that holds or last held the job ([cluster]; NULL on one host).
    node: str | None = None

    @property
    def stage(self) -> Stage:
        return Stage(self.state)

    @property
    def preset_dict(self) -> dict[str, Any]:
        d = json.loads(self.preset or "{}")
        return d if isinstance(d, dict) else {}

    @property
    def name(self) -> str:
        return self.rel_path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ClipRow:
    job_id: str
    clip_id: str
    rank: int
    title: str
    start_time: float
    end_time: float
    virality_score: float
    reasoning: str
    thumbnail_url: str | None
    selected: int
    state: str
    render_attempts: int
    progress: float
    words: str | None
    file: str | None
    captions: str | None
    thumbnail: str | None
    sha256: str | None
    size: int | None
    error: str | None
    updated_at: float


@dataclass(frozen=True)
class ExportRow:
    job_id: str
    clip_id: str
    format: str
    export_id: str | None
    state: str
    path: str | None
    reason: str | None
    updated_at: float


@dataclass(frozen=True)
class EventRow:
    id: int
    job_id: str
    at: float
    actor: str
    kind: str
    from_state: str | None
    to_state: str | None
    detail: str | None


@dataclass(frozen=True)
class InboxRow:
    path: str
    paused: int
    reason: str | None
    entries: int
    last_scan_at: float | None


@dataclass(frozen=True)
class EntryRow:
    """An inbox entry that is not a job (table ``inbox_entries``): ``state`` is ``settling``
    (``since`` = when its settle clock started, ``wait`` = settle_seconds) or ``failed`` (not
    taken: ``code`` and ``reason`` say why). ``rel_path``/``path`` are printable (see
    ``watching.regular.printable``); ``escaped`` says that bad bytes were escaped in them."""

    inbox: str
    rel_path: str
    path: str
    rule: str
    state: str
    code: str | None
    reason: str | None
    escaped: int
    since: float | None
    wait: float | None
    size: int | None
    updated_at: float


@functools.cache
def _columns(cls: type) -> tuple[str, ...]:
    # Cached: dataclasses.fields() per row was most of the cost of reading a list of jobs.
    return tuple(f.name for f in fields(cls))


Row = TypeVar("Row")

# Rows are selected by these column lists, in field order, and built positionally: no dict
# per row, and a column added to a table does not shift the fields.
_JOB_COLS = ", ".join(_columns(JobRow))
_CLIP_COLS = ", ".join(_columns(ClipRow))
_EXPORT_COLS = ", ".join(_columns(ExportRow))
_EVENT_COLS = ", ".join(_columns(EventRow))
_INBOX_COLS = ", ".join(_columns(InboxRow))
_ENTRY_COLS = ", ".join(_columns(EntryRow))
_JOB_FIELDS = frozenset(_columns(JobRow))
_CLIP_FIELDS = frozenset(_columns(ClipRow))
_EXPORT_FIELDS = frozenset(_columns(ExportRow))
_JOB_KINDS = affinities(JobRow)
# The columns left out of an insert are NULL (those with defaults are all given).
_NO_JOB = JobRow(**{name: cast(Any, None) for name in _columns(JobRow)})
_CLIP_KINDS = affinities(ClipRow)

# Rows kept by the row cache: every job in flight in a large burst, and the clips of the jobs
# rendering or delivering (their words make a clip list the larger entry).
JOB_CACHE_ROWS = 2048
CLIP_CACHE_JOBS = 512


def _known_fields(values: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    """Refuse a write naming a column the table does not have (a caller's typo)."""
    if bad := values.keys() - allowed:
        raise LedgerError(f"unknown {what} fields: {sorted(bad)}")


# ---- what both ledgers decide alike (watchd.ledger.pg uses these too) ------------------------


def _check_retryable(job: JobRow) -> None:
    if job.stage not in (Stage.FAILED, Stage.PARKED):
        raise LedgerError(f"job {job.id} is {job.state}: only failed or parked jobs can be retried")


def _forgotten_detail(job: JobRow) -> dict[str, Any]:
    """The detail of a job's ``forgotten`` event: what a running daemon needs to take the same
    file again (:meth:`Ledger.forgotten_since`)."""
    return {
        "inbox": job.inbox,
        "rel_path": job.rel_path,
        "size": job.size,
        "mtime_ns": job.mtime_ns,
    }


def _forgotten_files(
    after: int, rows: Iterable[tuple[Any, Any]]
) -> tuple[int, list[tuple[str, str, int, int]]]:
    """``(id, detail)`` of ``forgotten`` events after event ``after``, in id order, as
    :meth:`Ledger.forgotten_since` returns them."""
    out = []
    for event_id, detail in rows:
        after = max(after, int(event_id))
        d = json.loads(detail or "{}")
        if isinstance(d, dict) and "rel_path" in d:
            out.append((str(d["inbox"]), str(d["rel_path"]), int(d["size"]), int(d["mtime_ns"])))
    return after, out


def _waits_by_cause(rows: Iterable[tuple[Any, Any]]) -> dict[str, int]:
    """``(wait, how many jobs)`` summed by the wait's cause, the text before its first colon."""
    out: dict[str, int] = {}
    for wait, n in rows:
        cause = str(wait).split(":", 1)[0].strip()
        out[cause] = out.get(cause, 0) + int(n)
    return out


# ---- migrations: numbered, append-only ---------------------------------------------------------


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            inbox TEXT NOT NULL,
            rel_path TEXT NOT NULL,
            path TEXT NOT NULL,
            rule TEXT NOT NULL,
            preset TEXT NOT NULL,
            state TEXT NOT NULL,
            resume_stage TEXT,
            park_reason TEXT,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            dev INTEGER NOT NULL,
            fingerprint TEXT NOT NULL,
            sha256 TEXT,
            marker TEXT NOT NULL UNIQUE,
            project_id TEXT,
            object_key TEXT,
            upload_url TEXT,
            content_type TEXT,
            duration REAL,
            progress REAL NOT NULL DEFAULT 0,
            step TEXT,
            bytes_uploaded INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            error_code TEXT,
            error TEXT,
            duplicate_of TEXT,
            outbox_dir TEXT,
            disposed_to TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            finished_at REAL
        );
        CREATE INDEX jobs_identity ON jobs (inbox, rel_path, size, mtime_ns);
        CREATE INDEX jobs_fingerprint ON jobs (fingerprint);
        CREATE INDEX jobs_state ON jobs (state, next_attempt_at);
        CREATE TABLE clips (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            clip_id TEXT NOT NULL,
            rank INTEGER NOT NULL,
            title TEXT NOT NULL,
            start_time REAL NOT NULL,
            end_time REAL NOT NULL,
            virality_score REAL NOT NULL,
            reasoning TEXT NOT NULL DEFAULT '',
            thumbnail_url TEXT,
            selected INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending',
            render_attempts INTEGER NOT NULL DEFAULT 0,
            progress REAL NOT NULL DEFAULT 0,
            words TEXT,
            file TEXT,
            captions TEXT,
            thumbnail TEXT,
            sha256 TEXT,
            size INTEGER,
            error TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, clip_id)
        );
        CREATE TABLE exports (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            clip_id TEXT NOT NULL,
            format TEXT NOT NULL,
            export_id TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            path TEXT,
            reason TEXT,
            updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, clip_id, format)
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT,
            detail TEXT
        );
        CREATE INDEX events_job ON events (job_id, id);
        CREATE TABLE inboxes (
            path TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            entries INTEGER NOT NULL DEFAULT 0,
            last_scan_at REAL
        );
        """
    )


def _m2_meta(db: sqlite_utils.Database) -> None:
    db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")


def _m_notify_queue(db: sqlite_utils.Database) -> None:
    """Notifications (:mod:`watchd.notify`): each event recorded with the transition that caused
    it, one queue row per (event, notifier) until it is answered, and each notifier's health."""
    db.executescript(
        """
        CREATE TABLE notify_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            msg_id TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            job_id TEXT,
            inbox TEXT,
            at REAL NOT NULL,
            body TEXT NOT NULL
        );
        CREATE TABLE notify_queue (
            event_id INTEGER NOT NULL REFERENCES notify_events(id) ON DELETE CASCADE,
            notifier TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            created_at REAL NOT NULL,
            last_status TEXT,
            last_error TEXT,
            PRIMARY KEY (notifier, event_id)
        );
        CREATE INDEX notify_queue_due ON notify_queue (notifier, next_attempt_at, event_id);
        CREATE TABLE notifiers (
            name TEXT PRIMARY KEY,
            gone_fingerprint TEXT,
            failing INTEGER NOT NULL DEFAULT 0,
            last_status TEXT,
            last_error TEXT,
            last_attempt_at REAL,
            last_success_at REAL,
            delivered INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0
        );
        """
    )


def _m_hostile_inbox_entries(db: sqlite_utils.Database) -> None:
    # Inbox entries that are not jobs: files still settling and entries that are not taken
    # (a symbolic link, a special file, a name that cannot be stored), for `watchd status`.
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS inbox_entries (
            inbox TEXT NOT NULL,
            rel_path TEXT NOT NULL,
            path TEXT NOT NULL,
            rule TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL,
            code TEXT,
            reason TEXT,
            escaped INTEGER NOT NULL DEFAULT 0,
            since REAL,
            wait REAL,
            size INTEGER,
            updated_at REAL NOT NULL,
            PRIMARY KEY (inbox, rel_path)
        );
        """
    )


def _m_truth_waits(db: sqlite_utils.Database) -> None:
    """A job's wait (rate limits, a duplicate's first job, billing, the tier, a held file) is
    kept apart from its error: ``watchd status`` shows waits as waits."""
    db.executescript(
        """
        ALTER TABLE jobs ADD COLUMN wait TEXT;
        ALTER TABLE jobs ADD COLUMN wait_until REAL;
        ALTER TABLE jobs ADD COLUMN wait_since REAL;
        """
    )


def _m_web_jobs_by_age(db: sqlite_utils.Database) -> None:
    # The dashboard lists jobs newest first, a page at a time: without this, every page view
    # sorted the whole table.
    db.executescript("CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at, id);")


def _m_cluster_node(db: sqlite_utils.Database) -> None:
    # The node that holds a job: always NULL here (one host), kept so that the rows of both
    # ledgers are the same and `watchd ledger migrate` copies every column.
    db.executescript("ALTER TABLE jobs ADD COLUMN node TEXT;")


MIGRATIONS: Sequence[Callable[[sqlite_utils.Database], None]] = (
    _m1_initial,
    _m2_meta,
    _m_notify_queue,
    _m_hostile_inbox_entries,
    _m_web_jobs_by_age,
    _m_truth_waits,
    _m_cluster_node,
)


class Observer(Protocol):
    """Told of job and inbox changes inside the transaction that makes them, so that what it
    writes on the connection commits or rolls back with them (:mod:`watchd.notify.recorder`).
    ``stages``: the target stages it wants :meth:`job_moved` for."""

    stages: frozenset[Stage]

    def job_added(self, conn: sqlite3.Connection, job: JobRow) -> None: ...

    def job_moved(self, conn: sqlite3.Connection, job: JobRow, src: Stage, detail: Any) -> None: ...

    def inbox_changed(
        self, conn: sqlite3.Connection, path: str, paused: bool, reason: str | None
    ) -> None: ...


# The non-terminal states, listed: "state IN (...)" searches the (state, next_attempt_at) index,
# where "state NOT IN (delivered, failed)" scanned every job ever recorded (18 ms a tick with
# 100,000 delivered jobs, 4 % of a core for a daemon doing nothing).
_ACTIVE = tuple(s.value for s in Stage if s not in TERMINAL)
_ACTIVE_MARKS = ",".join("?" * len(_ACTIVE))


def new_job_id() -> str:
    return "j" + secrets.token_hex(5)


class Ledger:
    """The job ledger. Not thread-safe across threads by design: the daemon owns one instance
    on its event-loop thread; the CLI opens its own.

    Job rows and clip lists are cached (:mod:`watchd.ledger.rowcache`): the pipeline reads a job
    again after every step. The cache holds while no other connection commits (``PRAGMA
    data_version``, checked before a cached row is handed out and at the start of every write)
    and nothing writes through :attr:`db` behind the ledger's back (the connection's change
    count); our own writes update it as they commit."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        clock: Clock | None = None,
        readonly: bool = False,
        fsync: bool = True,
    ) -> None:
        """``fsync=False`` (tests that simulate crashes inside one process): no commit waits
        for the disk (``synchronous = OFF``); what :meth:`relaxed` means is still tracked."""
        self.path = path
        self._fsync = fsync
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.RLock()
        # counts_by_state() is read on every tick; counting 100,000 finished jobs each time
        # costs more than the rest of an idle tick together. It is recounted only after a
        # write: ours (counted here) or another process's (PRAGMA data_version moves).
        self._writes = 0
        self._counts: tuple[tuple[int, int], dict[str, int]] | None = None
        # Told the id of each job written (and "" for an inbox's state): the web dashboard's
        # live feed (watchd/web/feed.py). Called inside the write: it may only take note.
        self.on_change: Callable[[str], None] | None = None
        self._wait_counts: dict[bool, tuple[tuple[int, int], dict[str, int]]] = {}
        # isolation_level=None: no implicit BEGIN/COMMIT around a statement; every write
        # transaction is the explicit BEGIN IMMEDIATE of _write().
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            conn = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                check_same_thread=False,
                isolation_level=None,
            )
        conn.row_factory = None
        self._conn = conn
        self._jobs: RowCache[JobRow] = RowCache(JOB_CACHE_ROWS)
        self._clips: RowCache[tuple[ClipRow, ...]] = RowCache(CLIP_CACHE_JOBS)
        # (data_version, total_changes) when the caches were last known good.
        self._mark = (-1, -1)
        self._depth = 0  # > 0 inside a write transaction (see batch)
        self._relaxed = 0  # > 0 inside relaxed()
        self._synchronous = "FULL"  # the connection's setting now
        self._unsynced = 0  # relaxed commits since the last durable one
        self.observer: Observer | None = None  # see Observer; set by the daemon
        self.db = sqlite_utils.Database(conn)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA foreign_keys = ON")
        if path is not None and not readonly:
            self.db.execute("PRAGMA journal_mode = WAL")
            # FULL: the create intent must be on disk before the POST that bills. Writes that
            # may be lost to a power cut are made inside relaxed() (see there).
            self._synchronous = "FULL" if fsync else "OFF"
            self.db.execute(f"PRAGMA synchronous = {self._synchronous}")
        if not readonly:
            self.migrate()
        # Jobs a task of this process is advancing (see set_busy): per connection, in memory.
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS busy (id TEXT PRIMARY KEY) WITHOUT ROWID")

    @classmethod
    def open(cls, state_dir: Path, *, clock: Clock | None = None) -> Ledger:
        """Open ``<state_dir>/ledger.db``, refusing a network filesystem (SQLite locking is not
        reliable over SMB/NFS, and a corrupt ledger means double billing)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        from watchd.watching.mounts import fs_type, is_network_fs

        if is_network_fs(state_dir):
            raise LedgerError(
                f"state_dir {state_dir} is on a network filesystem ({fs_type(state_dir)}); "
                "the ledger needs a local disk: set [daemon] state_dir to a local path"
            )
        path = state_dir / DB_NAME
        ledger = cls(path, clock=clock)
        with suppress(OSError):
            os.chmod(path, 0o600)
        return ledger

    def close(self) -> None:
        self._conn.close()

    # ---- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        row = self._conn.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def migrate(self) -> None:
        with self._lock:
            current = self.schema_version()
            for number, migration in enumerate(MIGRATIONS, start=1):
                if number <= current:
                    continue
                with self._write():
                    migration(self.db)
                    self._conn.execute(f"PRAGMA user_version = {number}")
                    self._jobs.clear()
                    self._clips.clear()

    # ---- transactions and the row cache ----------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes made inside share one transaction: one commit (one fsync) for all of
        them, all or none on disk. An error inside rolls every one back and propagates, so a
        writer inside must not swallow errors of its own writes."""
        with self._write():
            yield

    @contextmanager
    def granting(self) -> Iterator[bool]:
        """Grants of processing slots are made inside (see the cluster's ledger, where other
        hosts grant too). Yields False: this ledger is not shared between hosts."""
        yield False

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Writes that start inside are committed without waiting for the disk (WAL with
        ``synchronous = NORMAL``): a killed process loses none of them, a power cut may lose
        the last of them, never a durable write, and never a relaxed write made before a
        durable one (committing a durable write puts every earlier write on disk too).

        For writes whose loss is the same as a kill just before them: progress, and steps
        whose redo is harmless (a probe, a status already reached). Every write that comes
        before something the ledger must not forget (a billed call, a folder reserved in the
        outbox, a source moved) stays durable, the default."""
        self._relaxed += 1
        try:
            yield
        finally:
            self._relaxed -= 1

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (inside :meth:`batch`, a part of it) on the ledger's connection,
        for tables the ledger does not model itself (the notification queue)."""
        with self._write():
            yield self._conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on the ledger's connection, as tuples."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @property
    def in_transaction(self) -> bool:
        """Inside a write transaction of this ledger (what is read now may yet roll back)."""
        return self._depth > 0

    @property
    def unsynced_writes(self) -> int:
        """Relaxed commits not yet on disk for sure (none since the last durable commit)."""
        return self._unsynced

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction. BEGIN IMMEDIATE and COMMIT are the whole of it: a savepoint
        inside would roll back nothing the ROLLBACK here does not. Inside :meth:`batch` a write
        is part of the batch's transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            conn = self._conn
            # Read by SQLite when the transaction starts: set before BEGIN, not before COMMIT.
            relaxed = self._relaxed > 0
            wanted = "OFF" if not self._fsync else "NORMAL" if relaxed else "FULL"
            if wanted != self._synchronous and self.path is not None:
                conn.execute(f"PRAGMA synchronous = {wanted}")
                self._synchronous = wanted
            conn.execute("BEGIN IMMEDIATE")
            self._jobs.begin()
            self._clips.begin()
            self._depth = 1
            try:
                # Holding the write lock: no other connection can commit until we do, so the
                # cache checked now stays right through the transaction and after it.
                self._check_cache()
                yield
                conn.execute("COMMIT")
            except BaseException:
                self._jobs.rollback()
                self._clips.rollback()
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                self._jobs.commit()
                self._clips.commit()
                self._unsynced = self._unsynced + 1 if relaxed else 0
            finally:
                self._depth = 0
                self._writes += 1  # after it: a count read inside the transaction is stale
                # Our own changes are filed in the cache already (or dropped from it).
                self._mark = (self._mark[0], conn.total_changes)

    def _check_cache(self) -> None:
        """Drop every cached row if another connection committed since the last look, or
        something wrote through :attr:`db` directly."""
        conn = self._conn
        mark = (int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes)
        if mark != self._mark:
            self._jobs.clear()
            self._clips.clear()
            self._mark = mark

    def _rows(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            return [cls(*r) for r in self._conn.execute(sql, params)]

    def _select(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._conn.execute(sql, params)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        # Values converted as sqlite-utils' insert did (dicts and lists as JSON): the same rows
        # as before, without its look-ups of the schema on every insert.
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        self._conn.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks})",
            [jsonify_if_needed(v) for v in row.values()],
        )

    def _event(
        self,
        job_id: str,
        kind: str,
        *,
        actor: str = "daemon",
        src: str | None = None,
        dst: str | None = None,
        detail: Any = None,
    ) -> None:
        if self.on_change is not None:
            self.on_change(job_id)
        self._conn.execute(
            "INSERT INTO events (job_id, at, actor, kind, from_state, to_state, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                self.clock.now(),
                actor,
                kind,
                src,
                dst,
                json.dumps(detail, sort_keys=True) if detail is not None else None,
            ),
        )

    # ---- jobs ------------------------------------------------------------------------------

    def add_job(
        self,
        *,
        inbox: str,
        rel_path: str,
        path: str,
        rule: str,
        preset: dict[str, Any],
        size: int,
        mtime_ns: int,
        inode: int,
        dev: int,
        fingerprint: str,
        actor: str = "watcher",
    ) -> JobRow:
        """Record a newly settled source file in state ``queued``."""
        job_id = new_job_id()
        now = self.clock.now()
        values = {
            "id": job_id,
            "inbox": inbox,
            "rel_path": rel_path,
            "path": path,
            "rule": rule,
            "preset": json.dumps(preset, sort_keys=True),
            "state": Stage.QUEUED.value,
            "size": size,
            "mtime_ns": mtime_ns,
            "inode": inode,
            "dev": dev,
            "fingerprint": fingerprint,
            "marker": f"wd-{job_id[1:]}",
            "progress": 0,
            "bytes_uploaded": 0,
            "attempts": 0,
            "next_attempt_at": 0,
            "created_at": now,
            "updated_at": now,
        }
        with self._write():
            self._insert("jobs", values)
            self._event(
                job_id,
                "discovered",
                actor=actor,
                dst=Stage.QUEUED.value,
                detail={"path": path, "rule": rule, "size": size},
            )
            job = with_values(_NO_JOB, values, _JOB_KINDS)
            if job is not None:
                self._jobs.put(job_id, job)
            if self.observer is not None:
                self.observer.job_added(self._conn, job or cast(JobRow, self._job(job_id)))
        return job or self.require(job_id)

    def get(self, job_id: str) -> JobRow | None:
        """The job, or None. Rows are frozen: the one handed out may be the cached one."""
        with self._lock:
            if not self._depth:  # inside a write the cache was checked under the write lock
                self._check_cache()
            return self._job(job_id)

    def _job(self, job_id: str) -> JobRow | None:
        """The job from the cache, else read (and cached). Only with the cache checked: inside
        a write transaction or right after :meth:`_check_cache`."""
        job = self._jobs.get(job_id)
        if job is None:
            rows = self._rows(JobRow, f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (job_id,))
            if not rows:
                return None
            job = rows[0]
            self._jobs.put(job_id, job)
        return job

    def require(self, job_id: str) -> JobRow:
        job = self.get(job_id)
        if job is None:
            raise LedgerError(f"unknown job {job_id}")
        return job

    def jobs(self, states: Iterable[Stage] | None = None) -> list[JobRow]:
        if states is None:
            return self._rows(JobRow, f"SELECT {_JOB_COLS} FROM jobs ORDER BY created_at, id")
        vals = [s.value for s in states]
        marks = ",".join("?" * len(vals))
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id",
            vals,
        )

    def active_jobs(self) -> list[JobRow]:
        """Every job that is not terminal (parked ones included)."""
        return self.jobs([s for s in Stage if s not in TERMINAL])

    def due_jobs(self, now: float) -> list[JobRow]:
        """Non-terminal jobs whose next attempt is due (parked ones too: their schedule is due)."""
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE state IN ({_ACTIVE_MARKS}) "
            "AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at, id",
            (*_ACTIVE, now),
        )

    def due_ids(self, now: float, *, idle_only: bool = False) -> list[tuple[str, str, str]]:
        """``(id, state, inbox)`` of the jobs :meth:`due_jobs` returns, in its order: what the
        scheduler reads on every tick, without building a row per active job. With
        ``idle_only`` the jobs marked busy (:meth:`set_busy`) are left out inside SQLite: in a
        burst a thousand jobs are due and nearly all of them already have a task."""
        idle = " AND id NOT IN (SELECT id FROM temp.busy)" if idle_only else ""
        with self._lock:
            cur = self._conn.execute(
                f"SELECT id, state, inbox FROM jobs WHERE state IN ({_ACTIVE_MARKS}) "
                f"AND next_attempt_at <= ?{idle} ORDER BY next_attempt_at, created_at, id",
                (*_ACTIVE, now),
            )
            # Text columns come back as str: the rows are the tuples wanted.
            return cast(list[tuple[str, str, str]], cur.fetchall())

    def set_busy(self, job_id: str, busy: bool) -> None:
        """Mark a job as advanced by a task of this process, or no longer. Kept in a temporary
        table of this connection: nothing on disk, gone with the process."""
        with self._lock:
            conn = self._conn
            if busy:
                sql = "INSERT OR IGNORE INTO temp.busy (id) VALUES (?)"
            else:
                sql = "DELETE FROM temp.busy WHERE id = ?"
            try:
                before = conn.total_changes
                # Autocommit: one statement on a temporary table, no transaction to open and
                # commit around it, nothing synced.
                conn.execute(sql, (job_id,))
            except sqlite3.ProgrammingError:
                return  # closed at shutdown, with the tasks still finishing: nothing to mark
            if self._mark[1] == before:  # a mark is no change to the rows cached
                self._mark = (self._mark[0], conn.total_changes)

    def get_many(self, job_ids: Sequence[str]) -> list[JobRow]:
        """The jobs with these ids (unknown ones left out), in the order given."""
        found: dict[str, JobRow] = {}
        ids = list(job_ids)
        for i in range(0, len(ids), 500):  # under SQLite's limit on bound parameters
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for job in self._rows(
                JobRow, f"SELECT {_JOB_COLS} FROM jobs WHERE id IN ({marks})", chunk
            ):
                found[job.id] = job
        return [found[j] for j in ids if j in found]

    def next_due_at(self) -> float | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT MIN(next_attempt_at) FROM jobs WHERE state IN ({_ACTIVE_MARKS})", _ACTIVE
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def find_by_identity(
        self, inbox: str, rel_path: str, size: int, mtime_ns: int
    ) -> JobRow | None:
        rows = self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE inbox = ? AND rel_path = ? AND size = ? "
            "AND mtime_ns = ? ORDER BY created_at DESC LIMIT 1",
            (inbox, rel_path, size, mtime_ns),
        )
        return rows[0] if rows else None

    def active_at_path(self, inbox: str, rel_path: str) -> JobRow | None:
        """The newest job for this source path that is not finished, if any."""
        rows = self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE inbox = ? AND rel_path = ? "
            f"AND state IN ({_ACTIVE_MARKS}) ORDER BY created_at DESC LIMIT 1",
            (inbox, rel_path, *_ACTIVE),
        )
        return rows[0] if rows else None

    def find_by_fingerprint(self, fingerprint: str, *, exclude: str | None = None) -> list[JobRow]:
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE fingerprint = ? AND id != ? "
            "ORDER BY created_at, id",
            (fingerprint, exclude or ""),
        )

    def fingerprint_range(self, low: str, high: str, *, size: int) -> list[JobRow]:
        """Jobs of ``size`` bytes whose fingerprint lies strictly between ``low`` and ``high`` (a
        range of the fingerprint index), oldest first."""
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE fingerprint > ? AND fingerprint < ? AND size = ? "
            "ORDER BY created_at, id",
            (low, high, size),
        )

    def outbox_dir_taken(self, outbox_dir: str, *, exclude: str | None = None) -> bool:
        """Whether a job (other than ``exclude``) has this outbox folder recorded as its own."""
        rows = self._select(
            "SELECT id FROM jobs WHERE outbox_dir = ? AND id != ? LIMIT 1",
            (outbox_dir, exclude or ""),
        )
        return bool(rows)

    def known_identities(self) -> dict[tuple[str, str], set[tuple[int, int]]]:
        """(inbox, rel_path) -> {(size, mtime_ns)} of every job: the scanner's fast filter."""
        out: dict[tuple[str, str], set[tuple[int, int]]] = {}
        with self._lock:
            for inbox, rel, size, mtime in self._conn.execute(
                "SELECT inbox, rel_path, size, mtime_ns FROM jobs"
            ):
                out.setdefault((inbox, rel), set()).add((int(size), int(mtime)))
        return out

    def transition(
        self,
        job_id: str,
        to: Stage,
        *,
        expect: Stage | None = None,
        actor: str = "daemon",
        kind: str = "transition",
        detail: Any = None,
        **updates: Any,
    ) -> JobRow:
        """Move a job to ``to`` (checked against the transition table) and apply ``updates``,
        in one transaction with its event. ``expect`` guards against a concurrent change."""
        now = self.clock.now()
        with self._write():
            job = self._job(job_id)
            if job is None:
                raise LedgerError(f"unknown job {job_id}")
            src = Stage(job.state)
            if expect is not None and src is not expect:
                raise LedgerError(f"job {job_id} is {src.value}, expected {expect.value}")
            if src is not to:
                check_transition(job_id, src, to)
            values = {**updates, "state": to.value, "updated_at": now}
            if to in TERMINAL:
                values.setdefault("finished_at", now)
                # A finished job's clips are not read again by the daemon: make room.
                self._clips.drop(job_id)
            after = self._update(job_id, values, job)
            self._event(job_id, kind, actor=actor, src=src.value, dst=to.value, detail=detail)
            obs = self.observer
            if obs is not None and src is not to and to in obs.stages:
                obs.job_moved(self._conn, after or cast(JobRow, self._job(job_id)), src, detail)
        return after or self.require(job_id)

    def update(self, job_id: str, **updates: Any) -> None:
        """Change fields that are not a transition (progress, step, error text)."""
        with self._write():
            self._update(
                job_id, {**updates, "updated_at": self.clock.now()}, self._jobs.get(job_id)
            )

    def _update(self, job_id: str, values: dict[str, Any], job: JobRow | None) -> JobRow | None:
        """Write ``values`` to the job; its row after, when ``job`` (its row before) is known
        and the values' stored forms are predicted (the cache keeps it), else None."""
        _known_fields(values, _JOB_FIELDS, "job")
        if self.on_change is not None:
            self.on_change(job_id)
        if "preset" in values and not isinstance(values["preset"], str):
            values["preset"] = json.dumps(values["preset"], sort_keys=True)
        for k, v in values.items():
            if isinstance(v, Stage):
                values[k] = v.value
        sets = ", ".join(f"{k} = ?" for k in values)
        self._conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values.values(), job_id))
        after = with_values(job, values, _JOB_KINDS) if job is not None else None
        if after is None or after.id != job_id:
            self._jobs.drop(job_id)
            return None
        self._jobs.put(job_id, after)
        return after

    def record_event(
        self, job_id: str, kind: str, detail: Any = None, *, actor: str = "daemon"
    ) -> None:
        with self._write():
            self._event(job_id, kind, actor=actor, detail=detail)

    def events(self, job_id: str | None = None) -> list[EventRow]:
        if job_id is None:
            return self._rows(EventRow, f"SELECT {_EVENT_COLS} FROM events ORDER BY id")
        return self._rows(
            EventRow, f"SELECT {_EVENT_COLS} FROM events WHERE job_id = ? ORDER BY id", (job_id,)
        )

    # ---- operator commands -----------------------------------------------------------------

    def retry(self, job_id: str, *, actor: str = "cli") -> JobRow:
        """Put a failed or parked job back in the queue at the stage it stopped at."""
        job = self.require(job_id)
        self.check_retryable(job)
        resume = Stage(job.resume_stage) if job.resume_stage else Stage.QUEUED
        if resume not in RESUMABLE:
            resume = Stage.QUEUED
        return self.transition(
            job_id,
            resume,
            actor=actor,
            kind="retry",
            attempts=0,
            next_attempt_at=0,
            error=None,
            error_code=None,
            park_reason=None,
            finished_at=None,
        )

    def check_retryable(self, job: JobRow) -> None:
        """LedgerError unless ``job`` is failed or parked."""
        _check_retryable(job)

    def forget(self, job_id: str, *, actor: str = "cli") -> None:
        """Drop a finished job so the same file can be taken again."""
        job = self.require(job_id)
        if job.stage not in TERMINAL:
            raise LedgerError(
                f"job {job_id} is {job.state}: only delivered or failed jobs can be forgotten"
            )
        with self._write():
            conn = self._conn
            conn.execute("DELETE FROM clips WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM exports WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            self._jobs.drop(job_id)
            self._clips.drop(job_id)
            detail = _forgotten_detail(job)
            self._event(job_id, "forgotten", actor=actor, src=job.state, detail=detail)

    def forgotten_since(self, after: int | None) -> tuple[int, list[tuple[str, str, int, int]]]:
        """Jobs forgotten after event ``after`` as (inbox, rel_path, size, mtime_ns), and the
        event id to ask after next time (``after`` None: only that id)."""
        with self._lock:
            if after is None:
                row = self._conn.execute("SELECT MAX(id) FROM events").fetchone()
                return int(row[0] or 0), []
            rows = self._conn.execute(
                "SELECT id, detail FROM events WHERE id > ? AND kind = 'forgotten' ORDER BY id",
                (after,),
            ).fetchall()
        return _forgotten_files(after, rows)

    # ---- clips and exports -----------------------------------------------------------------

    def put_clips(self, job_id: str, clips: Sequence[dict[str, Any]]) -> None:
        """Record the project's clips (insert or refresh; per-clip progress is kept)."""
        now = self.clock.now()
        with self._write():
            conn = self._conn
            existing = {
                r[0] for r in conn.execute("SELECT clip_id FROM clips WHERE job_id = ?", (job_id,))
            }
            for c in clips:
                row = {**c, "job_id": job_id, "updated_at": now}
                if c["clip_id"] in existing:
                    self._update_clip(job_id, c["clip_id"], row)
                else:
                    _known_fields(row, _CLIP_FIELDS, "clip")
                    self._insert("clips", row)
                    existing.add(c["clip_id"])
            self._clips.drop(job_id)  # read again, in rank order, when next asked

    def clips(self, job_id: str, *, selected_only: bool = False) -> list[ClipRow]:
        """The job's clips by rank (only those chosen for rendering with ``selected_only``)."""
        with self._lock:
            if not self._depth:  # inside a write the cache was checked under the write lock
                self._check_cache()
            rows = self._clips.get(job_id)
            if rows is None:
                rows = tuple(
                    self._rows(
                        ClipRow,
                        f"SELECT {_CLIP_COLS} FROM clips WHERE job_id = ? ORDER BY rank, clip_id",
                        (job_id,),
                    )
                )
                self._clips.put(job_id, rows)
        if selected_only:
            return [c for c in rows if c.selected == 1]
        return list(rows)

    def update_clip(self, job_id: str, clip_id: str, **updates: Any) -> None:
        with self._write():
            self._update_clip(job_id, clip_id, {**updates, "updated_at": self.clock.now()})

    def _update_clip(self, job_id: str, clip_id: str, values: dict[str, Any]) -> None:
        values = {k: v for k, v in values.items() if k not in ("job_id", "clip_id")}
        _known_fields(values, _CLIP_FIELDS, "clip")
        if self.on_change is not None:
            self.on_change(job_id)
        sets = ", ".join(f"{k} = ?" for k in values)
        self._conn.execute(
            f"UPDATE clips SET {sets} WHERE job_id = ? AND clip_id = ?",
            (*values.values(), job_id, clip_id),
        )
        rows = self._clips.get(job_id)
        if rows is None:
            self._clips.drop(job_id)  # nothing cached; noted, so a rollback drops nothing stale
            return
        updated: list[ClipRow] = []
        for c in rows:
            if c.clip_id == clip_id:
                after = with_values(c, values, _CLIP_KINDS)
                if after is None:
                    self._clips.drop(job_id)
                    return
                c = after
            updated.append(c)
        self._clips.put(job_id, tuple(updated))

    def put_export(self, job_id: str, clip_id: str, fmt: str, **values: Any) -> None:
        now = self.clock.now()
        with self._write():
            conn = self._conn
            existing = conn.execute(
                "SELECT 1 FROM exports WHERE job_id = ? AND clip_id = ? AND format = ?",
                (job_id, clip_id, fmt),
            ).fetchone()
            _known_fields(values, _EXPORT_FIELDS, "export")
            if existing:
                vals = {**values, "updated_at": now}
                sets = ", ".join(f"{k} = ?" for k in vals)
                conn.execute(
                    f"UPDATE exports SET {sets} WHERE job_id = ? AND clip_id = ? AND format = ?",
                    (*vals.values(), job_id, clip_id, fmt),
                )
            else:
                self._insert(
                    "exports",
                    {
                        "job_id": job_id,
                        "clip_id": clip_id,
                        "format": fmt,
                        "state": "pending",
                        **values,
                        "updated_at": now,
                    },
                )

    def exports(self, job_id: str) -> list[ExportRow]:
        return self._rows(
            ExportRow,
            f"SELECT {_EXPORT_COLS} FROM exports WHERE job_id = ? ORDER BY clip_id, format",
            (job_id,),
        )

    # ---- inboxes ---------------------------------------------------------------------------

    def set_inbox(
        self,
        path: str,
        *,
        paused: bool,
        reason: str | None,
        entries: int,
        last_scan_at: float | None,
    ) -> None:
        with self._write():
            if self.observer is not None:
                self.observer.inbox_changed(self._conn, path, paused, reason)
            self._conn.execute(
                "INSERT INTO inboxes (path, paused, reason, entries, last_scan_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET paused = excluded.paused, "
                "reason = excluded.reason, entries = excluded.entries, "
                "last_scan_at = excluded.last_scan_at",
                (path, int(paused), reason, entries, last_scan_at),
            )
        if self.on_change is not None:
            self.on_change("")

    def inboxes(self) -> list[InboxRow]:
        return self._rows(InboxRow, f"SELECT {_INBOX_COLS} FROM inboxes ORDER BY path")

    # ---- inbox entries that are not jobs ---------------------------------------------------

    def sync_entries(self, put: Iterable[EntryRow], drop: Iterable[tuple[str, str]]) -> None:
        """Write these entry rows (insert or replace) and delete those keyed ``(inbox,
        rel_path)``, in one transaction (the caller makes it a relaxed one)."""
        cols = _columns(EntryRow)
        marks = ", ".join("?" * len(cols))
        with self._write():
            conn = self._conn
            conn.executemany(
                "DELETE FROM inbox_entries WHERE inbox = ? AND rel_path = ?", list(drop)
            )
            conn.executemany(
                f"INSERT OR REPLACE INTO inbox_entries ({_ENTRY_COLS}) VALUES ({marks})",
                [tuple(getattr(r, c) for c in cols) for r in put],
            )

    def entries(self) -> list[EntryRow]:
        """Every inbox entry that is not a job, by inbox and path."""
        try:
            return self._rows(
                EntryRow, f"SELECT {_ENTRY_COLS} FROM inbox_entries ORDER BY inbox, rel_path"
            )
        except sqlite3.OperationalError:
            return []  # a ledger opened read-only before the daemon added the table

    # ---- daemon heartbeat ------------------------------------------------------------------

    def make_durable(self) -> None:
        """Make every relaxed commit so far durable, with one durable commit (it syncs the
        WAL, theirs included). A billed call asks for it: another job's task may have committed
        relaxed since this job's last durable write."""
        if not self._unsynced:
            return
        relaxed, self._relaxed = self._relaxed, 0
        try:
            with self._write():
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('durable_at', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(self.clock.now()),),
                )
        finally:
            self._relaxed = relaxed

    def heartbeat(self, pid: int) -> None:
        """Record that the daemon is alive (and prove the ledger is writable)."""
        with self._write():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (json.dumps({"at": self.clock.now(), "pid": pid}),),
            )

    def last_heartbeat(self) -> dict[str, Any] | None:
        rows = self._select("SELECT value FROM meta WHERE key = 'heartbeat'")
        if not rows:
            return None
        value = json.loads(rows[0]["value"])
        return value if isinstance(value, dict) else None

    def upload_totals(self) -> tuple[int, int]:
        """``(bytes sent, bytes in all)`` over the jobs in ``uploading`` (the status line's
        percentage), summed by SQLite: a burst queues hundreds of jobs there."""
        with self._lock:
            row = self._conn.execute(
                "SELECT COALESCE(SUM(bytes_uploaded), 0), COALESCE(SUM(size), 0) FROM jobs "
                "WHERE state = ?",
                (Stage.UPLOADING.value,),
            ).fetchone()
        return int(row[0]), int(row[1])

    def wait_counts(self, *, parked: bool = True) -> dict[str, int]:
        """Unfinished jobs that wait, by the cause of their wait (``"export rate limit"``);
        without the parked ones unless ``parked``."""
        states = _ACTIVE if parked else tuple(s for s in _ACTIVE if s != Stage.PARKED.value)
        with self._lock:
            # Read on every tick (systemd's STATUS=): counted again only after a write.
            version = (self._writes, int(self._conn.execute("PRAGMA data_version").fetchone()[0]))
            cached = self._wait_counts.get(parked)
            if cached is not None and cached[0] == version:
                return dict(cached[1])
            rows = self._conn.execute(
                f"SELECT wait, COUNT(*) FROM jobs WHERE state IN ({','.join('?' * len(states))}) "
                "AND wait IS NOT NULL GROUP BY wait",
                states,
            ).fetchall()
            out = _waits_by_cause(rows)
            self._wait_counts[parked] = (version, out)
        return dict(out)

    def counts_by_state(self) -> dict[str, int]:
        with self._lock:
            conn = self._conn
            version = (self._writes, int(conn.execute("PRAGMA data_version").fetchone()[0]))
            if self._counts is None or self._counts[0] != version:
                counts = {
                    str(s): int(n)
                    for s, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                }
                self._counts = (version, counts)
            return dict(self._counts[1])

"""The ledger of a daemon in a cluster: the shared PostgreSQL ledger, with claims, leases and
fencing, beside the host's own SQLite ledger for what only this host sees.

Jobs, clips, exports and events are the cluster's (PostgreSQL, :class:`PgLedger`). A node works
on a job only while it holds the job's lease:

* **Claim.** A settled file is inserted under its identity (inbox name, path in the inbox,
  size, mtime, fingerprint) with ``ON CONFLICT DO NOTHING``: of several nodes that see it, one
  inserts it and holds it from then on; the others are told :class:`TakenElsewhere`. A job whose
  lease lapsed (its node died, froze, or lost the database) is claimed by the next node whose
  scheduler finds it due: ``FOR UPDATE SKIP LOCKED``, so two nodes never claim one job.
* **Lease.** ``jobs.lease_until`` on the database's clock; :meth:`renew` pushes it out for every
  job this process holds in one statement, every ``lease_seconds / 3`` (watchd/cluster/lease.py).
* **Fencing.** Each claim draws a fresh token from the ``lease_tokens`` sequence. Every write of
  a job starts with ``watchd_fence(job, token)``, which aborts the transaction unless the job
  still carries this process's token: a node frozen past its lease writes nothing for the jobs
  another node took over, whatever it was doing when it froze (:class:`LeaseLost`).

The rows of the jobs this process holds are cached: no other node writes them while the lease
holds (an operator's ``watchd retry`` draws a new token, which the fence then refuses).

Host-local, in the SQLite ledger in ``state_dir``: inbox entries that are not jobs, the inboxes'
pause rows, this daemon's heartbeat, and the notification queue (fed from the job changes this
node makes, so that each event is sent by the one node that made it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Any

from watchd.cluster.errors import LeaseLost, TakenElsewhere
from watchd.ledger.db import (
    _CLIP_FIELDS,
    _JOB_COLS,
    _JOB_FIELDS,
    ClipRow,
    EntryRow,
    InboxRow,
    JobRow,
    Ledger,
    LedgerError,
    _known_fields,
    _waits_by_cause,
)
from watchd.ledger.pg import (
    ACTIVE_AT_PATH,
    BY_FINGERPRINT,
    BY_IDENTITY,
    FINGERPRINT_RANGE,
    PgLedger,
    _job_params,
    _sets,
    _value,
)
from watchd.ledger.rebuild import SHA_PREFIX
from watchd.ledger.states import TERMINAL, Stage
from watchd.status_view import pid_alive

log = logging.getLogger("watchd.cluster")
# The pool's own line for every failed reconnect (about one a second while the database is
# down) would bury the daemon's one line about the wait: only its errors are shown.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

# The channel of wake-ups between nodes (watchd/cluster/wakeup.py): a slot freed, a job let go.
CHANNEL = "watchd_jobs"
# One advisory lock per workspace serialises the grants of processing slots between nodes.
SLOTS_LOCK = 0x77_64_73_6C_6F_74
_ACTIVE = [s.value for s in Stage if s not in TERMINAL]
_ACTIVE_SET = frozenset(_ACTIVE)
# The tables only this host's SQLite ledger has (the notification queue, inbox entries).
_LOCAL_TABLES = re.compile(r"\b(notify_\w+|notifiers|inbox_entries)\b")
# Progress alone (a percentage, a step, bytes sent) is written at most this often per job: it
# is there to be shown, and every write is a round trip to the database. The cached row has it
# at once; the next write of the job that is not progress drops what was not written yet.
PROGRESS_EVERY = 5.0
_PROGRESS_FIELDS = frozenset({"progress", "step", "bytes_uploaded"})
# How long a ledger call waits for a connection: the daemon calls the ledger on its event loop,
# so while the database is away each call holds the loop (uploads, progress) this long at most
# before the daemon knows to wait (watchd/daemon.py backs off between tries).
DAEMON_CONNECT_TIMEOUT = 3.0
# At most this many jobs are claimed at one look (the others stay for the other nodes).
CLAIM_BATCH = 16


# The cluster's counts (status line, metrics, the processing slots' first look) are read at
# least this often; the due jobs of the other nodes' lapsed leases at least this often too.
POLL_SECONDS = 5.0


@dataclass
class Snapshot:
    """What one look at the cluster's jobs says, with our own changes since applied."""

    at: float  # monotonic time of the look
    counts: dict[str, int]
    uploading: tuple[int, int]  # bytes sent, bytes to send, of the uploading jobs
    waits: dict[str, dict[str, int]]  # state -> wait -> jobs
    lapse_in: float | None  # seconds from the look until another node's lease here lapses


class ClusterLedger(PgLedger):
    """The daemon's ledger with ``[cluster]``. ``local`` is this host's SQLite ledger;
    ``inboxes`` the names of the inboxes this node watches (it claims only their jobs)."""

    shared = True  # several hosts write this ledger

    def __init__(
        self,
        url: str,
        *,
        local: Ledger,
        node: str,
        lease_seconds: float,
        inboxes: Iterable[str],
        password: str | None = None,
        connect_timeout: float = DAEMON_CONNECT_TIMEOUT,
    ) -> None:
        super().__init__(url, clock=local.clock, password=password, connect_timeout=connect_timeout)
        self.local = local
        self.node = node
        self.lease_seconds = float(lease_seconds)
        self.instance = secrets.token_hex(8)
        self.host = socket.gethostname()
        self.inbox_names: list[str] = list(inboxes)
        # The inboxes this host cannot reach now (a share not mounted): their jobs are left to
        # the hosts that can (the daemon's own set, kept current by its inbox checks).
        self.paused: set[str] = set()
        self.held: dict[str, int] = {}  # job id -> the fencing token of our claim
        self._cache: dict[str, JobRow] = {}
        self._clips: dict[str, list[ClipRow]] = {}  # every clip of a held job, in rank order
        self._progress_at: dict[str, float] = {}  # job id -> monotonic time progress was written
        self._held_lock = threading.Lock()
        self._operator = 0
        # Monotonic time of the last renewal's start: the leases hold until at least then +
        # lease_seconds (the database set them from its own clock, after that moment).
        self.renewed_at = self.clock.monotonic()
        self.on_change: Callable[[str], None] | None = None
        self.on_lost: Callable[[str], None] = lambda job_id: None
        self._snapshot: Snapshot | None = None
        # Answers read ahead, with the query a caller always makes first (one round trip for
        # two): taken by the next call that asks exactly that, else dropped.
        self._ahead: dict[tuple[Any, ...], Any] = {}
        self._finished: dict[str, JobRow] = {}  # jobs finished here, until read once more
        self._look_now = True  # the next due_ids looks at the database (see due_ids)

    def look_again(self) -> None:
        """Another node changed what this one may do (a slot freed, jobs let go): the next
        :meth:`due_ids` reads the database. Safe from any thread."""
        self._look_now = True

    # ---- this node ---------------------------------------------------------------------------

    def register(self, version: str) -> None:
        """Record this node as live. Refused (LedgerError) when another live daemon on another
        host uses the same node name. The jobs a previous run of this node held (it died: we
        hold this host's state_dir lock) are let go, to be claimed again at once."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT host, pid, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8, "
                "stopped_at IS NULL AND heartbeat_at > now() - make_interval(secs => "
                "lease_seconds) FROM nodes WHERE name = %s FOR UPDATE",
                (self.node,),
            ).fetchone()
            if (
                row is not None
                and row[3]
                and (row[0] != self.host or (row[1] != os.getpid() and pid_alive(int(row[1]))))
            ):
                # Live elsewhere, or on this host in another process that runs (the same node
                # name under two state_dirs): not a previous run of this daemon.
                raise LedgerError(
                    f'node name "{self.node}" is in use by a live daemon on host {row[0]} '
                    f"(pid {row[1]}, last heartbeat {row[2]:.0f} s ago): give this host another "
                    "[cluster] node"
                )
            conn.execute(
                "INSERT INTO nodes (name, instance, host, pid, version, inboxes, lease_seconds, "
                "started_at, heartbeat_at, stopped_at) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, now(), now(), NULL) ON CONFLICT (name) DO UPDATE "
                "SET instance = EXCLUDED.instance, host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "version = EXCLUDED.version, inboxes = EXCLUDED.inboxes, "
                "lease_seconds = EXCLUDED.lease_seconds, started_at = now(), "
                "heartbeat_at = now(), stopped_at = NULL",
                (
                    self.node,
                    self.instance,
                    self.host,
                    os.getpid(),
                    version,
                    json.dumps(sorted(self.inbox_names)),
                    self.lease_seconds,
                ),
            )
            released = len(
                conn.execute(
                    "UPDATE jobs SET lease_until = NULL WHERE node = %s "
                    "AND lease_until IS NOT NULL AND state = ANY(%s) RETURNING id",
                    (self.node, _ACTIVE),
                ).fetchall()
            )
        if released:
            log.info("took back %d job(s) this node held before it stopped", released)

    def adopt_paths(self, paths: dict[str, str]) -> None:
        """Jobs recorded under one of this host's inbox paths (``path -> name``) go by the
        inbox's name from now on: a ledger copied by ``watchd ledger migrate`` from a config
        without ``[cluster]`` names inboxes by path. A file another host has taken meanwhile
        under the name keeps that job."""
        adopted = 0
        with self._write() as conn:
            for path, name in paths.items():
                cur = conn.execute(
                    "UPDATE jobs AS j SET inbox = %s WHERE j.inbox = %s AND NOT ("
                    "j.state = ANY(%s) AND EXISTS (SELECT 1 FROM jobs AS k WHERE k.inbox = %s "
                    "AND k.rel_path = j.rel_path AND k.size = j.size AND k.mtime_ns = j.mtime_ns "
                    "AND k.fingerprint = j.fingerprint AND k.state = ANY(%s))) RETURNING j.id",
                    (name, path, _ACTIVE, name, _ACTIVE),
                )
                adopted += len(cur.fetchall())
        if adopted:
            log.info(
                "%d job(s) recorded under this host's inbox paths now go by the inboxes' names",
                adopted,
            )

    def renew(self) -> list[str]:
        """Push out the leases of every job this process holds and this node's heartbeat, in
        one transaction; returns the jobs lost (another node took them over: the database no
        longer carries our token). Raises DatabaseUnavailable."""
        started = self.clock.monotonic()
        with self._held_lock:
            tokens = dict(self.held)
        with self._write() as conn:
            conn.execute(
                "UPDATE nodes SET heartbeat_at = now(), stopped_at = NULL WHERE name = %s",
                (self.node,),
            )
            cur = conn.execute(
                "UPDATE jobs SET lease_until = now() + make_interval(secs => %s) "
                "WHERE id = ANY(%s) AND lease_token = ANY(%s) RETURNING id, lease_token",
                (self.lease_seconds, list(tokens), list(tokens.values())),
            )
            kept = {(r[0], int(r[1])) for r in cur.fetchall()}
        self.renewed_at = started
        lost = [j for j, t in tokens.items() if (j, t) not in kept]
        for job_id in lost:
            self._forget_claim(job_id, tokens[job_id])
        return lost

    def lease_left(self) -> float:
        """Seconds the leases of this process are sure to hold (by this host's monotonic
        clock: a process frozen for longer finds this negative when it wakes)."""
        return self.renewed_at + self.lease_seconds - self.clock.monotonic()

    def stop(self) -> None:
        """A clean stop: let every held job go (any node may claim it at once), say so."""
        with self._held_lock:
            tokens = dict(self.held)
            self.held.clear()
            self._cache.clear()
            self._clips.clear()
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET lease_until = NULL WHERE id = ANY(%s) AND lease_token = ANY(%s)",
                (list(tokens), list(tokens.values())),
            )
            conn.execute(
                "UPDATE nodes SET stopped_at = now() WHERE name = %s AND instance = %s",
                (self.node, self.instance),
            )

    def holds(self, job_id: str) -> bool:
        return job_id in self.held

    def _take(self, job: JobRow, token: int) -> None:
        with self._held_lock:
            self.held[job.id] = token
            self._cache[job.id] = job

    def _forget_claim(self, job_id: str, token: int | None = None) -> None:
        with self._held_lock:
            if token is None or self.held.get(job_id) == token:
                self.held.pop(job_id, None)
            self._drop(job_id)
        self.on_lost(job_id)

    def _drop(self, job_id: str) -> None:
        self._cache.pop(job_id, None)
        self._clips.pop(job_id, None)
        self._progress_at.pop(job_id, None)

    # ---- fencing -----------------------------------------------------------------------------

    def _fence_token(self, job_id: str) -> int | None:
        if self._operator:
            return None
        token = self.held.get(job_id)
        if token is None:
            raise LeaseLost(f"job {job_id} is not held by node {self.node}")
        return token

    @contextmanager
    def _fenced(self, job_id: str) -> Iterator[None]:
        """Translate a refused fence into this process letting the job go."""
        try:
            yield
        except LeaseLost:
            self._forget_claim(job_id)
            raise

    @contextmanager
    def _as_operator(self) -> Iterator[None]:
        self._operator += 1
        try:
            yield
        finally:
            self._operator -= 1

    # ---- jobs --------------------------------------------------------------------------------

    def _record_new(self, job: dict[str, Any], *, actor: str) -> JobRow:
        """A settled file recorded as a job this node holds, unless another node recorded the
        same file first (then :class:`TakenElsewhere`)."""
        row = self._insert_job(job, actor=actor, lease=(self.node, self.lease_seconds))
        if row is None:
            other = self._one(
                "SELECT id, node FROM jobs WHERE inbox = %s AND rel_path = %s AND size = %s "
                "AND mtime_ns = %s AND fingerprint = %s AND state = ANY(%s)",
                (
                    job["inbox"],
                    job["rel_path"],
                    job["size"],
                    job["mtime_ns"],
                    job["fingerprint"],
                    _ACTIVE,
                ),
            )
            who = f"job {other[0]} of node {other[1]}" if other else "another node"
            raise TakenElsewhere(f"{job['rel_path']} was taken by {who}")
        new = JobRow(*row[1:])
        self._take(new, int(row[0]))
        self._observe_added(new)
        return new

    def get(self, job_id: str) -> JobRow | None:
        cached = self._cache.get(job_id)
        if cached is not None and job_id in self.held:
            return cached
        if (done := self._finished.pop(job_id, None)) is not None:
            return done  # the job's task looks once more after its last transition
        job = super().get(job_id)
        if job is not None and job_id in self.held:
            self._cache[job_id] = job
        return job

    def find_by_identity(
        self, inbox: str, rel_path: str, size: int, mtime_ns: int
    ) -> JobRow | None:
        """With :meth:`active_at_path` of the same file read ahead (a settled file that is not
        known is asked both, in this order)."""
        with self._connection() as conn, conn.pipeline():
            known = conn.execute(BY_IDENTITY, (inbox, rel_path, size, mtime_ns))
            active = conn.execute(ACTIVE_AT_PATH, (inbox, rel_path, _ACTIVE))
            row = known.fetchone()
            other = active.fetchone()
        self._ahead = {("active_at_path", inbox, rel_path): JobRow(*other) if other else None}
        return JobRow(*row) if row else None

    def active_at_path(self, inbox: str, rel_path: str) -> JobRow | None:
        key = ("active_at_path", inbox, rel_path)
        if key in self._ahead:
            found: JobRow | None = self._ahead.pop(key)
            return found
        return super().active_at_path(inbox, rel_path)

    def find_by_fingerprint(self, fingerprint: str, *, exclude: str | None = None) -> list[JobRow]:
        """With the jobs read back from manifests of the same size read ahead (a new job asks
        both, in this order: watchd/pipeline/ingest.py)."""
        size_row = self._cache.get(exclude or "")
        if size_row is None:
            return super().find_by_fingerprint(fingerprint, exclude=exclude)
        low, high = SHA_PREFIX, SHA_PREFIX[:-1] + chr(ord(SHA_PREFIX[-1]) + 1)
        with self._connection() as conn, conn.pipeline():
            same = conn.execute(BY_FINGERPRINT, (fingerprint, exclude or ""))
            rebuilt = conn.execute(FINGERPRINT_RANGE, (low, high, size_row.size))
            found = [JobRow(*r) for r in same.fetchall()]
            ahead = [JobRow(*r) for r in rebuilt.fetchall()]
        self._ahead = {("fingerprint_range", low, high, size_row.size): ahead}
        return found

    def fingerprint_range(self, low: str, high: str, *, size: int) -> list[JobRow]:
        key = ("fingerprint_range", low, high, size)
        if key in self._ahead:
            found: list[JobRow] = self._ahead.pop(key)
            return found
        return super().fingerprint_range(low, high, size=size)

    def due_ids(self, now: float, *, idle_only: bool = False) -> list[tuple[str, str, str]]:
        """The due jobs of this node's inboxes that it holds, after claiming (at most
        :data:`CLAIM_BATCH` at a time) those whose lease is free or lapsed.

        Called every tick of the main loop: it reads the database only when something may have
        changed that this node does not know of (a wake-up from another node, a lease of
        another node lapsing, every :data:`POLL_SECONDS` anyway); else the jobs it holds, whose
        rows it keeps, say what is due."""
        if not self._due_to_look():
            busy = self._busy if idle_only else set()
            held = [self._cache.get(j) for j in list(self.held)]
            due = sorted(
                (j for j in held if j is not None and j.next_attempt_at <= now),
                key=lambda j: (j.next_attempt_at, j.created_at, j.id),
            )
            return [
                (j.id, j.state, j.inbox)
                for j in due
                if j.state in _ACTIVE_SET and j.id not in busy and j.inbox not in self.paused
            ]
        self._look_now = False
        started = self.clock.monotonic()
        with self._connection() as conn, conn.pipeline():
            due_cur = conn.execute(
                "SELECT id, state, inbox, lease_token, node = %s AND lease_until > now(), "
                "lease_until IS NULL OR lease_until <= now() FROM jobs "
                "WHERE state = ANY(%s) AND inbox = ANY(%s) AND next_attempt_at <= %s "
                "ORDER BY next_attempt_at, created_at, id",
                (self.node, _ACTIVE, self.inbox_names, now),
            )
            counts_cur = conn.execute(
                "SELECT state, COUNT(*), COALESCE(SUM(bytes_uploaded), 0), "
                "COALESCE(SUM(size), 0) FROM jobs GROUP BY state"
            )
            waits_cur = conn.execute(
                "SELECT state, wait, COUNT(*) FROM jobs WHERE state = ANY(%s) "
                "AND wait IS NOT NULL GROUP BY state, wait",
                (_ACTIVE,),
            )
            lapse_cur = conn.execute(
                "SELECT EXTRACT(EPOCH FROM MIN(lease_until) - now())::float8 FROM jobs "
                "WHERE state = ANY(%s) AND inbox = ANY(%s) AND node <> %s "
                "AND lease_until > now()",
                (_ACTIVE, self.inbox_names, self.node),
            )
            rows = due_cur.fetchall()
            by_state = counts_cur.fetchall()
            counts = {str(s): int(n) for s, n, _, _ in by_state}
            up = next(
                ((int(b), int(t)) for s, _, b, t in by_state if s == Stage.UPLOADING.value), (0, 0)
            )
            waits: dict[str, dict[str, int]] = {}
            for state, wait, n in waits_cur.fetchall():
                waits.setdefault(str(state), {})[str(wait)] = int(n)
            lapse = lapse_cur.fetchone()
        self._snapshot = Snapshot(
            started, counts, up, waits, float(lapse[0]) if lapse and lapse[0] is not None else None
        )
        # Held here, but with another token now: another node claimed it (this one's lease
        # lapsed) or an operator retried it. Not ours: no task for it (the fence would refuse
        # its writes), and free again after a retry.
        for r in rows:
            token = self.held.get(r[0])
            if token is not None and r[3] != token:
                log.info("no longer held by node %s", self.node, extra={"job_id": r[0]})
                self._forget_claim(r[0], token)
        paused = self.paused
        free = [r[0] for r in rows if r[5] and r[0] not in self.held and r[2] not in paused]
        if free:
            self.claim(free[:CLAIM_BATCH])
        # Held jobs of an inbox this host cannot reach: to the hosts that can.
        let_go = [
            r[0] for r in rows if r[2] in paused and r[0] in self.held and r[0] not in self._busy
        ]
        if let_go:
            self.release(let_go)
        busy = self._busy if idle_only else set()
        return [(r[0], r[1], r[2]) for r in rows if r[0] in self.held and r[0] not in busy]

    def _due_to_look(self) -> bool:
        snap = self._snapshot
        if self._look_now or snap is None:
            return True
        age = self.clock.monotonic() - snap.at
        return age >= POLL_SECONDS or (snap.lapse_in is not None and age >= snap.lapse_in)

    def _fresh_snapshot(self) -> Snapshot | None:
        """The last look, unless stale or inside a transaction (where reads must be exact:
        the grants of processing slots count them under their lock)."""
        snap = self._snapshot
        if snap is None or getattr(self._local, "conn", None) is not None:
            return None
        if self.clock.monotonic() - snap.at >= POLL_SECONDS:
            return None
        return snap

    def counts_by_state(self) -> dict[str, int]:
        snap = self._fresh_snapshot()
        if snap is not None:
            return dict(snap.counts)
        counts = super().counts_by_state()
        if self._snapshot is not None:
            self._snapshot.counts = dict(counts)  # exact now: the next ticks need not look
        return counts

    def get_many(self, job_ids: Sequence[str]) -> list[JobRow]:
        cached = [self._cache.get(j) if j in self.held else None for j in job_ids]
        if all(j is not None for j in cached):
            return [j for j in cached if j is not None]
        return super().get_many(job_ids)

    def upload_totals(self) -> tuple[int, int]:
        snap = self._fresh_snapshot()
        return snap.uploading if snap is not None else super().upload_totals()

    def wait_counts(self, *, parked: bool = True) -> dict[str, int]:
        snap = self._fresh_snapshot()
        if snap is None:
            return super().wait_counts(parked=parked)
        return _waits_by_cause(
            item
            for state, waits in snap.waits.items()
            if parked or state != Stage.PARKED.value
            for item in waits.items()
        )

    def next_due_at(self) -> float | None:
        """The earliest retry time of the jobs this node holds (the others' are theirs)."""
        times = [j.next_attempt_at for j in list(self._cache.values()) if j.state in _ACTIVE_SET]
        return min(times) if times else None

    def _counted(self, src: str | None, job: JobRow) -> None:
        """Our own change, applied to the last look (the others' come with the next one)."""
        snap = self._snapshot
        if snap is None or src == job.state:
            return
        if src is not None:
            snap.counts[src] = max(0, snap.counts.get(src, 0) - 1)
        snap.counts[job.state] = snap.counts.get(job.state, 0) + 1

    def release(self, job_ids: Sequence[str]) -> None:
        """Let these held jobs go now (any node may claim them at once)."""
        with self._held_lock:
            tokens = {j: self.held.pop(j) for j in job_ids if j in self.held}
            for j in tokens:
                self._drop(j)
        if not tokens:
            return
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET lease_until = NULL WHERE id = ANY(%s) AND lease_token = ANY(%s)",
                (list(tokens), list(tokens.values())),
            )
        log.info("let %d job(s) go to the other nodes: %s", len(tokens), ", ".join(tokens))

    def claim(self, job_ids: Sequence[str]) -> list[JobRow]:
        """Claim those of ``job_ids`` whose lease is free or lapsed and that no other node is
        claiming this instant (SKIP LOCKED): a new token each, the lease from now."""
        row_cols = ", ".join(f"jobs.{c}" for c in _JOB_COLS.split(", "))
        with self._connection() as conn:
            rows = conn.execute(
                "WITH free AS (SELECT id FROM jobs WHERE id = ANY(%s) AND state = ANY(%s) "
                "AND (lease_until IS NULL OR lease_until <= now()) "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE jobs SET node = %s, lease_token = nextval('lease_tokens'), "
                "lease_until = now() + make_interval(secs => %s) FROM free "
                f"WHERE jobs.id = free.id RETURNING jobs.lease_token, {row_cols}",
                (list(job_ids), _ACTIVE, self.node, self.lease_seconds),
            ).fetchall()
        claimed = []
        for r in rows:
            job = JobRow(*r[1:])
            self._take(job, int(r[0]))
            claimed.append(job)
            log.info(
                "claimed by node %s, carried on from %s",
                self.node,
                job.state,
                extra={"job_id": job.id, "state": job.state, "source_path": job.path},
            )
        return claimed

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
        # A finished job is let go with its last write: a `watchd retry` later makes it
        # claimable at once.
        finished = to in TERMINAL and not self._operator
        if finished:
            updates["lease_until"] = None
        with self._fenced(job_id):
            job = super().transition(
                job_id, to, expect=expect, actor=actor, kind=kind, detail=detail, **updates
            )
        if finished:
            self._after_commit(lambda: self._finished_here(job))
        else:
            self._keep(job)
        return job

    def _keep(self, job: JobRow) -> None:
        """The row a write of a held job returned, for the next :meth:`get`. Written inside a
        transaction not committed yet (a batch, the grants of slots), it may still roll back:
        it is kept only once the transaction commits (see :meth:`_transaction`)."""
        pending: list[Callable[[], None]] | None = getattr(self._local, "pending", None)
        with self._held_lock:
            if pending is not None:
                self._cache.pop(job.id, None)
                pending.append(lambda: self._keep(job))
            elif job.id in self.held:
                self._cache[job.id] = job

    def _after_commit(self, action: Callable[[], None]) -> None:
        """``action`` now, or once the transaction this thread is in commits (never if it
        rolls back)."""
        pending: list[Callable[[], None]] | None = getattr(self._local, "pending", None)
        if pending is None:
            action()
        else:
            pending.append(action)

    @contextmanager
    def _transaction(self, conn: Any, *, pipelined: bool) -> Iterator[None]:
        outer = getattr(self._local, "pending", None)
        pending: list[Callable[[], None]] = []
        self._local.pending = pending
        try:
            with super()._transaction(conn, pipelined=pipelined):
                yield
        finally:
            self._local.pending = outer
        # Committed: the rows its writes returned are true now, and what it did may be told.
        for action in pending:
            action()

    def _finished_here(self, job: JobRow) -> None:
        self._forget_claim_quietly(job.id)
        if len(self._finished) > 256:
            self._finished.clear()
        self._finished[job.id] = job

    def _forget_claim_quietly(self, job_id: str) -> None:
        with self._held_lock:
            self.held.pop(job_id, None)
            self._drop(job_id)

    def update(self, job_id: str, **updates: Any) -> None:
        """Fenced, and the new row kept for the next :meth:`get` (one round trip). Progress
        alone, written relaxed, goes to the database at most every :data:`PROGRESS_EVERY`."""
        values = {**updates, "updated_at": self.clock.now()}
        _known_fields(values, _JOB_FIELDS, "job")
        if self._progress_only(job_id, updates):
            cached = self._cache[job_id]
            self._cache[job_id] = replace(cached, **{k: _value(v) for k, v in values.items()})
            self._changed(job_id)
            return
        with self._fenced(job_id):
            row = self._write_one(
                f"UPDATE jobs SET {_sets(values)} WHERE id = %s RETURNING {_JOB_COLS}",
                [*_job_params(values), job_id],
                job=job_id,
            )
        if row is None:
            raise LedgerError(f"unknown job {job_id}")
        self._keep(JobRow(*row))
        self._changed(job_id)

    def _progress_only(self, job_id: str, updates: dict[str, Any]) -> bool:
        """Whether this write is progress alone that may wait (see :data:`PROGRESS_EVERY`);
        if not, it is written now and the clock of progress writes restarts."""
        now = self.clock.monotonic()
        if (
            self._relaxed > 0
            and updates
            and updates.keys() <= _PROGRESS_FIELDS | {"job_id", "clip_id"}
            and job_id in self.held
            and job_id in self._cache
            and now - self._progress_at.get(job_id, -PROGRESS_EVERY) < PROGRESS_EVERY
        ):
            return True
        self._progress_at[job_id] = now
        return False

    def put_clips(self, job_id: str, clips: Sequence[dict[str, Any]]) -> None:
        with self._fenced(job_id):
            super().put_clips(job_id, clips)
        self._clips.pop(job_id, None)  # read again (once) at the next clips()
        self._changed(job_id)

    def update_clip(self, job_id: str, clip_id: str, **updates: Any) -> None:
        values = {k: v for k, v in updates.items() if k not in ("job_id", "clip_id")}
        values["updated_at"] = self.clock.now()
        _known_fields(values, _CLIP_FIELDS, "clip")
        if not self._progress_only(job_id, updates):
            with self._fenced(job_id):
                super().update_clip(job_id, clip_id, **updates)
        cached = self._clips.get(job_id)
        if cached is not None:
            new = {k: _value(v) for k, v in values.items()}
            self._clips[job_id] = [replace(c, **new) if c.clip_id == clip_id else c for c in cached]
        self._changed(job_id)

    def clips(self, job_id: str, *, selected_only: bool = False) -> list[ClipRow]:
        """A held job's clips come from this node's copy (no other node writes them)."""
        if job_id not in self.held:
            return super().clips(job_id, selected_only=selected_only)
        cached = self._clips.get(job_id)
        if cached is None:
            cached = self._clips[job_id] = super().clips(job_id)
        return [c for c in cached if c.selected] if selected_only else list(cached)

    def put_export(self, job_id: str, clip_id: str, fmt: str, **values: Any) -> None:
        with self._fenced(job_id):
            super().put_export(job_id, clip_id, fmt, **values)
        self._changed(job_id)

    def retry(self, job_id: str, *, actor: str = "cli") -> JobRow:
        with self._as_operator():
            job = super().retry(job_id, actor=actor)
        self._forget_claim_quietly(job_id)
        self._changed(job_id)
        return job

    def forget(self, job_id: str, *, actor: str = "cli") -> None:
        with self._as_operator():
            super().forget(job_id, actor=actor)
        self._forget_claim_quietly(job_id)
        self._changed(job_id)

    # ---- processing slots shared by the nodes ------------------------------------------------

    @contextmanager
    def granting(self) -> Iterator[bool]:
        """The grants of processing slots made inside are serialised with every other node's:
        the count of slots in use read inside is the cluster's, and stays true until the
        grants are committed. Yields True: the ledger is shared."""
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SLOTS_LOCK,))
            yield True

    # ---- hooks ---------------------------------------------------------------------------------

    def _moved(self, job: JobRow, src: Stage, detail: Any) -> None:
        self._after_commit(lambda: self._told(job, src, detail))

    def _told(self, job: JobRow, src: Stage, detail: Any) -> None:
        self._counted(src.value, job)
        obs = self.local.observer
        if obs is not None and job.stage in obs.stages:
            try:
                with self.local.transaction() as conn:
                    obs.job_moved(conn, job, src, detail)
            except Exception:  # a notification must never undo a committed transition
                log.exception("job %s: recording its notification failed", job.id)
        self._changed(job.id)

    def _observe_added(self, job: JobRow) -> None:
        self._counted(None, job)
        obs = self.local.observer
        if obs is not None:
            try:
                with self.local.transaction() as conn:
                    obs.job_added(conn, job)
            except Exception:
                log.exception("job %s: recording its notification failed", job.id)
        self._changed(job.id)

    def _changed(self, job_id: str) -> None:
        if self.on_change is not None:
            self.on_change(job_id)

    # ---- this host's own ledger ----------------------------------------------------------------

    def set_inbox(
        self,
        path: str,
        *,
        paused: bool,
        reason: str | None,
        entries: int,
        last_scan_at: float | None,
    ) -> None:
        self.local.set_inbox(
            path, paused=paused, reason=reason, entries=entries, last_scan_at=last_scan_at
        )

    def inboxes(self) -> list[InboxRow]:
        return self.local.inboxes()

    def sync_entries(self, put: Iterable[EntryRow], drop: Iterable[tuple[str, str]]) -> None:
        self.local.sync_entries(put, drop)

    def entries(self) -> list[EntryRow]:
        return self.local.entries()

    def heartbeat(self, pid: int) -> None:
        self.local.heartbeat(pid)

    def last_heartbeat(self) -> dict[str, Any] | None:
        return self.local.last_heartbeat()

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # type: ignore[override]
        return self.local.transaction()

    @property
    def in_transaction(self) -> bool:
        return self.local.in_transaction

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL written for SQLite (the dashboard's): the notification tables and
        PRAGMAs are this host's; the rest is the cluster's, with ``?`` marks as ``%s``."""
        if sql.strip().lower() == "pragma data_version":
            # Whether anything changed, for an open dashboard: this host's ledger, and the jobs
            # of every node (another node's progress shows on this host's pages too).
            local = self.local.query(sql, params)[0][0]
            row = self._one("SELECT MAX(updated_at), COUNT(*) FROM jobs")
            return [(f"{local}:{row[0] if row else None}:{row[1] if row else 0}",)]
        if _LOCAL_TABLES.search(sql) or sql.lstrip().upper().startswith("PRAGMA"):
            return self.local.query(sql, params)
        with self._connection() as conn:
            marked = sql.replace("%", "%%").replace("?", "%s")
            return [tuple(r) for r in conn.execute(marked, list(params))]

    def close(self) -> None:
        super().close()

"""The ledger in PostgreSQL: the same jobs, clips, exports and events as the SQLite ledger, in a
database several hosts can share (docs/cluster.md).

It implements :class:`watchd.ledger.protocol.LedgerAPI` and returns the SQLite ledger's rows.
Synchronous psycopg 3 with a small connection pool, like the SQLite ledger: the pipeline calls
the ledger on the event-loop thread between awaits, and each call is one short transaction
costing about one round trip to a database on the local network, so an async driver would
change every caller for no gain yet. The pool gives the CLI and any helper thread their own
connection, and replaces a connection the server dropped.

One round trip per call (measured through a proxy that delays every packet): writes are sent
in pipeline mode with BEGIN and COMMIT (see :meth:`PgLedger._transaction`); a transition is one
statement that locks the row, checks the move against the stage table in SQL, updates it and
appends its event; a new job and its event are one statement too.

Inside a write transaction (and :meth:`batch`) the thread keeps one connection, so reads there
see the transaction's own writes. No rows are cached: other hosts write the same rows.

Migrations are numbered and applied at open in one transaction that first takes a
transaction-level advisory lock: hosts starting together apply each migration once, the others
wait and then find the schema current. A database whose schema is newer than this program
knows is refused (an older watchd must not write rows it does not understand).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from sqlite_utils.db import jsonify_if_needed

from watchd.clock import Clock, SystemClock
from watchd.cluster.errors import DatabaseUnavailable, LeaseLost
from watchd.ledger.db import (
    _CLIP_COLS,
    _CLIP_FIELDS,
    _EVENT_COLS,
    _EXPORT_COLS,
    _EXPORT_FIELDS,
    _INBOX_COLS,
    _JOB_COLS,
    _JOB_FIELDS,
    ClipRow,
    EventRow,
    ExportRow,
    InboxRow,
    JobRow,
    LedgerError,
    _check_retryable,
    _columns,
    _forgotten_detail,
    _forgotten_files,
    _known_fields,
    _waits_by_cause,
    new_job_id,
)
from watchd.ledger.dsn import redact_dsn
from watchd.ledger.states import ALLOWED, RESUMABLE, TERMINAL, Stage, check_transition
from watchd.redact import redact

# The advisory lock key of schema migrations: "watchd" in ASCII, one key for every host.
MIGRATION_LOCK = 0x77_61_74_63_68_64
# The SQLSTATE watchd_fence() raises when a job's lease was taken over (class "WD": ours).
LEASE_LOST_STATE = "WD001"
# Held by `forget` (exclusive) and by `forgotten_since(None)` (shared): see forgotten_since.
FORGET_LOCK = 0x77_61_74_63_68_64_66
CONNECT_TIMEOUT = 10.0

# Numbered, append-only, each a list of statements run in the migration transaction. The
# tables are the SQLite ledger's (db.py), with PostgreSQL's types: 64-bit integers for sizes,
# nanoseconds and inode numbers, double precision for times.
PG_MIGRATIONS: Sequence[Sequence[str]] = (
    (
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            inbox TEXT NOT NULL,
            rel_path TEXT NOT NULL,
            path TEXT NOT NULL,
            rule TEXT NOT NULL,
            preset TEXT NOT NULL,
            state TEXT NOT NULL,
            resume_stage TEXT,
            park_reason TEXT,
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            inode BIGINT NOT NULL,
            dev BIGINT NOT NULL,
            fingerprint TEXT NOT NULL,
            sha256 TEXT,
            marker TEXT NOT NULL UNIQUE,
            project_id TEXT,
            object_key TEXT,
            upload_url TEXT,
            content_type TEXT,
            duration DOUBLE PRECISION,
            progress DOUBLE PRECISION NOT NULL DEFAULT 0,
            step TEXT,
            bytes_uploaded BIGINT NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
            error_code TEXT,
            error TEXT,
            duplicate_of TEXT,
            outbox_dir TEXT,
            disposed_to TEXT,
            created_at DOUBLE PRECISION NOT NULL,
            updated_at DOUBLE PRECISION NOT NULL,
            finished_at DOUBLE PRECISION
        )""",
        "CREATE INDEX jobs_identity ON jobs (inbox, rel_path, size, mtime_ns)",
        "CREATE INDEX jobs_fingerprint ON jobs (fingerprint)",
        "CREATE INDEX jobs_state ON jobs (state, next_attempt_at)",
        """CREATE TABLE clips (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            clip_id TEXT NOT NULL,
            rank INTEGER NOT NULL,
            title TEXT NOT NULL,
            start_time DOUBLE PRECISION NOT NULL,
            end_time DOUBLE PRECISION NOT NULL,
            virality_score DOUBLE PRECISION NOT NULL,
            reasoning TEXT NOT NULL DEFAULT '',
            thumbnail_url TEXT,
            selected INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'pending',
            render_attempts INTEGER NOT NULL DEFAULT 0,
            progress DOUBLE PRECISION NOT NULL DEFAULT 0,
            words TEXT,
            file TEXT,
            captions TEXT,
            thumbnail TEXT,
            sha256 TEXT,
            size BIGINT,
            error TEXT,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (job_id, clip_id)
        )""",
        """CREATE TABLE exports (
            job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            clip_id TEXT NOT NULL,
            format TEXT NOT NULL,
            export_id TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            path TEXT,
            reason TEXT,
            updated_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (job_id, clip_id, format)
        )""",
        """CREATE TABLE events (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            job_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            actor TEXT NOT NULL,
            kind TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT,
            detail TEXT
        )""",
        "CREATE INDEX events_job ON events (job_id, id)",
        """CREATE TABLE inboxes (
            path TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            entries INTEGER NOT NULL DEFAULT 0,
            last_scan_at DOUBLE PRECISION
        )""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
    (
        # A job's wait kept apart from its error (db.py's _m_truth_waits).
        "ALTER TABLE jobs ADD COLUMN wait TEXT",
        "ALTER TABLE jobs ADD COLUMN wait_until DOUBLE PRECISION",
        "ALTER TABLE jobs ADD COLUMN wait_since DOUBLE PRECISION",
        # The dashboard's newest-first pages (db.py's _m_web_jobs_by_age).
        "CREATE INDEX jobs_created ON jobs (created_at, id)",
    ),
    (
        # Several hosts (docs/cluster.md). A job is worked on by the node holding its lease:
        # ``node`` names it, ``lease_until`` (the database's clock) is when it lapses unless
        # renewed, ``lease_token`` is the fencing token, a fresh value of ``lease_tokens`` at
        # each claim, which every write of the job checks.
        "ALTER TABLE jobs ADD COLUMN node TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_token BIGINT",
        "ALTER TABLE jobs ADD COLUMN lease_until TIMESTAMPTZ",
        "CREATE SEQUENCE lease_tokens",
        "CREATE INDEX jobs_node ON jobs (node) WHERE node IS NOT NULL",
        # A file is taken once between the hosts: one active job per identity.
        "CREATE UNIQUE INDEX jobs_claim ON jobs (inbox, rel_path, size, mtime_ns, fingerprint) "
        "WHERE state <> 'delivered' AND state <> 'failed'",
        # The daemons of the cluster: one row per node name, renewed every lease/3.
        """CREATE TABLE nodes (
            name TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            version TEXT NOT NULL,
            inboxes TEXT NOT NULL DEFAULT '[]',
            lease_seconds DOUBLE PRECISION NOT NULL,
            started_at TIMESTAMPTZ NOT NULL,
            heartbeat_at TIMESTAMPTZ NOT NULL,
            stopped_at TIMESTAMPTZ
        )""",
        # The fence: the first statement of every write a node makes for a job it holds. It
        # aborts the transaction (SQLSTATE WD001) unless the job still carries the token of
        # that node's claim, so a node whose lease another node has taken over writes nothing.
        f"""CREATE FUNCTION watchd_fence(job TEXT, token BIGINT) RETURNS void
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM 1 FROM jobs WHERE id = job AND lease_token = token FOR NO KEY UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'the lease of job % was taken over', job
                    USING ERRCODE = '{LEASE_LOST_STATE}';
            END IF;
        END $$""",
        # Wake-ups for the other nodes (watchd/cluster/wakeup.py), sent by the database with
        # the commit of the change, at no cost to the node that made it: a processing slot
        # freed, and an unfinished job let go (a clean stop, an inbox this host cannot reach).
        """CREATE FUNCTION watchd_wake() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('watchd_jobs', TG_ARGV[0]);
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER jobs_slot_freed AFTER UPDATE OF state ON jobs FOR EACH ROW "
        "WHEN (OLD.state IN ('creating', 'uploading', 'uploaded', 'processing') "
        "AND NEW.state NOT IN ('creating', 'uploading', 'uploaded', 'processing')) "
        "EXECUTE FUNCTION watchd_wake('slot')",
        "CREATE TRIGGER jobs_let_go AFTER UPDATE OF lease_until ON jobs FOR EACH ROW "
        "WHEN (OLD.lease_until IS NOT NULL AND NEW.lease_until IS NULL "
        "AND NEW.state NOT IN ('delivered', 'failed')) EXECUTE FUNCTION watchd_wake('released')",
    ),
    (
        # Shared pacing (watchd/cluster/pace.py): one row per workspace and operation, locked
        # by each host deciding whether a call may go; its calls, on the database's clock,
        # each with the process that made it (to give the latest one back); the hold a 429's
        # Retry-After puts on every host.
        """CREATE TABLE pace (
            workspace TEXT NOT NULL,
            operation TEXT NOT NULL,
            blocked_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
            PRIMARY KEY (workspace, operation)
        )""",
        """CREATE TABLE pace_calls (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workspace TEXT NOT NULL,
            operation TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            owner TEXT NOT NULL
        )""",
        "CREATE INDEX pace_calls_at ON pace_calls (workspace, operation, at)",
        # The tier's processing limit as any host learned it from a refusal.
        """CREATE TABLE learned_limits (
            workspace TEXT PRIMARY KEY,
            processing INTEGER NOT NULL,
            learned_at TIMESTAMPTZ NOT NULL
        )""",
    ),
)

_ACTIVE = [s.value for s in Stage if s not in TERMINAL]
# Columns a transition may set besides a job's own: a node lets its lease go with its last write.
_LEASE_FIELDS = frozenset({"lease_until"})
_ACTIVE_NOT_PARKED = [s for s in _ACTIVE if s != Stage.PARKED.value]
_RESUMABLE = sorted(s.value for s in RESUMABLE)
_RETRYABLE = [Stage.FAILED.value, Stage.PARKED.value]
# The stages a job may move to each stage from (staying where it is included).
_SOURCES = {to: [s.value for s in Stage if s is to or to in ALLOWED[s]] for to in Stage}
_JOB_COLS_OF_JOBS = ", ".join(f"jobs.{c}" for c in _columns(JobRow))

# The look-ups of a job by what its file is (the cluster's ledger sends two of them at once).
BY_IDENTITY = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE inbox = %s AND rel_path = %s AND size = %s "
    "AND mtime_ns = %s ORDER BY created_at DESC LIMIT 1"
)
ACTIVE_AT_PATH = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE inbox = %s AND rel_path = %s "
    "AND state = ANY(%s) ORDER BY created_at DESC LIMIT 1"
)
BY_FINGERPRINT = (
    f"SELECT {_JOB_COLS} FROM jobs WHERE fingerprint = %s AND id <> %s ORDER BY created_at, id"
)
# Byte order, as SQLite compares: the database's collation may sort ":" elsewhere.
FINGERPRINT_RANGE = (
    f'SELECT {_JOB_COLS} FROM jobs WHERE fingerprint COLLATE "C" > %s '
    'AND fingerprint COLLATE "C" < %s AND size = %s ORDER BY created_at, id'
)

Row = TypeVar("Row")


def _value(v: Any) -> Any:
    """A value as the SQLite ledger stores it: a stage by its name, a boolean as 0/1, lists
    and dicts as JSON text (PostgreSQL casts none of these to the columns' types itself)."""
    if isinstance(v, Stage):
        return v.value
    if isinstance(v, bool):
        return int(v)
    return jsonify_if_needed(v)


def _job_params(values: dict[str, Any]) -> list[Any]:
    """A job's values to write, in order; a preset given as a dict as the SQLite ledger
    stores it (JSON with sorted keys)."""
    preset = values.get("preset")
    if preset is not None and not isinstance(preset, str):
        values["preset"] = json.dumps(preset, sort_keys=True)
    return [_value(v) for v in values.values()]


def _sets(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} = %s" for k in values)


class PgLedger:
    """The job ledger in PostgreSQL at ``url`` (a libpq URL). ``password``, when given, is used
    instead of one in the URL, ``PGPASSWORD`` or ``~/.pgpass``. Raises :class:`LedgerError`
    when the database cannot be reached within ``connect_timeout`` seconds (the message names
    the URL without its password)."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        password: str | None = None,
        readonly: bool = False,
        max_connections: int = 4,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.url = url
        self.clock: Clock = clock or SystemClock()
        kwargs: dict[str, Any] = {
            "autocommit": True,  # transactions are explicit: conn.transaction()
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "carmic-watchd",
        }
        if password:
            kwargs["password"] = password
        self._pool = ConnectionPool(
            url,
            kwargs=kwargs,
            min_size=1,
            max_size=max_connections,
            open=False,
            name="watchd-ledger",
            timeout=connect_timeout,
        )
        self._local = threading.local()  # .conn: this thread's connection inside a write
        self._busy: set[str] = set()
        self._relaxed = 0
        self._unsynced = 0
        # One connection first, outside the pool: a refusal (no server, a wrong password, no
        # such database) is reported at once with the server's reason, where the pool would
        # retry quietly until its timeout.
        try:
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as e:
            raise LedgerError(
                f"cannot connect to the ledger database {redact_dsn(url)}: "
                + redact(" ".join(str(e).split()))
            ) from None
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise LedgerError(
                f"cannot connect to the ledger database {redact_dsn(url)} within "
                f"{connect_timeout:g} s"
            ) from None
        if not readonly:
            try:
                self.migrate()
            except BaseException:
                self._pool.close()
                raise

    def close(self) -> None:
        self._pool.close()

    # ---- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._connection() as conn:
            exists = conn.execute("SELECT to_regclass('watchd_schema')").fetchone()
            if not exists or exists[0] is None:
                return 0
            row = conn.execute("SELECT version FROM watchd_schema").fetchone()
        return int(row[0]) if row else 0

    def migrate(self) -> None:
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS watchd_schema "
                "(one INTEGER PRIMARY KEY CHECK (one = 1), version INTEGER NOT NULL)"
            )
            conn.execute("INSERT INTO watchd_schema VALUES (1, 0) ON CONFLICT DO NOTHING")
            row = conn.execute("SELECT version FROM watchd_schema").fetchone()
            current = int(row[0]) if row else 0
            if current > len(PG_MIGRATIONS):
                raise LedgerError(
                    f"the ledger database {redact_dsn(self.url)} has schema version {current}, "
                    f"newer than this watchd knows ({len(PG_MIGRATIONS)}): upgrade watchd"
                )
            for number, statements in enumerate(PG_MIGRATIONS, start=1):
                if number <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
            conn.execute("UPDATE watchd_schema SET version = %s", (len(PG_MIGRATIONS),))

    # ---- transactions ----------------------------------------------------------------------

    def _fence_token(self, job_id: str) -> int | None:
        """The lease token a write of ``job_id`` must find on the job (None: no check). The
        cluster's ledger (watchd/cluster/ledger.py) gives the token of its claim."""
        return None

    def _fence(self, conn: psycopg.Connection[Any], job_id: str | None) -> None:
        if job_id is not None and (token := self._fence_token(job_id)) is not None:
            conn.execute("SELECT watchd_fence(%s, %s)", (job_id, token))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The database's failures as the ledger's: a lease taken over (the fence), and a
        database that cannot be reached (wait, then try again)."""
        try:
            yield
        except psycopg.Error as e:
            if e.sqlstate == LEASE_LOST_STATE:
                raise LeaseLost(str(e.diag.message_primary or e)) from None
            if isinstance(e, psycopg.OperationalError | psycopg.InterfaceError):
                raise DatabaseUnavailable(self._unreachable(e)) from e
            raise
        except PoolTimeout as e:
            raise DatabaseUnavailable(self._unreachable(e)) from e

    def _unreachable(self, e: BaseException) -> str:
        return f"the ledger database {redact_dsn(self.url)} cannot be reached: " + redact(
            " ".join(str(e).split())
        )

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection of this thread's transaction, else one from the pool."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._errors(), self._pool.connection() as pooled:
            yield pooled

    @contextmanager
    def _write(
        self, *, pipelined: bool = True, job: str | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on one connection; inside another, part of it. With ``job``, the
        transaction first checks the job's lease (see :meth:`_fence_token`)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._fence(conn, job)
            yield conn
            return
        with (
            self._errors(),
            self._pool.connection() as pooled,
            self._transaction(pooled, pipelined=pipelined),
        ):
            self._fence(pooled, job)
            yield pooled

    def _write_one(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        job: str | None = None,
        lock: str | None = None,
    ) -> tuple[Any, ...] | None:
        """One statement in a transaction of its own (or in the batch's); its first row. One
        round trip: the row is read after the commit went out with the statement. With
        ``job``, fenced as :meth:`_write` is. ``lock``: a statement taking a transaction-level
        lock first, sent with it in the same round trip."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._fence(conn, job)
            if lock is not None:
                conn.execute(lock)
            return conn.execute(sql, params).fetchone()
        with self._errors(), self._pool.connection() as pooled:
            with self._transaction(pooled, pipelined=True):
                self._fence(pooled, job)
                if lock is not None:
                    pooled.execute(lock)
                cur = pooled.execute(sql, params)
            return cur.fetchone()

    @contextmanager
    def _transaction(self, conn: psycopg.Connection[Any], *, pipelined: bool) -> Iterator[None]:
        """A transaction this thread's ledger calls join.

        Pipelined, BEGIN, the statements and COMMIT go out without waiting for each answer and
        the client waits only where it reads a result: a transaction costs about one round trip
        where psycopg's ``transaction()`` costs three or more (measured through a delaying
        proxy). An error surfaces at the next read or at the commit; then all is rolled back."""
        relaxed = self._relaxed > 0
        try:
            with conn.pipeline() if pipelined else nullcontext():
                conn.execute("BEGIN")
                if relaxed:
                    # Not waiting for the WAL flush: a crash of the server may lose it, as a
                    # power cut may lose a relaxed SQLite commit.
                    conn.execute("SET LOCAL synchronous_commit = off")
                outer = getattr(self._local, "conn", None)
                self._local.conn = conn
                try:
                    yield
                finally:
                    self._local.conn = outer
                conn.execute("COMMIT")
        except BaseException:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                with suppress(psycopg.Error):  # a broken connection: the pool drops it
                    conn.execute("ROLLBACK")
            raise
        self._unsynced = self._unsynced + 1 if relaxed else 0

    def run_alone(self, statements: Sequence[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        """``(sql, params)`` statements in a transaction of their own, pipelined (one round
        trip); the rows of the last one. Never part of this thread's open transaction: a caller
        that waits between two calls (shared pacing) holds no lock while it waits."""
        with self._pool.connection() as conn:
            with self._transaction(conn, pipelined=True):
                cursors = [conn.execute(sql, params) for sql, params in statements]
            last = cursors[-1] if cursors else None
            return last.fetchall() if last is not None and last.description else []

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._write():
            yield

    def transaction(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A transaction on one connection, for tools that write in bulk (``ledger migrate``:
        COPY, which pipeline mode does not take)."""
        return self._write(pipelined=False)

    @contextmanager
    def granting(self) -> Iterator[bool]:
        """Grants of processing slots are made inside (see the cluster's ledger, where other
        hosts grant too). Yields False: this ledger is not shared between hosts."""
        yield False

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        self._relaxed += 1
        try:
            yield
        finally:
            self._relaxed -= 1

    @property
    def unsynced_writes(self) -> int:
        return self._unsynced

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read, as tuples (in this thread's transaction when inside one), for
        tables the ledger does not model itself (``nodes``: watchd/cluster/nodes.py)."""
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _rows(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return [cls(*r) for r in conn.execute(sql, params).fetchall()]

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._connection() as conn:
            row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
            return row

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self._write() as conn:
            conn.execute(sql, params)

    def _event(
        self,
        conn: psycopg.Connection[Any],
        job_id: str,
        kind: str,
        *,
        actor: str = "daemon",
        src: str | None = None,
        dst: str | None = None,
        detail: Any = None,
    ) -> None:
        conn.execute(
            "INSERT INTO events (job_id, at, actor, kind, from_state, to_state, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
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
        return self._record_new(
            {
                "inbox": inbox,
                "rel_path": rel_path,
                "path": path,
                "rule": rule,
                "preset": preset,
                "size": size,
                "mtime_ns": mtime_ns,
                "inode": inode,
                "dev": dev,
                "fingerprint": fingerprint,
            },
            actor=actor,
        )

    def _record_new(self, job: dict[str, Any], *, actor: str) -> JobRow:
        """The new job's insert (see :meth:`add_job`); the cluster's ledger claims it too."""
        row = self._insert_job(job, actor=actor)
        assert row is not None
        return JobRow(*row[1:])

    def _insert_job(
        self, job: dict[str, Any], *, actor: str, lease: tuple[str, float] | None = None
    ) -> tuple[Any, ...] | None:
        """One statement, one round trip: a new job in state ``queued`` and its ``discovered``
        event; the job's lease token, then its row. With ``lease`` (node, seconds) the job is
        claimed by that node, and a file that is an unfinished job already inserts nothing
        (None: the unique index ``jobs_claim``)."""
        job_id = new_job_id()
        now = self.clock.now()
        values = {
            "id": job_id,
            **job,
            "preset": json.dumps(job["preset"], sort_keys=True),
            "state": Stage.QUEUED.value,
            "marker": f"wd-{job_id[1:]}",
            "created_at": now,
            "updated_at": now,
        }
        detail = {"path": job["path"], "rule": job["rule"], "size": job["size"]}
        cols, marks, params = list(values), ["%s"] * len(values), list(values.values())
        conflict = ""
        if lease is not None:
            node, seconds = lease
            detail["node"] = node
            cols += ["node", "lease_token", "lease_until"]
            marks += ["%s", "nextval('lease_tokens')", "now() + make_interval(secs => %s)"]
            params += [node, seconds]
            conflict = (
                " ON CONFLICT (inbox, rel_path, size, mtime_ns, fingerprint) "
                "WHERE state <> 'delivered' AND state <> 'failed' DO NOTHING"
            )
        return self._write_one(
            f"WITH job AS (INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join(marks)})"
            f"{conflict} RETURNING lease_token, {_JOB_COLS}), "
            "event AS (INSERT INTO events (job_id, at, actor, kind, from_state, to_state, detail) "
            "SELECT id, %s, %s, 'discovered', NULL, %s, %s FROM job) "
            "SELECT * FROM job",
            [*params, now, actor, Stage.QUEUED.value, json.dumps(detail, sort_keys=True)],
        )

    def get(self, job_id: str) -> JobRow | None:
        rows = self._rows(JobRow, f"SELECT {_JOB_COLS} FROM jobs WHERE id = %s", (job_id,))
        return rows[0] if rows else None

    def require(self, job_id: str) -> JobRow:
        job = self.get(job_id)
        if job is None:
            raise LedgerError(f"unknown job {job_id}")
        return job

    def _locked(self, conn: psycopg.Connection[Any], job_id: str) -> JobRow:
        """The job's row, locked until the transaction ends (no other host changes it)."""
        row = conn.execute(
            f"SELECT {_JOB_COLS} FROM jobs WHERE id = %s FOR UPDATE", (job_id,)
        ).fetchone()
        if row is None:
            raise LedgerError(f"unknown job {job_id}")
        return JobRow(*row)

    def jobs(self, states: Iterable[Stage] | None = None) -> list[JobRow]:
        if states is None:
            return self._rows(JobRow, f"SELECT {_JOB_COLS} FROM jobs ORDER BY created_at, id")
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE state = ANY(%s) ORDER BY created_at, id",
            ([s.value for s in states],),
        )

    def active_jobs(self) -> list[JobRow]:
        return self.jobs([s for s in Stage if s not in TERMINAL])

    def due_jobs(self, now: float) -> list[JobRow]:
        return self._rows(
            JobRow,
            f"SELECT {_JOB_COLS} FROM jobs WHERE state = ANY(%s) AND next_attempt_at <= %s "
            "ORDER BY next_attempt_at, created_at, id",
            (_ACTIVE, now),
        )

    def due_ids(self, now: float, *, idle_only: bool = False) -> list[tuple[str, str, str]]:
        with self._connection() as conn:
            rows: list[tuple[str, str, str]] = conn.execute(
                "SELECT id, state, inbox FROM jobs WHERE state = ANY(%s) "
                "AND next_attempt_at <= %s ORDER BY next_attempt_at, created_at, id",
                (_ACTIVE, now),
            ).fetchall()
        if idle_only:
            busy = self._busy
            return [r for r in rows if r[0] not in busy]
        return rows

    def set_busy(self, job_id: str, busy: bool) -> None:
        """Marks of this process's tasks: kept in memory, per ledger."""
        if busy:
            self._busy.add(job_id)
        else:
            self._busy.discard(job_id)

    def get_many(self, job_ids: Sequence[str]) -> list[JobRow]:
        ids = list(job_ids)
        found = {
            j.id: j
            for j in self._rows(JobRow, f"SELECT {_JOB_COLS} FROM jobs WHERE id = ANY(%s)", (ids,))
        }
        return [found[j] for j in ids if j in found]

    def next_due_at(self) -> float | None:
        row = self._one("SELECT MIN(next_attempt_at) FROM jobs WHERE state = ANY(%s)", (_ACTIVE,))
        return float(row[0]) if row and row[0] is not None else None

    def find_by_identity(
        self, inbox: str, rel_path: str, size: int, mtime_ns: int
    ) -> JobRow | None:
        rows = self._rows(JobRow, BY_IDENTITY, (inbox, rel_path, size, mtime_ns))
        return rows[0] if rows else None

    def active_at_path(self, inbox: str, rel_path: str) -> JobRow | None:
        rows = self._rows(JobRow, ACTIVE_AT_PATH, (inbox, rel_path, _ACTIVE))
        return rows[0] if rows else None

    def find_by_fingerprint(self, fingerprint: str, *, exclude: str | None = None) -> list[JobRow]:
        return self._rows(JobRow, BY_FINGERPRINT, (fingerprint, exclude or ""))

    def fingerprint_range(self, low: str, high: str, *, size: int) -> list[JobRow]:
        return self._rows(JobRow, FINGERPRINT_RANGE, (low, high, size))

    def outbox_dir_taken(self, outbox_dir: str, *, exclude: str | None = None) -> bool:
        row = self._one(
            "SELECT 1 FROM jobs WHERE outbox_dir = %s AND id <> %s LIMIT 1",
            (outbox_dir, exclude or ""),
        )
        return row is not None

    def known_identities(self) -> dict[tuple[str, str], set[tuple[int, int]]]:
        out: dict[tuple[str, str], set[tuple[int, int]]] = {}
        with self._connection() as conn:
            for inbox, rel, size, mtime in conn.execute(
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
        """One statement, one round trip: the row is locked, checked against the stages that
        may move to ``to`` (or against ``expect``), updated and its event appended, or nothing
        is written and the reason is raised as the SQLite ledger raises it."""
        now = self.clock.now()
        values = {**updates, "state": to.value, "updated_at": now}
        _known_fields(values, _JOB_FIELDS | _LEASE_FIELDS, "job")
        if to in TERMINAL:
            values.setdefault("finished_at", now)
        if expect is None:
            sources = _SOURCES[to]
        else:
            sources = [expect.value] if expect is to or to in ALLOWED[expect] else []
        row = self._write_one(
            "WITH old AS (SELECT id, state FROM jobs WHERE id = %s FOR UPDATE), "
            f"new AS (UPDATE jobs SET {_sets(values)} FROM old "
            "WHERE jobs.id = old.id AND old.state = ANY(%s) "
            f"RETURNING old.state AS src, {_JOB_COLS_OF_JOBS}), "
            "event AS (INSERT INTO events "
            "(job_id, at, actor, kind, from_state, to_state, detail) "
            "SELECT %s, %s, %s, %s, src, %s, %s FROM new) "
            "SELECT old.state, new.* FROM old LEFT JOIN new ON true",
            [
                job_id,
                *(_value(v) for v in values.values()),
                sources,
                job_id,
                now,
                actor,
                kind,
                to.value,
                json.dumps(detail, sort_keys=True) if detail is not None else None,
            ],
            job=job_id,
        )
        if row is None:
            raise LedgerError(f"unknown job {job_id}")
        if row[1] is None:  # not moved: say why
            src = Stage(row[0])
            if expect is not None and src is not expect:
                raise LedgerError(f"job {job_id} is {src.value}, expected {expect.value}")
            check_transition(job_id, src, to)
            raise LedgerError(f"job {job_id}: {src.value} -> {to.value} was not applied")
        job = JobRow(*row[2:])
        self._moved(job, Stage(row[0]), detail)
        return job

    def _moved(self, job: JobRow, src: Stage, detail: Any) -> None:
        """Called after each transition (``src`` -> ``job.state``) is committed."""

    def update(self, job_id: str, **updates: Any) -> None:
        values = {**updates, "updated_at": self.clock.now()}
        _known_fields(values, _JOB_FIELDS, "job")
        with self._write(job=job_id) as conn:
            conn.execute(
                f"UPDATE jobs SET {_sets(values)} WHERE id = %s", [*_job_params(values), job_id]
            )

    def record_event(
        self, job_id: str, kind: str, detail: Any = None, *, actor: str = "daemon"
    ) -> None:
        with self._write() as conn:
            self._event(conn, job_id, kind, actor=actor, detail=detail)

    def events(self, job_id: str | None = None) -> list[EventRow]:
        if job_id is None:
            return self._rows(EventRow, f"SELECT {_EVENT_COLS} FROM events ORDER BY id")
        return self._rows(
            EventRow,
            f"SELECT {_EVENT_COLS} FROM events WHERE job_id = %s ORDER BY id",
            (job_id,),
        )

    # ---- operator commands -----------------------------------------------------------------

    def retry(self, job_id: str, *, actor: str = "cli") -> JobRow:
        """The SQLite ledger's retry (checked, then a transition to the recorded stage with the
        counters, error, park reason and finish time cleared) as one statement: the target
        stage is read from the locked row. Failed and parked jobs may move to any resumable
        stage, so the stage table needs no check here. The job is taken from the node that held
        it (a parked job's): a new fencing token, no lease; any node may claim it at once."""
        now = self.clock.now()
        row = self._write_one(
            f"WITH old AS (SELECT {_JOB_COLS} FROM jobs WHERE id = %s FOR UPDATE), "
            "new AS (UPDATE jobs SET state = CASE WHEN old.resume_stage = ANY(%s) "
            "THEN old.resume_stage ELSE %s END, attempts = 0, next_attempt_at = 0, "
            "error = NULL, error_code = NULL, park_reason = NULL, finished_at = NULL, "
            "updated_at = %s, lease_token = nextval('lease_tokens'), lease_until = NULL "
            "FROM old WHERE jobs.id = old.id AND old.state = ANY(%s) "
            f"RETURNING {_JOB_COLS_OF_JOBS}), "
            "event AS (INSERT INTO events "
            "(job_id, at, actor, kind, from_state, to_state, detail) "
            "SELECT new.id, %s, %s, 'retry', old.state, new.state, NULL FROM old, new) "
            "SELECT old.*, new.* FROM old LEFT JOIN new ON true",
            (job_id, _RESUMABLE, Stage.QUEUED.value, now, _RETRYABLE, now, actor),
        )
        if row is None:
            raise LedgerError(f"unknown job {job_id}")
        width = len(_columns(JobRow))
        if row[width] is None:  # not moved: say why
            _check_retryable(JobRow(*row[:width]))
            raise LedgerError(f"job {job_id}: retry was not applied")
        return JobRow(*row[width:])

    def check_retryable(self, job: JobRow) -> None:
        _check_retryable(job)

    def forget(self, job_id: str, *, actor: str = "cli") -> None:
        """Two round trips: the event's detail (the file's identity, as the SQLite ledger
        writes it) is made here from the row read first."""
        with self._write() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (FORGET_LOCK,))
            job = self._locked(conn, job_id)
            if job.stage not in TERMINAL:
                raise LedgerError(
                    f"job {job_id} is {job.state}: only delivered or failed jobs can be forgotten"
                )
            # Clips and exports go with the job (ON DELETE CASCADE).
            conn.execute("DELETE FROM jobs WHERE id = %s", (job_id,))
            detail = _forgotten_detail(job)
            self._event(conn, job_id, "forgotten", actor=actor, src=job.state, detail=detail)

    def forgotten_since(self, after: int | None) -> tuple[int, list[tuple[str, str, int, int]]]:
        """As the SQLite ledger's. Event ids are drawn from a sequence when a row is inserted,
        not when it commits, so an id seen does not prove that every smaller one is visible.
        Hence FORGET_LOCK: forgets hold it from before their event's id is drawn until their
        commit, so the ``forgotten`` events commit in id order (the identity column caches no
        values per session), and the first call (``after`` None) holds it shared while it
        reads the largest id, so no forget is between drawing a smaller id and committing."""
        if after is None:
            unsynced = self._unsynced
            row = self._write_one(
                "SELECT MAX(id) FROM events",
                (),
                lock=f"SELECT pg_advisory_xact_lock_shared({FORGET_LOCK})",
            )
            self._unsynced = unsynced  # a read commits nothing: earlier relaxed writes stay so
            return int(row[0] or 0) if row else 0, []
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT id, detail FROM events WHERE id > %s AND kind = 'forgotten' ORDER BY id",
                (after,),
            ).fetchall()
        return _forgotten_files(after, rows)

    # ---- clips and exports -----------------------------------------------------------------

    def put_clips(self, job_id: str, clips: Sequence[dict[str, Any]]) -> None:
        """Insert or refresh the clips: a clip already recorded keeps the columns not given."""
        now = self.clock.now()
        with self._write(job=job_id) as conn:
            for c in clips:
                row = {**c, "job_id": job_id, "updated_at": now}
                _known_fields(row, _CLIP_FIELDS, "clip")
                self._upsert(conn, "clips", row, ("job_id", "clip_id"))

    def _upsert(
        self,
        conn: psycopg.Connection[Any],
        table: str,
        row: dict[str, Any],
        key: tuple[str, ...],
        *,
        insert_only: dict[str, Any] | None = None,
    ) -> None:
        """Insert ``row`` (with ``insert_only`` too), or set its non-key columns on the row
        with the same ``key``."""
        full = {**(insert_only or {}), **row}
        cols = ", ".join(full)
        marks = ", ".join(["%s"] * len(full))
        sets = ", ".join(f"{k} = EXCLUDED.{k}" for k in row if k not in key)
        conn.execute(
            f"INSERT INTO {table} ({cols}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}",
            [_value(v) for v in full.values()],
        )

    def clips(self, job_id: str, *, selected_only: bool = False) -> list[ClipRow]:
        chosen = " AND selected = 1" if selected_only else ""
        return self._rows(
            ClipRow,
            f"SELECT {_CLIP_COLS} FROM clips WHERE job_id = %s{chosen} ORDER BY rank, clip_id",
            (job_id,),
        )

    def update_clip(self, job_id: str, clip_id: str, **updates: Any) -> None:
        values = {k: v for k, v in updates.items() if k not in ("job_id", "clip_id")}
        values["updated_at"] = self.clock.now()
        _known_fields(values, _CLIP_FIELDS, "clip")
        with self._write(job=job_id) as conn:
            conn.execute(
                f"UPDATE clips SET {_sets(values)} WHERE job_id = %s AND clip_id = %s",
                [*(_value(v) for v in values.values()), job_id, clip_id],
            )

    def put_export(self, job_id: str, clip_id: str, fmt: str, **values: Any) -> None:
        _known_fields(values, _EXPORT_FIELDS, "export")
        row = {
            **values,
            "job_id": job_id,
            "clip_id": clip_id,
            "format": fmt,
            "updated_at": self.clock.now(),
        }
        with self._write(job=job_id) as conn:
            self._upsert(
                conn,
                "exports",
                row,
                ("job_id", "clip_id", "format"),
                insert_only={"state": "pending"},
            )

    def exports(self, job_id: str) -> list[ExportRow]:
        return self._rows(
            ExportRow,
            f"SELECT {_EXPORT_COLS} FROM exports WHERE job_id = %s ORDER BY clip_id, format",
            (job_id,),
        )

    # ---- inboxes, heartbeat, totals --------------------------------------------------------

    def set_inbox(
        self,
        path: str,
        *,
        paused: bool,
        reason: str | None,
        entries: int,
        last_scan_at: float | None,
    ) -> None:
        row = {
            "path": path,
            "paused": paused,
            "reason": reason,
            "entries": entries,
            "last_scan_at": last_scan_at,
        }
        with self._write() as conn:
            self._upsert(conn, "inboxes", row, ("path",))

    def inboxes(self) -> list[InboxRow]:
        return self._rows(InboxRow, f"SELECT {_INBOX_COLS} FROM inboxes ORDER BY path")

    def make_durable(self) -> None:
        """The SQLite ledger's (see there): one commit that waits for the WAL flush, which
        makes every asynchronous commit before it durable too."""
        if not self._unsynced:
            return
        relaxed, self._relaxed = self._relaxed, 0
        try:
            with self._write() as conn:
                self._upsert(
                    conn, "meta", {"key": "durable_at", "value": str(self.clock.now())}, ("key",)
                )
        finally:
            self._relaxed = relaxed

    def heartbeat(self, pid: int) -> None:
        value = json.dumps({"at": self.clock.now(), "pid": pid})
        with self._write() as conn:
            self._upsert(conn, "meta", {"key": "heartbeat", "value": value}, ("key",))

    def last_heartbeat(self) -> dict[str, Any] | None:
        row = self._one("SELECT value FROM meta WHERE key = 'heartbeat'")
        if row is None:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, dict) else None

    def upload_totals(self) -> tuple[int, int]:
        row = self._one(
            "SELECT COALESCE(SUM(bytes_uploaded), 0), COALESCE(SUM(size), 0) FROM jobs "
            "WHERE state = %s",
            (Stage.UPLOADING.value,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def wait_counts(self, *, parked: bool = True) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT wait, COUNT(*) FROM jobs WHERE state = ANY(%s) AND wait IS NOT NULL "
                "GROUP BY wait",
                (_ACTIVE if parked else _ACTIVE_NOT_PARKED,),
            ).fetchall()
        return _waits_by_cause(rows)

    def counts_by_state(self) -> dict[str, int]:
        with self._connection() as conn:
            return {
                str(s): int(n)
                for s, n in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            }

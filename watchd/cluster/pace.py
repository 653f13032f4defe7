"""Limits shared by the hosts that use one Carmic workspace: the pace of project creations and
exports, and the tier's processing limit learned from a refusal.

Carmic counts creations and exports per workspace, whichever host sends them: each host pacing
itself at 5 a minute would earn 429s together. :class:`SharedBucket` keeps the pace in the
ledger database (the ``pace`` and ``pace_calls`` tables) with :class:`~watchd.carmic.pacing.
TokenBucket`'s guarantee across hosts: no window of ``window`` seconds (margin included) holds
more than ``capacity`` calls. Every time is the database's (``clock_timestamp()``), so hosts
whose clocks disagree still agree on the window.

A host deciding whether a call may go locks the workspace's ``pace`` row, so the decisions of
all hosts are taken one after the other, and records its call in the same short transaction
(one round trip: the statements are pipelined). The row lock is taken by a statement of its
own: in READ COMMITTED each later statement reads a snapshot taken after the lock was granted,
so it sees the call the previous holder just committed (a lock taken inside the deciding
statement would come with a snapshot older than that call). The time recorded is read after
the lock too, never earlier than the calls it is compared with.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from watchd.carmic.pacing import BucketFactory, bucket_shape
from watchd.clock import Clock
from watchd.cluster.errors import DatabaseUnavailable
from watchd.redact import redact

# Calls older than this are deleted as hosts record new ones. Longer than any window, so a host
# configured with a longer window than another still finds every call it counts.
KEEP_CALLS = 3600.0
# Added to a computed wait: the database compares times to the microsecond, a wait that ends
# exactly on a call's expiry would find it still counted and ask again at once.
WAIT_EPSILON = 0.005

_LOCK = "SELECT 1 FROM pace WHERE workspace = %(ws)s AND operation = %(op)s FOR UPDATE"
_MAKE_ROW = "INSERT INTO pace (workspace, operation) VALUES (%(ws)s, %(op)s) ON CONFLICT DO NOTHING"
# Whether a call may go now; if so it is recorded. Returns (taken, seconds the hold still runs,
# the times of the ``cap`` newest calls in the window relative to now, newest first).
_ATTEMPT = """
WITH now AS MATERIALIZED (SELECT clock_timestamp() AS t),
recent AS (
    SELECT at FROM pace_calls, now
    WHERE workspace = %(ws)s AND operation = %(op)s
      AND at > now.t - make_interval(secs => %(window)s)
    ORDER BY at DESC LIMIT %(cap)s
),
hold AS (
    SELECT greatest(blocked_until, now.t) AS until FROM pace, now
    WHERE workspace = %(ws)s AND operation = %(op)s
),
go AS (
    SELECT now.t, hold.until <= now.t
        AND (NOT %(limited)s OR (SELECT count(*) FROM recent) < %(cap)s) AS ok
    FROM now, hold
),
pruned AS (
    DELETE FROM pace_calls USING now
    WHERE workspace = %(ws)s AND operation = %(op)s
      AND at < now.t - make_interval(secs => %(keep)s)
),
taken AS (
    INSERT INTO pace_calls (workspace, operation, at, owner)
    SELECT %(ws)s, %(op)s, go.t, %(owner)s FROM go WHERE go.ok AND %(limited)s
    RETURNING at
)
SELECT go.ok,
    extract(epoch FROM hold.until - go.t)::float8,
    ARRAY(
        SELECT extract(epoch FROM c.at - go.t)::float8
        FROM (SELECT at FROM recent UNION ALL SELECT at FROM taken) AS c
        ORDER BY c.at DESC LIMIT %(cap)s
    )
FROM go, hold
"""
_BLOCK = """
INSERT INTO pace (workspace, operation, blocked_until)
VALUES (%(ws)s, %(op)s, clock_timestamp() + make_interval(secs => %(seconds)s))
ON CONFLICT (workspace, operation)
DO UPDATE SET blocked_until = greatest(pace.blocked_until, EXCLUDED.blocked_until)
"""
_GIVE_BACK = """
DELETE FROM pace_calls WHERE id = (
    SELECT id FROM pace_calls
    WHERE workspace = %(ws)s AND operation = %(op)s AND owner = %(owner)s
    ORDER BY at DESC, id DESC LIMIT 1
)
"""
_LEARNED = """
SELECT processing FROM learned_limits
WHERE workspace = %(ws)s AND learned_at > clock_timestamp() - make_interval(secs => %(forget)s)
"""
_LEARN = """
INSERT INTO learned_limits (workspace, processing, learned_at)
VALUES (%(ws)s, %(limit)s, clock_timestamp())
ON CONFLICT (workspace) DO UPDATE SET processing = EXCLUDED.processing,
    learned_at = EXCLUDED.learned_at
WHERE learned_limits.processing > EXCLUDED.processing
   OR learned_limits.learned_at <= EXCLUDED.learned_at - make_interval(secs => %(forget)s)
RETURNING processing
"""


class Database(Protocol):
    """Where the shared state lives: :class:`watchd.ledger.pg.PgLedger` (its connection
    pool), or a ledger built on one."""

    def run_alone(self, statements: Sequence[tuple[str, Any]]) -> list[tuple[Any, ...]]:
        """The statements in one transaction of their own; the last one's rows."""
        ...


@contextmanager
def _reaching(what: str) -> Iterator[None]:
    """The database's connection failures as :class:`DatabaseUnavailable`."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as e:
        raise DatabaseUnavailable(
            f"{what}: the ledger database cannot be reached: " + redact(" ".join(str(e).split()))
        ) from None


class SharedBucket:
    """At most ``per_minute`` ``operation`` calls a minute in ``workspace``, between all the
    hosts whose ledger is one PostgreSQL database (0 = unlimited: only a 429's hold is
    shared). The interface of :class:`~watchd.carmic.pacing.TokenBucket`; ``owner`` names this
    process's calls (what :meth:`give_back` may remove). The database calls are synchronous,
    one short transaction each, like the ledger's; unreachable, they raise
    :class:`DatabaseUnavailable`.
    """

    def __init__(
        self,
        ledger: Database,
        workspace: str,
        operation: str,
        per_minute: float,
        *,
        clock: Clock,
        owner: str,
        window: float = 60.0,
        margin: float = 1.0,
    ) -> None:
        self.per_minute = per_minute
        self.capacity, self.window = bucket_shape(per_minute, window, margin)
        self.workspace = workspace
        self.operation = operation
        self._ledger = ledger
        self._clock = clock
        self._owner = owner
        self._row_made = False
        # The last state read, on this host's monotonic clock: when the hold ends, and when
        # each of the newest calls leaves the window (newest first).
        self._held_until = 0.0
        self._expiries: list[float] = []
        # Held while waiting, so that this host's waiters are served in arrival order.
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SharedBucket {self.operation} {self.workspace} {self.per_minute}/min>"

    @property
    def unlimited(self) -> bool:
        return self.capacity == 0

    def _params(self, **more: Any) -> dict[str, Any]:
        return {"ws": self.workspace, "op": self.operation, **more}

    def _wait_from(self, now: float) -> float:
        wait = max(0.0, self._held_until - now)
        if not self.unlimited:
            live = [e for e in self._expiries if e > now]
            if len(live) >= self.capacity:
                wait = max(wait, live[self.capacity - 1] - now)
        return wait

    def wait_time(self) -> float:
        """Seconds until a call may go, estimated from the state the last database call of
        this bucket read (its own decisions, holds, and the calls of other hosts as they stood
        then): cheap, no database access. Calls other hosts made since are not in it, so the
        answer may be short; :meth:`acquire` decides on the database's state."""
        return self._wait_from(self._clock.monotonic())

    def _attempt(self) -> float | None:
        """One decision on the database (one round trip): None when a call was recorded,
        else the seconds to wait before asking again."""
        params = self._params(
            window=self.window,
            cap=self.capacity,
            limited=not self.unlimited,
            keep=max(KEEP_CALLS, self.window),
            owner=self._owner,
        )
        statements: list[tuple[str, Any]] = [] if self._row_made else [(_MAKE_ROW, params)]
        statements += [(_LOCK, params), (_ATTEMPT, params)]
        with _reaching(f"pacing {self.operation}"):
            rows = self._ledger.run_alone(statements)
        self._row_made = bool(rows)
        if not rows:  # the row went away (a hand-cleaned table): make it again
            return WAIT_EPSILON
        ((taken, hold, recent),) = rows
        now = self._clock.monotonic()
        self._held_until = now + hold
        self._expiries = [now + age + self.window for age in recent]
        if taken:
            return None
        return max(self._wait_from(now), 0.0) + WAIT_EPSILON

    def try_acquire(self) -> bool:
        """Take a token if one is free now, on the database (one round trip)."""
        return self._attempt() is None

    def give_back(self) -> None:
        """The call this host took a token for never reached the server: its latest recorded
        call is removed, for every host."""
        with _reaching(f"pacing {self.operation}"):
            self._ledger.run_alone([(_GIVE_BACK, self._params(owner=self._owner))])
        if self._expiries:
            self._expiries.pop(0)

    async def acquire(self) -> float:
        """Wait for a token and take it; returns the seconds waited (by the injected clock).
        Between two tries nothing is held in the database: this host sleeps the wait the last
        try computed, then asks again (another host may have taken the token meanwhile)."""
        start = self._clock.monotonic()
        async with self._lock:
            while (wait := self._attempt()) is not None:
                await self._clock.sleep(wait)
        return self._clock.monotonic() - start

    def block_for(self, seconds: float) -> None:
        """The server said 429 anyway: no host takes a token for ``seconds`` from now (on the
        database's clock). This host holds back even if the database cannot be told."""
        if seconds <= 0:
            return
        self._held_until = max(self._held_until, self._clock.monotonic() + seconds)
        with _reaching(f"pacing {self.operation}"):
            self._ledger.run_alone([(_BLOCK, self._params(seconds=float(seconds)))])


def shared_buckets(
    ledger: Database,
    *,
    owner: str | None = None,
    window: float = 60.0,
    margin: float = 1.0,
) -> BucketFactory:
    """The ``bucket_factory`` of a :class:`~watchd.carmic.client.CarmicClient` whose pace is
    shared through ``ledger``'s database. ``owner`` names this process's calls (by default a
    fresh random id: one per process is what :meth:`SharedBucket.give_back` needs)."""
    me = owner or uuid.uuid4().hex

    def build(workspace: str, kind: str, per_minute: float, clock: Clock) -> SharedBucket:
        return SharedBucket(
            ledger,
            workspace,
            kind,
            per_minute,
            clock=clock,
            owner=me,
            window=window,
            margin=margin,
        )

    return build


class SharedProcessingLimit:
    """The tier's processing limit of ``workspace`` as learned by any host from a refusal
    (:attr:`watchd.pipeline.scheduler.ProcessingLimit.shared`), in the ``learned_limits``
    table. Read at most every ``max_age`` seconds; forgotten ``forget_after`` seconds after it
    was learned, as a single host forgets it when it restarts (a workspace moved to a bigger
    tier is not held to the old limit for ever)."""

    def __init__(
        self,
        ledger: Database,
        workspace: str,
        *,
        clock: Clock,
        max_age: float = 5.0,
        forget_after: float = 86400.0,
    ) -> None:
        self.workspace = workspace
        self._ledger = ledger
        self._clock = clock
        self._max_age = max_age
        self._forget = forget_after
        self._value: int | None = None
        self._read_at: float | None = None

    def _run(self, sql: str, **params: Any) -> Sequence[tuple[Any, ...]]:
        with _reaching("the learned processing limit"):
            return self._ledger.run_alone(
                [(sql, {"ws": self.workspace, "forget": self._forget, **params})]
            )

    def get(self) -> int | None:
        """The limit learned by any host, None when none was (or it was forgotten)."""
        now = self._clock.monotonic()
        if self._read_at is None or now - self._read_at >= self._max_age:
            rows = self._run(_LEARNED)
            self._value = int(rows[0][0]) if rows else None
            self._read_at = now
        return self._value

    def lower(self, limit: int) -> bool:
        """A refusal taught this host that the limit is at most ``limit``: record it unless
        a host learned a lower one. Returns whether the shared value changed."""
        rows = self._run(_LEARN, limit=limit)
        if rows:
            self._value = limit
            self._read_at = self._clock.monotonic()
        else:
            self._read_at = None  # a lower value stands: read it next time
        return bool(rows)

"""The durable delivery queue: ledger rows, and when to try again.

``notify_events`` holds each event once (its ``webhook-id`` and the exact body);
``notify_queue`` one row per (event, notifier) until a 2xx (or its give-up time) removes it;
``notifiers`` each notifier's last answer, its counts, and whether it said 410 Gone (then it is
skipped until its config, seen through its fingerprint, changes). The tables are created by the
ledger's migration ``_m_notify_queue``. Every function takes the ledger's connection (inside
the caller's transaction for writes): the queue never holds more than a batch in memory.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from watchd.notify.events import Event

if TYPE_CHECKING:
    from watchd.ledger.db import Ledger

# Retried for at least this long after the event (the contract says at least 24 h).
GIVE_UP_AFTER = 25 * 3600.0
# A Retry-After is honoured up to this (the longest wait between two tries).
MAX_WAIT = 3600.0


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: try ``attempt`` (1 = the first retry) waits between
    half and all of ``first * 2**(attempt-1)``, capped at ``maximum``; ``give_up`` seconds
    after the event it is dropped. A value object: tests shrink it."""

    first: float = 5.0
    maximum: float = 3600.0
    give_up: float = GIVE_UP_AFTER

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.maximum:
            raise ValueError("need 0 < first <= maximum")

    def delay(self, attempt: int, rnd: random.Random | None = None) -> float:
        base = min(self.maximum, self.first * 2 ** max(0, attempt - 1))
        jitter: float = (rnd or random).random()
        return float(base * (0.5 + 0.5 * jitter))

    def wait(
        self, attempt: int, retry_after: float | None, rnd: random.Random | None = None
    ) -> float:
        """The wait before the next try: the server's Retry-After when it gave one (at most
        an hour), else :meth:`delay`."""
        if retry_after is not None:
            return min(MAX_WAIT, max(0.0, retry_after))
        return self.delay(attempt, rnd)


@dataclass(frozen=True)
class Pending:
    """One queue row with its event, as the dispatcher sends it."""

    event_id: int
    notifier: str
    msg_id: str
    type: str
    body: str
    attempts: int
    created_at: float


@dataclass(frozen=True)
class NotifierHealth:
    """A notifier's record in the ledger (``watchd status``, the metrics, the dashboard)."""

    name: str
    failing: int  # failed attempts in a row
    gone: bool  # answered 410 Gone: nothing is sent until its config changes
    last_status: str | None
    last_error: str | None
    last_attempt_at: float | None
    last_success_at: float | None
    delivered: int
    failed: int
    waiting: int  # events queued for it


def record(conn: sqlite3.Connection, event: Event, notifiers: Iterable[str], now: float) -> int:
    """Queue ``event`` for each of ``notifiers`` (none: nothing is written). Returns the
    number of rows queued."""
    names = list(notifiers)
    if not names:
        return 0
    cur = conn.execute(
        "INSERT INTO notify_events (msg_id, type, job_id, inbox, at, body) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (event.msg_id, event.type, event.job_id, event.inbox, event.at, event.body),
    )
    event_id = cur.lastrowid
    conn.executemany(
        "INSERT INTO notify_queue (event_id, notifier, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?)",
        [(event_id, name, now, now) for name in names],
    )
    return len(names)


def due(
    ledger: Ledger, notifier: str, now: float, *, exclude: Sequence[int] = (), limit: int = 8
) -> list[Pending]:
    """Rows of ``notifier`` due at ``now``, oldest first, leaving out the events in
    ``exclude`` (in flight)."""
    skip = f" AND q.event_id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    rows = ledger.query(
        "SELECT q.event_id, q.notifier, e.msg_id, e.type, e.body, q.attempts, q.created_at "
        "FROM notify_queue q JOIN notify_events e ON e.id = q.event_id "
        f"WHERE q.notifier = ? AND q.next_attempt_at <= ?{skip} "
        "ORDER BY q.next_attempt_at, q.event_id LIMIT ?",
        (notifier, now, *exclude, limit),
    )
    return [Pending(*r) for r in rows]


def next_due(ledger: Ledger, notifier: str, *, exclude: Sequence[int] = ()) -> float | None:
    skip = f" AND event_id NOT IN ({','.join('?' * len(exclude))})" if exclude else ""
    rows = ledger.query(
        f"SELECT MIN(next_attempt_at) FROM notify_queue WHERE notifier = ?{skip}",
        (notifier, *exclude),
    )
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


def _done(conn: sqlite3.Connection, event_id: int, notifier: str) -> None:
    conn.execute(
        "DELETE FROM notify_queue WHERE event_id = ? AND notifier = ?", (event_id, notifier)
    )
    conn.execute(
        "DELETE FROM notify_events WHERE id = ? AND NOT EXISTS "
        "(SELECT 1 FROM notify_queue WHERE event_id = ?)",
        (event_id, event_id),
    )


def _health(
    conn: sqlite3.Connection,
    notifier: str,
    now: float,
    status: str,
    error: str | None,
    *,
    ok: bool,
    gone: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO notifiers (name, failing, last_status, last_error, last_attempt_at, "
        "last_success_at, delivered, failed, gone_fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET "
        "failing = CASE WHEN excluded.failing = 0 THEN 0 ELSE failing + 1 END, "
        "last_status = excluded.last_status, last_error = excluded.last_error, "
        "last_attempt_at = excluded.last_attempt_at, "
        "last_success_at = COALESCE(excluded.last_success_at, last_success_at), "
        "delivered = delivered + excluded.delivered, failed = failed + excluded.failed, "
        "gone_fingerprint = COALESCE(excluded.gone_fingerprint, gone_fingerprint)",
        (
            notifier,
            0 if ok else 1,
            status,
            error,
            now,
            now if ok else None,
            1 if ok else 0,
            0 if ok else 1,
            gone,
        ),
    )


def delivered(conn: sqlite3.Connection, row: Pending, status: str, now: float) -> None:
    """A 2xx (or exit 0): the row is done."""
    _done(conn, row.event_id, row.notifier)
    _health(conn, row.notifier, now, status, None, ok=True)


def failed(
    conn: sqlite3.Connection,
    row: Pending,
    status: str,
    error: str,
    now: float,
    next_at: float | None,
    *,
    gone: str | None = None,
) -> None:
    """A failed attempt: tried again at ``next_at``, or dropped (given up) when it is None.
    ``gone``: the notifier's fingerprint, when it answered 410 Gone."""
    if next_at is None:
        _done(conn, row.event_id, row.notifier)
    else:
        conn.execute(
            "UPDATE notify_queue SET attempts = attempts + 1, next_attempt_at = ?, "
            "last_status = ?, last_error = ? WHERE event_id = ? AND notifier = ?",
            (next_at, status, error, row.event_id, row.notifier),
        )
    _health(conn, row.notifier, now, status, error, ok=False, gone=gone)


def gone_fingerprints(ledger: Ledger) -> dict[str, str]:
    """Notifier name -> the fingerprint of the config that was answered 410 Gone."""
    rows = ledger.query(
        "SELECT name, gone_fingerprint FROM notifiers WHERE gone_fingerprint IS NOT NULL"
    )
    return {str(n): str(f) for n, f in rows}


def clear_gone(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("UPDATE notifiers SET gone_fingerprint = NULL WHERE name = ?", (name,))


def forget_others(conn: sqlite3.Connection, names: Sequence[str]) -> None:
    """Drop the health records of notifiers no longer configured (``watchd status`` would go
    on showing them as failing); their queued events expire with their give-up time."""
    marks = ",".join("?" * len(names))
    conn.execute(f"DELETE FROM notifiers WHERE name NOT IN ({marks})", tuple(names))


def drop_expired(conn: sqlite3.Connection, before: float) -> int:
    """Rows older than their give-up time that were never answered (a notifier removed from
    the config or gone): dropped, with their events."""
    cur = conn.execute("DELETE FROM notify_queue WHERE created_at < ?", (before,))
    conn.execute(
        "DELETE FROM notify_events WHERE id NOT IN (SELECT DISTINCT event_id FROM notify_queue)"
    )
    return cur.rowcount


def health(ledger: Ledger) -> list[NotifierHealth]:
    """Every notifier the ledger has a record of, by name."""
    try:
        waiting = dict(
            ledger.query("SELECT notifier, COUNT(*) FROM notify_queue GROUP BY notifier")
        )
        rows = ledger.query(
            "SELECT name, failing, gone_fingerprint IS NOT NULL, last_status, last_error, "
            "last_attempt_at, last_success_at, delivered, failed FROM notifiers ORDER BY name"
        )
    except sqlite3.OperationalError:  # a ledger from before the notification tables
        return []
    out = [
        NotifierHealth(
            str(r[0]),
            int(r[1]),
            bool(r[2]),
            r[3],
            r[4],
            r[5],
            r[6],
            int(r[7]),
            int(r[8]),
            waiting=int(waiting.pop(r[0], 0)),
        )
        for r in rows
    ]
    out += [
        NotifierHealth(str(n), 0, False, None, None, None, None, 0, 0, int(c))
        for n, c in waiting.items()
    ]
    return out


def failing_notifiers(ledger: Ledger) -> list[NotifierHealth]:
    """The notifiers whose last attempt failed (or that answered 410 Gone): what ``watchd
    status`` and the dashboard show as needing attention."""
    return [h for h in health(ledger) if h.failing > 0 or h.gone]


def status_lines(ledger: Ledger) -> list[str]:
    """``watchd status``'s lines about notifiers needing attention (none when all is well)."""
    lines = []
    for h in failing_notifiers(ledger):
        what = f"{h.last_status or ''} {h.last_error or ''}".strip()
        if h.gone:
            lines.append(
                f"! NOTIFIER {h.name} answered {what}: stopped until its [[notify]] config "
                f"changes ({h.waiting} event(s) waiting)"
            )
        else:
            lines.append(
                f"! NOTIFIER {h.name} failing: {what} ({h.failing} failed attempt(s) in a row, "
                f"{h.waiting} event(s) waiting)"
            )
    return lines

"""``watchd ledger migrate``: copy this host's SQLite ledger into a PostgreSQL ledger.

Every table the two have in common is copied, in one PostgreSQL transaction (all or nothing),
with the columns they have in common; a table or column only the SQLite ledger has is named in
the result, not copied. Rows keep their keys (job ids, clip ids, inbox paths), and a row whose
key is already there is left as it is: running the copy again copies nothing twice. Events have
no key of their own across hosts: the highest SQLite event id copied is remembered in the
database's ``meta`` table per source ledger, and the next run copies only later ones.

The SQLite file is opened read-only. ``watchd ledger migrate`` holds the daemon's lock
meanwhile (watchd/ledgercmd.py): a daemon running on the ledger would write what the copy
misses (running it again later picks that up).
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from watchd.ledger.pg import PgLedger

# Parents before children (clips and exports reference jobs); events last. ``meta`` holds this
# host's heartbeat and schema marks: not copied.
TABLES = ("jobs", "clips", "exports", "inboxes", "events")
KEYS = {
    "jobs": ("id",),
    "clips": ("job_id", "clip_id"),
    "exports": ("job_id", "clip_id", "format"),
    "inboxes": ("path",),
}
NOT_COPIED = frozenset({"meta", "sqlite_sequence"})


@dataclass
class TableResult:
    table: str
    copied: int = 0
    present: int = 0  # rows whose key was there already
    columns_left: tuple[str, ...] = ()  # SQLite columns the database has no place for


@dataclass
class MigrateResult:
    source: Path
    tables: list[TableResult] = field(default_factory=list)
    tables_left: tuple[str, ...] = ()  # SQLite tables the database does not have

    def lines(self) -> Iterator[str]:
        for t in self.tables:
            there = f", {t.present} already there" if t.present else ""
            yield f"{t.table}: {t.copied} copied{there}"
            if t.columns_left:
                yield f"  not copied (no such column in the database): {', '.join(t.columns_left)}"
        for name in self.tables_left:
            yield f"{name}: not copied (no such table in the database)"


def source_key(path: Path) -> str:
    """The ``meta`` key remembering how far the events of the ledger at ``path`` were copied."""
    return f"migrated-events:{socket.gethostname()}:{path.resolve()}"


def migrate(
    source: Path, target: PgLedger, *, inbox_names: Mapping[str, str] | None = None
) -> MigrateResult:
    """Copy the SQLite ledger at ``source`` into ``target`` (see the module docstring).
    ``inbox_names``: inbox path -> ``[[inbox]] name``, for a cluster's ledger, where jobs name
    their inbox by its name (the same on every host) instead of this host's path."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        result = MigrateResult(source)
        present = {
            r[0]
            for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not r[0].startswith("sqlite_")
        }
        with target.transaction() as conn:
            pg_tables = _pg_columns(conn)
            result.tables_left = tuple(
                sorted(t for t in present - NOT_COPIED if t not in pg_tables)
            )
            for table in TABLES:
                if table in present and table in pg_tables:
                    result.tables.append(
                        _copy(src, conn, table, pg_tables[table], source, inbox_names or {})
                    )
        return result
    finally:
        src.close()


def _pg_columns(conn: psycopg.Connection[Any]) -> dict[str, dict[str, str]]:
    """table -> column -> data type, of the ledger's schema."""
    out: dict[str, dict[str, str]] = {}
    for table, column, kind in conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ):
        out.setdefault(table, {})[column] = kind
    return out


def _coerce(value: Any, kind: str) -> Any:
    """A value SQLite kept with another type than the column's (SQLite is lenient) as
    PostgreSQL's column takes it."""
    if value is None:
        return None
    if kind in ("integer", "bigint", "smallint") and isinstance(value, float):
        return int(value)
    if kind == "double precision" and isinstance(value, int):
        return float(value)
    if kind == "text" and not isinstance(value, str):
        return str(value)
    return value


def _copy(
    src: sqlite3.Connection,
    conn: psycopg.Connection[Any],
    table: str,
    pg_cols: dict[str, str],
    source: Path,
    inbox_names: Mapping[str, str],
) -> TableResult:
    sqlite_cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    events = table == "events"
    cols = [c for c in sqlite_cols if c in pg_cols and not (events and c == "id")]
    result = TableResult(
        table, columns_left=tuple(c for c in sqlite_cols if c not in pg_cols and c != "id")
    )
    where, order = "", ""
    params: Sequence[Any] = ()
    last = 0
    if events:
        row = conn.execute(
            "SELECT value FROM meta WHERE key = %s", (source_key(source),)
        ).fetchone()
        last = int(row[0]) if row else 0
        where, order, params = " WHERE id > ?", " ORDER BY id", (last,)
        top = src.execute("SELECT MAX(id) FROM events").fetchone()[0]
        if top is None or top <= last:
            return result
    # Events bring their SQLite id along into the staging table (not into the ledger's):
    # the database numbers them in the order they happened here.
    staged = ["id", *cols] if events else cols
    kinds = [pg_cols[c] for c in staged]
    column_list = ", ".join(cols)
    conn.execute(f"CREATE TEMP TABLE incoming (LIKE {table}) ON COMMIT DROP")
    total = 0
    with conn.cursor().copy(f"COPY incoming ({', '.join(staged)}) FROM STDIN") as copy:
        for row in src.execute(f"SELECT {', '.join(staged)} FROM {table}{where}{order}", params):
            if events:
                last = max(last, int(row[0]))
            copy.write_row([_coerce(v, k) for v, k in zip(row, kinds, strict=True)])
            total += 1
    if table == "jobs" and inbox_names:
        conn.execute(
            "UPDATE incoming SET inbox = names.name FROM (SELECT unnest(%s::text[]) AS path, "
            "unnest(%s::text[]) AS name) AS names WHERE incoming.inbox = names.path",
            (list(inbox_names), list(inbox_names.values())),
        )
    if events:
        cur = conn.execute(
            f"INSERT INTO events ({column_list}) SELECT {column_list} FROM incoming ORDER BY id"
        )
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (source_key(source), str(last)),
        )
    else:
        # A row whose key is there is left as it is; so is an unfinished job whose file
        # another host has taken already (the one active job per file identity).
        cur = conn.execute(
            f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM incoming "
            "ON CONFLICT DO NOTHING"
        )
    conn.execute("DROP TABLE incoming")
    result.copied = max(cur.rowcount, 0)
    result.present = total - result.copied
    return result

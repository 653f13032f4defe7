"""8b. The PostgreSQL ledger's cost: daemon CPU and database round trips per file, against SQLite.

The same burst (small files, one clip rendered each, an emulator with no limits that works
inside its requests) runs through one daemon on its SQLite ledger and one daemon with
``[cluster]`` on a PostgreSQL ledger (the tests' throwaway server on loopback, tests/pg.py),
alternately, in the same run. CPU is the daemon process's (``/proc``, user + system, its
threads and psycopg's included; the server's own is not), from READY to the last manifest.
Round trips are counted by a TCP proxy between the daemon and the server (bench/pgproxy.py): a
client message followed by the server's answer is one, so pipelined statements count once;
lease renewals, heartbeats and polls during the burst count too.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg

from bench.common import Options, Report, Sample, Table, brief, median, spread
from bench.pgproxy import CountingProxy
from bench.rig import BASE_CARMIC, emulator, pg_database, pg_server, sample_video, unique_copy
from tests.e2e.cluster import Cluster

NAME = "ledgercost"
TITLE = "PostgreSQL ledger cost: daemon CPU and round trips per file, vs SQLite"
FILES, QUICK_FILES = 200, 20
CPU_RATIO_TARGET = 1.5
ROUND_TRIPS_TARGET = 30
INBOX: dict[str, Any] = {"render": {"min_score": 0, "max_clips": 1}}
# Which statements the round trips are: the server counts each statement's calls.
STATS = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
TOP = 15


def burst_once(
    work: Path, sample: Path, n: int, database: str | None, proxy: CountingProxy | None, tag: str
) -> dict[str, Any]:
    files = [unique_copy(sample, work / f"staging-{tag}" / f"{tag}-{i:04d}.mp4", tag + str(i))
             for i in range(n)]  # fmt: skip
    with ExitStack() as stack:
        emu = stack.enter_context(emulator())
        rig = Cluster(work / f"rig-{tag}", emu, database, names=("h1",), lease_seconds=60)
        rig.configure(
            carmic=BASE_CARMIC,
            daemon={"settle_seconds": 0.5, "rescan_seconds": 300},
            inbox=INBOX,
        )
        stack.callback(rig.kill_all)
        rig.start()
        pid = rig.pid("h1")
        if database is not None:
            statements(database, reset=True)
        if proxy is not None:
            proxy.reset()
        idle = Sample.of(pid)
        rig.drop_all(files)
        rig.wait_delivered([f.name for f in files], timeout=30 * 60)
        end = Sample.of(pid)
        counts = proxy.snapshot() if proxy is not None else None
        top = statements(database) if database is not None else []
        rig.stop()
    return {
        "cpu_ms": (end.cpu - idle.cpu) / n * 1000,
        "wall": end.t - idle.t,
        "round_trips": counts.round_trips / n if counts else float("nan"),
        "connections": counts.connections if counts else float("nan"),
        "kib": (counts.bytes_up + counts.bytes_down) / n / 1024 if counts else float("nan"),
        "statements": sum(calls for calls, _ in top) / n,
        "top": [(calls / n, query) for calls, query in top[:TOP]],
    }


def statements(url: str, *, reset: bool = False) -> list[tuple[int, str]]:
    """(calls, text) of every statement pg_stat_statements saw on ``url``'s database, most
    called first (or, with ``reset``, forget them all)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            conn.execute("SELECT pg_stat_statements_reset()")
            return []
        rows = conn.execute(
            "SELECT calls, query FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC"
        ).fetchall()
    return [(int(calls), " ".join(str(query).split())) for calls, query in rows]


def run(opts: Options) -> Report:
    report = Report(NAME, TITLE)
    work = opts.scratch(NAME)
    n = QUICK_FILES if opts.quick else FILES
    runs = 1 if opts.quick else min(3, opts.runs)
    sample = sample_video(work)
    results: dict[str, list[dict[str, Any]]] = {"SQLite": [], "PostgreSQL": []}
    with pg_server(STATS) as server, CountingProxy(server.port) as proxy:
        for k in range(runs):  # alternately, so that the machine's drift hits both alike
            results["SQLite"].append(burst_once(work, sample, n, None, None, f"s{k}"))
            # A fresh database per run: each starts from an empty ledger, as SQLite does.
            try:
                with pg_database(server) as url:
                    pg = burst_once(work, sample, n, proxy.url(url), proxy, f"p{k}")
            except Exception as e:  # reported, so that the SQLite figures still come out
                report.notes.append(f"PostgreSQL run {k + 1} failed: {brief(e)}")
                continue
            results["PostgreSQL"].append(pg)
    table = Table(
        ["ledger", "runs", "CPU ms/file", "(range)", "wall s", "round trips/file", "(range)",
         "statements/file", "new connections", "KiB/file on the wire"],
        title=f"{n} files, one clip each, one daemon, alternating runs",
    )  # fmt: skip
    for ledger, rs in results.items():
        if not rs:
            continue
        table.add(
            ledger,
            len(rs),
            median(r["cpu_ms"] for r in rs),
            spread([r["cpu_ms"] for r in rs]),
            median(r["wall"] for r in rs),
            median(r["round_trips"] for r in rs) if ledger == "PostgreSQL" else "-",
            spread([r["round_trips"] for r in rs]) if ledger == "PostgreSQL" else "-",
            median(r["statements"] for r in rs) if ledger == "PostgreSQL" else "-",
            median(r["connections"] for r in rs) if ledger == "PostgreSQL" else "-",
            median(r["kib"] for r in rs) if ledger == "PostgreSQL" else "-",
        )
    report.tables.append(table)
    if results["PostgreSQL"]:
        top = Table(["statement (pg_stat_statements, the last run)", "calls per file"],
                    title="the most called statements")  # fmt: skip
        for calls, query in results["PostgreSQL"][-1]["top"]:
            top.add(_short(query), calls)
        report.tables.append(top)
    sqlite_ms = median(r["cpu_ms"] for r in results["SQLite"])
    pg_ms = median(r["cpu_ms"] for r in results["PostgreSQL"])
    trips = median(r["round_trips"] for r in results["PostgreSQL"])
    report.check(
        "daemon CPU per file, PostgreSQL / SQLite",
        f"{pg_ms / sqlite_ms:.2f}x ({pg_ms:.1f} / {sqlite_ms:.1f} ms)",
        f"<= {CPU_RATIO_TARGET}x",
        pg_ms / sqlite_ms <= CPU_RATIO_TARGET,
    )
    report.check(
        "database round trips per file",
        f"{trips:.1f}",
        f"<= {ROUND_TRIPS_TARGET}",
        trips <= ROUND_TRIPS_TARGET,
    )
    report.notes.append(
        "Round trips: a TCP proxy between the daemon and PostgreSQL counts each answer that "
        "follows a client message (pipelined statements count once); everything the daemon "
        "sends during the burst counts, lease renewals and heartbeats included. Statements: "
        "pg_stat_statements (track = all: those run inside functions too) over the same span."
    )
    return report


def _short(query: str, width: int = 90) -> str:
    query = query.replace("|", "\\|")  # a markdown table cell
    return query if len(query) <= width else query[: width - 3] + "..."

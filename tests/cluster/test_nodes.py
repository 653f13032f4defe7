"""watchd.cluster.nodes and open: the nodes table read on the database's clock, and the shared
ledger opened with one clear line when it cannot be."""

from __future__ import annotations

import psycopg
import pytest

from tests.cluster.helpers import add_job, add_node, hold
from tests.pg import PgServer
from watchd.cluster.nodes import LIVE, STALE, STOPPED, nodes, other_live_daemon
from watchd.cluster.open import (
    DatabaseUnreachable,
    SchemaNewer,
    SchemaOlder,
    open_jobs,
    open_shared,
    usable_schema,
)
from watchd.cluster_config import ClusterConfig
from watchd.ledger.pg import PG_MIGRATIONS, PgLedger
from watchd.ledger.states import Stage
from watchd.secrets import Secret


def test_nodes_live_stale_stopped_and_jobs_held(pg_url: str) -> None:
    pg = PgLedger(pg_url)
    assert nodes(pg) == []
    add_node(pg_url, "suite-1", "ingest-1", age=3)
    add_node(pg_url, "suite-2", "ingest-2", age=90, pid=12)  # silent past its 60 s lease
    add_node(pg_url, "suite-4", "edit-4", age=30, lease=20)  # its own, shorter lease
    add_node(pg_url, "suite-5", "edit-5", age=1, stopped=True)
    held = [add_job(pg, f"a{i}.mp4") for i in range(4)]
    hold(pg_url, held[0].id, "suite-1")
    hold(pg_url, held[1].id, "suite-1")
    hold(pg_url, held[2].id, "suite-1", seconds=-5)  # lapsed: free for the others
    hold(pg_url, held[3].id, "suite-2")
    pg.transition(held[1].id, Stage.FAILED, error="x")  # finished: not held any more
    rows = {n.name: n for n in nodes(pg)}
    assert list(rows) == ["suite-1", "suite-2", "suite-4", "suite-5"]
    one = rows["suite-1"]
    assert (one.host, one.pid, one.inboxes, one.lease_seconds) == (
        "ingest-1",
        4711,
        ("studio-a",),
        60.0,
    )
    assert 3 <= one.heartbeat_age < 30
    assert one.heartbeat_at - one.started_at == pytest.approx(3600 - 3, abs=30)
    assert [(n.name, n.state, n.jobs_held) for n in rows.values()] == [
        ("suite-1", LIVE, 1),
        ("suite-2", STALE, 1),  # still holds a lease until it runs out
        ("suite-4", STALE, 0),
        ("suite-5", STOPPED, 0),
    ]
    assert rows["suite-5"].stopped_at is not None
    all_rows = list(rows.values())
    assert other_live_daemon(all_rows, "suite-1", "ingest-1") is None  # this host's own
    assert other_live_daemon(all_rows, "suite-1", "edit-9") == one
    assert other_live_daemon(all_rows, "suite-2", "edit-9") is None  # stale
    pg.close()


def test_open_shared_migrates_and_readonly_does_not(pg_url: str) -> None:
    cluster = ClusterConfig(pg_url, "suite-3")
    reader = open_shared(cluster, readonly=True)
    assert usable_schema(reader, cluster.shown) == 0
    assert open_jobs(cluster) is None  # no daemon has created the tables yet
    pg = open_shared(cluster)
    assert usable_schema(reader, cluster.shown) == len(PG_MIGRATIONS)
    jobs = open_jobs(cluster)
    assert jobs is not None and jobs.jobs() == []
    for lg in (reader, pg, jobs):
        lg.close()


def test_an_older_or_newer_schema_says_what_to_do(pg_url: str) -> None:
    cluster = ClusterConfig(pg_url, "suite-3")
    open_shared(cluster).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE watchd_schema SET version = 2")
        with pytest.raises(SchemaOlder, match=r"version 2, older than .*`watchd run` starts"):
            open_jobs(cluster)
        conn.execute("UPDATE watchd_schema SET version = 99")
        with pytest.raises(SchemaNewer, match=r"version 99, newer .*: upgrade watchd"):
            open_jobs(cluster)
        with pytest.raises(SchemaNewer):
            open_shared(cluster)  # the daemon's open refuses it too


def test_unreachable_is_one_line_without_either_password(pg_server: PgServer) -> None:
    port = pg_server.port + 1  # nothing listens there
    in_url = ClusterConfig(f"postgresql://watchd:Url-pw-1234@127.0.0.1:{port}/watchd", "n")
    in_file = ClusterConfig(
        f"postgresql://watchd@127.0.0.1:{port}/watchd", "n", password=Secret("File-pw-1234")
    )
    for cluster in (in_url, in_file):
        with pytest.raises(DatabaseUnreachable) as info:
            open_shared(cluster, connect_timeout=1)
        text = str(info.value)
        assert "\n" not in text and "Url-pw-1234" not in text and "File-pw-1234" not in text
        assert f"cannot connect to the ledger database {cluster.shown}" in text

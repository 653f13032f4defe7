"""The operator commands with ``[cluster]``: ``status`` (every host's jobs from the shared
ledger with their node, the nodes table, this host's own entries), ``retry``/``forget`` on the
shared ledger and ``check`` of the database, through the real ``watchd`` entry point; other
hosts are rows written into the database."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.carmic.fakeapi import API, EMAIL, FakeApi, ok
from tests.cluster.helpers import NODE, add_job, add_node, cluster_doc, hold
from tests.pg import PgServer
from tests.test_checkcmd import ENV, over
from tests.test_config import base_doc, write
from watchd.checkcmd import check
from watchd.cluster_config import default_node
from watchd.ledger.db import EntryRow, Ledger
from watchd.ledger.pg import PG_MIGRATIONS, PgLedger
from watchd.ledger.states import Stage
from watchd.status_view import render_json

URL_PW, FILE_PW = "Url-s3cret-pw", "File-s3cret-pw"


def watchd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchd", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def shared(pg_url: str) -> Iterator[PgLedger]:
    pg = PgLedger(pg_url)
    yield pg
    pg.close()


def local_ledger(site: Path) -> Ledger:
    """This host's SQLite ledger, as its daemon leaves it: a heartbeat, a file settling, and a
    job from before [cluster] (not shown: the cluster's jobs are in the shared ledger)."""
    ledger = Ledger.open(site / "state")
    ledger.heartbeat(4242)
    entry = EntryRow("studio-a", "new.mp4", str(site / "inbox" / "new.mp4"), "", "settling",
                     None, None, 0, ledger.clock.now(), 5.0, 10, ledger.clock.now())  # fmt: skip
    ledger.sync_entries([entry], [])
    ledger.add_job(
        inbox=str(site / "inbox"), rel_path="old.mp4", path=str(site / "inbox" / "old.mp4"),
        rule="", preset={}, size=1, mtime_ns=1, inode=1, dev=1, fingerprint="old",
    )  # fmt: skip
    return ledger


# ---- status ----------------------------------------------------------------------------------


def test_status_shows_every_hosts_jobs_with_their_node(
    tmp_path: Path, pg_url: str, shared: PgLedger
) -> None:
    local_ledger(tmp_path).close()
    add_node(pg_url, "suite-1", "ingest-1", age=3)
    add_node(pg_url, "suite-2", "ingest-2", age=600, pid=77)
    taken = add_job(shared, "podcasts/ep1.mp4")
    hold(pg_url, taken.id, "suite-1")
    waiting = add_job(shared, "podcasts/ep2.mp4")
    cfg = write(tmp_path, cluster_doc(tmp_path, pg_url))

    r = watchd("status", "--json", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(e["id"], e["source"], e["node"]) for e in rows] == [
        (taken.id, "podcasts/ep1.mp4", "suite-1"),
        (waiting.id, "podcasts/ep2.mp4", None),  # no node has taken it yet
        (None, "new.mp4", None),  # this host's file settling, from its own ledger
    ]

    r = watchd("status", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("this host's daemon: ")  # from its own ledger
    assert lines[1].startswith("2 queued, 0 uploading")
    start = lines.index("NODE     HOST      HEARTBEAT  JOBS  STATE")
    assert re.fullmatch(r"suite-1  ingest-1  +\d+s ago     1  live", lines[start + 1])
    assert re.fullmatch(r"suite-2  ingest-2  +10m ago     0  stale", lines[start + 2])
    table = lines.index(next(line for line in lines if line.startswith("ID ")))
    assert lines[table].split()[:3] == ["ID", "STATE", "NODE"]
    assert lines[table + 1].split()[:3] == [taken.id, "queued", "suite-1"]
    assert lines[table + 2].split()[:3] == [waiting.id, "queued", "-"]
    assert "old.mp4" not in r.stdout
    assert "settling     new.mp4" in r.stdout


def test_status_before_any_daemon_started_on_the_database(tmp_path: Path, pg_url: str) -> None:
    cfg = write(tmp_path, cluster_doc(tmp_path, pg_url))
    r = watchd("status", "--json", "-c", str(cfg))
    assert (r.returncode, r.stdout.strip()) == (0, "[]")
    r = watchd("status", "-c", str(cfg))
    assert r.returncode == 0 and r.stdout.startswith("no ledger yet: no daemon has started on")


def test_one_host_elements_name_this_host(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    ledger = local_ledger(tmp_path)
    rows = json.loads(render_json(ledger))
    assert [(e["source"], e["node"]) for e in rows] == [
        ("old.mp4", default_node()),
        ("new.mp4", None),
    ]
    ledger.close()


def unreachable(tmp_path: Path, pg_server: PgServer, where: str) -> Path:
    """A config whose database nothing answers, its password in the URL or in a file."""
    secret = tmp_path / "db-password"
    secret.write_text(FILE_PW + "\n")
    secret.chmod(0o600)
    port = pg_server.port + 1
    if where == "url":
        doc = cluster_doc(tmp_path, f"postgresql://watchd:{URL_PW}@127.0.0.1:{port}/watchd")
    else:
        doc = cluster_doc(
            tmp_path, f"postgresql://watchd@127.0.0.1:{port}/watchd", password_file=str(secret)
        )
    return write(tmp_path, doc)


@pytest.mark.parametrize("where", ["url", "password_file"])
def test_an_unreachable_database_is_one_line_and_exit_3(
    tmp_path: Path, pg_server: PgServer, where: str
) -> None:
    cfg = unreachable(tmp_path, pg_server, where)
    for args in (["status"], ["status", "--json"], ["retry", "j1"], ["forget", "j1"], ["check"]):
        r = watchd(*args, "-c", str(cfg))
        assert r.returncode == 3, (args, r.stderr)
        assert len(r.stderr.splitlines()) == 1, r.stderr
        assert "cannot connect to the ledger database postgresql://watchd" in r.stderr
        for secret in (URL_PW, FILE_PW):
            assert secret not in r.stderr + r.stdout


def test_a_newer_schema_is_refused_with_what_to_do(
    tmp_path: Path, pg_url: str, shared: PgLedger
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE watchd_schema SET version = 99")
    cfg = write(tmp_path, cluster_doc(tmp_path, pg_url))
    for args in (["status"], ["retry", "j1"], ["check"]):
        r = watchd(*args, "-c", str(cfg))
        assert r.returncode == 2, args
        assert r.stderr.endswith(
            f"newer than this watchd knows ({len(PG_MIGRATIONS)}): upgrade watchd on this host\n"
        )


# ---- retry and forget --------------------------------------------------------------------------


def test_retry_and_forget_act_on_the_shared_ledger(
    tmp_path: Path, pg_url: str, shared: PgLedger
) -> None:
    failed = add_job(shared, "a.mp4")
    hold(pg_url, failed.id, "suite-1", seconds=-1)
    shared.transition(failed.id, Stage.FAILED, error="boom", error_code="x")
    delivered = add_job(shared, "b.mp4")
    with psycopg.connect(pg_url, autocommit=True) as conn:  # delivered by another host
        conn.execute("UPDATE jobs SET state = 'delivered' WHERE id = %s", (delivered.id,))
    cfg = write(tmp_path, cluster_doc(tmp_path, pg_url))

    r = watchd("retry", failed.id, "-c", str(cfg))  # the rule's current preset, by inbox name
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{failed.id}: back in the queue at queued; ")
    assert shared.require(failed.id).stage is Stage.QUEUED
    r = watchd("retry", "--keep-preset", delivered.id, "jnope", "-c", str(cfg))
    assert r.returncode == 1
    assert "only failed or parked jobs can be retried" in r.stderr
    assert "unknown job jnope" in r.stderr

    r = watchd("forget", delivered.id, "-c", str(cfg))
    assert (r.returncode, r.stdout) == (0, f"{delivered.id}: forgotten\n")
    assert shared.get(delivered.id) is None
    r = watchd("forget", failed.id, "-c", str(cfg))
    assert r.returncode == 1 and "only delivered or failed jobs" in r.stderr


def test_retry_before_any_daemon_started_is_unknown(tmp_path: Path, pg_url: str) -> None:
    r = watchd("retry", "j1", "-c", str(write(tmp_path, cluster_doc(tmp_path, pg_url))))
    assert r.returncode == 1 and "unknown job j1" in r.stderr


# ---- check ---------------------------------------------------------------------------------------


@pytest.fixture
def api() -> FakeApi:
    fake = FakeApi()
    fake.routes[("GET", "/v1/projects/caption-templates")] = lambda r: ok([{"id": "HORMOZI"}])
    return fake


def online(tmp_path: Path, database: str, api: FakeApi, **cluster: Any) -> tuple[int, str, str]:
    doc = cluster_doc(tmp_path, database, **cluster)
    doc["carmic"] = {"api_url": API, "email": EMAIL}
    out, err = io.StringIO(), io.StringIO()
    code = check(write(tmp_path, doc), False, out, err=err, env=ENV, client_factory=over(api))
    return code, out.getvalue(), err.getvalue()


def test_check_online_ok(tmp_path: Path, pg_url: str, shared: PgLedger, api: FakeApi) -> None:
    add_node(pg_url, "suite-1", "ingest-1")
    add_node(pg_url, NODE, "old-host", age=600)  # this name's last daemon is gone: reusable
    url = pg_url.replace("postgres@", f"postgres:{URL_PW}@")  # trust: the password is unused
    code, out, err = online(tmp_path, url, api)
    assert code == 0, err
    assert f"cluster  node {NODE} on {pg_url.replace('postgres@', 'postgres:***@')}; " in out
    assert "; lease 60 s; password: in the URL" in out
    assert "  name    studio-a (its identity, the same on every host)" in out
    line = next(line for line in out.splitlines() if line.startswith("database OK"))
    assert f", schema version {len(PG_MIGRATIONS)} (current); live nodes: suite-1" in line
    assert out.splitlines()[-1] == "config OK, login OK"
    assert URL_PW not in out + err


def test_check_an_older_schema_is_brought_up_to_date_at_start(
    tmp_path: Path, pg_url: str, shared: PgLedger, api: FakeApi
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE watchd_schema SET version = 2")
    code, out, err = online(tmp_path, pg_url, api)
    assert code == 0, err
    older = f"schema version 2, older than this watchd's ({len(PG_MIGRATIONS)}): it is brought"
    assert older in out
    code, out, err = online(tmp_path, pg_url.rsplit("/", 1)[0] + "/postgres", api)
    assert code == 0 and "no tables yet: `watchd run` creates them at start" in out


def test_check_a_node_name_a_live_daemon_uses_elsewhere(
    tmp_path: Path, pg_url: str, shared: PgLedger, api: FakeApi
) -> None:
    add_node(pg_url, NODE, "edit-7", pid=5150, age=4)
    secret = tmp_path / "db-password"
    secret.write_text(FILE_PW + "\n")
    secret.chmod(0o600)
    doc = cluster_doc(tmp_path, pg_url, password_file=str(secret))
    r = watchd("check", "-c", str(write(tmp_path, doc)))
    assert r.returncode == 2
    assert re.fullmatch(
        f'cluster.node: "{NODE}" is the name of a live daemon on host edit-7 \\(pid 5150, '
        r"heartbeat \d+s ago\): give each host a node name of its own\n",
        r.stderr,
    ), r.stderr
    assert FILE_PW not in r.stdout + r.stderr
    assert f"password: password_file {secret}" in r.stdout
    # The same name on this very host is this host's own daemon, running beside `check`.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE nodes SET host = %s", (socket.gethostname(),))
    code, out, err = online(tmp_path, pg_url, api)
    assert code == 0, err
    assert f"live nodes: {NODE}" in out


def test_check_offline_does_not_contact_the_database(tmp_path: Path, pg_server: PgServer) -> None:
    cfg = unreachable(tmp_path, pg_server, "url")
    r = watchd("check", "--offline", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "nor the cluster's database" in r.stdout
    assert r.stdout.splitlines()[-1] == "config OK"
    assert URL_PW not in r.stdout + r.stderr


def test_one_host_check_says_nothing_of_a_cluster(tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    (tmp_path / "password").write_text("pw-12345\n")
    (tmp_path / "password").chmod(0o600)
    r = watchd("check", "--offline", "-c", str(write(tmp_path, base_doc(tmp_path))))
    assert r.returncode == 0, r.stderr
    assert "cluster" not in r.stdout and "name    " not in r.stdout

"""What only the PostgreSQL ledger has: migrations shared by hosts starting together, refusing a
newer schema, a connection failure that names the database without its password, and event ids
that commit out of order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.pg import PgServer
from watchd.ledger.dsn import check_dsn, redact_dsn
from watchd.ledger.pg import FORGET_LOCK, PG_MIGRATIONS, PgLedger
from watchd.ledger.states import Stage
from watchd.redact import redact


def test_hosts_starting_together_migrate_once(pg_url: str) -> None:
    ledgers: list[PgLedger] = []
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def open_one() -> None:
        start.wait()
        try:
            ledgers.append(PgLedger(pg_url))
        except BaseException as e:  # pragma: no cover - the race this guards
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {lg.schema_version() for lg in ledgers} == {len(PG_MIGRATIONS)}
    job = ledgers[0].add_job(
        inbox="/in", rel_path="a.mp4", path="/in/a.mp4", rule="", preset={}, size=1,
        mtime_ns=1, inode=1, dev=1, fingerprint="f",
    )  # fmt: skip
    assert ledgers[5].require(job.id).stage is Stage.QUEUED  # one database, seen by all
    for lg in ledgers:
        lg.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM watchd_schema").fetchall() == [
            (len(PG_MIGRATIONS),)
        ]


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PgLedger(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE watchd_schema SET version = 999")
    with pytest.raises(Exception, match="schema version 999, newer than this watchd knows"):
        PgLedger(pg_url)
    reader = PgLedger(pg_url, readonly=True)
    assert reader.schema_version() == 999
    reader.close()


def test_an_unreachable_database_is_named_without_its_password(pg_server: PgServer) -> None:
    url = f"postgresql://watchd:s3cr3t-pw@127.0.0.1:{pg_server.port + 1}/watchd"
    with pytest.raises(Exception, match="cannot connect to the ledger database") as info:
        PgLedger(url, connect_timeout=1)
    assert "s3cr3t-pw" not in str(info.value)
    assert f"postgresql://watchd:***@127.0.0.1:{pg_server.port + 1}/watchd" in str(info.value)


def test_dsn_checks_and_redaction() -> None:
    assert check_dsn("postgresql://watchd@db.example.com:5432/watchd") is None
    assert check_dsn("postgres://db/watchd?sslmode=require") is None
    assert "postgresql:// URL" in (check_dsn("mysql://db/x") or "")
    assert "name the database" in (check_dsn("postgresql://db.example.com") or "")
    assert "valid URL" in (check_dsn("postgresql://db:notaport/x") or "")
    problem = check_dsn("mysql://u:hunter2-pw@db/x") or ""
    assert "hunter2-pw" not in problem and "u:***@db" in problem
    # The password is a registered secret from then on: scrubbed from any log line.
    assert "hunter2-pw" not in redact("connecting with hunter2-pw")
    assert redact_dsn("postgresql://db/x?password=abc") == "postgresql://db/x?<redacted>"
    assert redact_dsn("postgresql://db:x/y") == "<unparseable database URL>"


def _add(lg: PgLedger, rel: str, *, failed: bool = False) -> str:
    jid = lg.add_job(
        inbox="/in", rel_path=rel, path=f"/in/{rel}", rule="", preset={}, size=1, mtime_ns=1,
        inode=1, dev=1, fingerprint=rel,
    ).id  # fmt: skip
    if failed:
        lg.transition(jid, Stage.FAILED)
    return jid


@pytest.fixture
def handles(pg_url: str) -> Iterator[list[PgLedger]]:
    """Three handles on one database, as three hosts (or a host and the CLI) hold them."""
    opened = [PgLedger(pg_url) for _ in range(3)]
    yield opened
    for lg in opened:
        lg.close()


def _forget_held_open(lg: PgLedger, job_id: str) -> tuple[threading.Thread, threading.Event]:
    """A forget whose event id is drawn and whose commit waits until the event returned is
    set."""
    drawn, commit = threading.Event(), threading.Event()

    def forget() -> None:
        with lg.batch():
            lg.forget(job_id)
            drawn.set()
            commit.wait(30)

    thread = threading.Thread(target=forget)
    thread.start()
    assert drawn.wait(30)
    return thread, commit


def _waits_for_forget_lock(url: str, thread: threading.Thread) -> None:
    """Until ``thread`` ends or waits for FORGET_LOCK (which it must not get: it is held)."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 30
        while thread.is_alive() and time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND (classid::bigint << 32 | objid::bigint) = %s",
                (FORGET_LOCK,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.01)


def test_a_first_look_does_not_read_past_a_forget_under_way(
    handles: list[PgLedger], pg_url: str
) -> None:
    """A forget draws its event's id, another host's event draws a larger one and commits, a
    daemon starting then reads the largest id: the forget, committed after it, must still be
    told. The first look waits for forgets under way instead of reading past them."""
    cli, other, daemon = handles
    forgotten, noted = _add(cli, "a.mp4", failed=True), _add(cli, "b.mp4")
    forgetter, commit = _forget_held_open(cli, forgotten)
    other.record_event(noted, "note")
    looked: list[int] = []
    looker = threading.Thread(target=lambda: looked.append(daemon.forgotten_since(None)[0]))
    looker.start()
    _waits_for_forget_lock(pg_url, looker)
    told_before_commit = not looker.is_alive()
    commit.set()
    forgetter.join(30)
    looker.join(30)
    gone = daemon.forgotten_since(looked[0])[1]
    if told_before_commit:
        assert gone == [("/in", "a.mp4", 1, 1)]
    else:
        assert looked[0] >= cli.events(forgotten)[-1].id and gone == []


def test_forgets_commit_in_the_order_of_their_event_ids(
    handles: list[PgLedger], pg_url: str
) -> None:
    """Two forgets at once: the one drawing the larger id must not commit first, or a daemon
    reading then moves past the smaller one before it is visible."""
    first, second, daemon = handles
    a, b = _add(first, "a.mp4", failed=True), _add(first, "b.mp4", failed=True)
    after, _ = daemon.forgotten_since(None)
    holder, commit = _forget_held_open(first, a)
    later = threading.Thread(target=second.forget, args=(b,))
    later.start()
    _waits_for_forget_lock(pg_url, later)
    after, told = daemon.forgotten_since(after)
    commit.set()
    holder.join(30)
    later.join(30)
    told += daemon.forgotten_since(after)[1]
    assert sorted(told) == [("/in", "a.mp4", 1, 1), ("/in", "b.mp4", 1, 1)]


def test_the_fixture_restarts_its_server_on_the_same_port() -> None:
    """The end-to-end tests restart the database under running daemons with this."""
    from tests.pg import running_server

    with running_server() as server:
        conn = psycopg.connect(server.url(), autocommit=True)
        conn.execute("CREATE TABLE kept (x int)")
        server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")  # the old connection died with the server
        with psycopg.connect(server.url()) as again:
            assert again.execute("SELECT count(*) FROM kept").fetchone() == (0,)

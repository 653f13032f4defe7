"""What only the PostgreSQL ledger has: migrations shared by hosts starting together, refusing a
newer schema, and a connection failure that names the database without its password."""

from __future__ import annotations

import threading

import psycopg
import pytest

from tests.pg import PgServer
from watchd.ledger.dsn import check_dsn, redact_dsn
from watchd.ledger.pg import PG_MIGRATIONS, PgLedger
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

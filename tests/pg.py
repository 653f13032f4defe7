"""A throwaway PostgreSQL server for the test session, and a fresh database per test.

Debian's ``postgresql`` package (``make test`` installs it) puts ``initdb`` and ``pg_ctl`` in
``/usr/lib/postgresql/<version>/bin``, off PATH. PostgreSQL refuses to run as root, so as root
both run as the ``postgres`` user (``runuser``) in a temporary folder that user owns. The
server listens on a free loopback port with trust authentication, and trades durability for
speed (``initdb --no-sync``, ``fsync = off``): a test never survives a power cut.

The server starts when a test first asks for it and stops at the end of the session. Without
PostgreSQL the tests that need it are skipped with the reason, except under CI (``$CI`` set),
where a missing server is a failure: there ``make test`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port

START_TIMEOUT = 60


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    folder: Path
    # How to stop and start it again (tests that restart the database under running daemons).
    bindir: Path | None = None
    options: str = ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def _pg_ctl(self, *args: str) -> None:
        assert self.bindir is not None, "this server was not started by running_server()"
        data = self.folder / "data"
        argv = [str(self.bindir / "pg_ctl"), "-D", str(data), *args]
        done = subprocess.run(
            _as_server_user(argv), capture_output=True, timeout=START_TIMEOUT + 5, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
            )

    def stop(self) -> None:
        """Stop the server, cutting every client's connection (``-m fast``). Not
        ``immediate``, a crash: this server commits without waiting for its WAL
        (``synchronous_commit = off``), so a crash would lose the last commits, which a real
        server (``synchronous_commit = on``) keeps."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start it again on the same port, with the same data; returns once it accepts
        connections."""
        log = str(self.folder / "server.log")
        self._pg_ctl("-l", log, "-o", self.options, "-w", "-t", str(START_TIMEOUT), "start")

    def restart(self) -> None:
        """A restart: every client loses its connections and must reconnect."""
        self.stop()
        self.start()


def find_bindir() -> Path | None:
    """The newest installed server's bin folder (``pg_config --bindir`` names the client's)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as a user PostgreSQL accepts: ours, or ``postgres`` when we are root."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (under CI, `make test` installs the postgresql package)")
    pytest.skip(f"{reason}: install it with `make sysdeps` or `apt-get install postgresql`")


@contextlib.contextmanager
def running_server(extra_options: str = "") -> Iterator[PgServer]:
    """A server for as long as the context lasts; ``extra_options`` are more ``-c name=value``
    settings (a benchmark loads pg_stat_statements)."""
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[cluster]')")
    bindir = find_bindir()
    if bindir is None:
        _unavailable("PostgreSQL is not installed (no initdb)")
        raise AssertionError  # unreachable: skip/fail raise
    if os.geteuid() == 0:
        try:
            server_user = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("no postgres user to run the server as")
            raise AssertionError from None
    # Not under pytest's tmp_path: its parents are private to root, the server user must
    # reach the folder.
    folder = Path(tempfile.mkdtemp(prefix="watchd-pg-"))
    if os.geteuid() == 0:
        os.chown(folder, server_user.pw_uid, server_user.pw_gid)
    data = folder / "data"
    initdb = _as_server_user(
        [
            str(bindir / "initdb"),
            "--no-sync",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-instructions",
            "-U",
            "postgres",
            "-D",
            str(data),
        ]
    )
    port = free_port()
    options = (
        f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections=200 {extra_options}"
    ).strip()
    pg_ctl = str(bindir / "pg_ctl")
    log = folder / "server.log"
    start = _as_server_user(
        [
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT),
            "start",
        ]
    )
    stop = _as_server_user([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
    started = False
    try:
        subprocess.run(initdb, check=True, capture_output=True, timeout=START_TIMEOUT)
        subprocess.run(start, check=True, capture_output=True, timeout=START_TIMEOUT + 5)
        started = True
        yield PgServer("127.0.0.1", port, "postgres", folder, bindir, options)
    except subprocess.CalledProcessError as e:
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(
            f"{' '.join(e.cmd)} failed: {e.stderr.decode(errors='replace')}\n{tail}"
        ) from None
    finally:
        if started:  # a test may have stopped it already: then this fails, harmlessly
            subprocess.run(stop, capture_output=True, timeout=START_TIMEOUT)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: PgServer) -> Iterator[str]:
    """A new empty database for one test (its URL), dropped afterwards."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(server.url(), autocommit=True) as conn:
        # FILE_COPY (PostgreSQL >= 15) copies the template's files instead of logging each
        # block: several times faster for a small database.
        strategy = " STRATEGY file_copy" if conn.info.server_version >= 150000 else ""
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
    try:
        yield server.url(name)
    finally:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    yield from fresh_database(pg_server)

"""The test rig of the benchmarks: the bundled emulator in this process, ``watchd run`` as a
subprocess (the end-to-end tests' :class:`tests.e2e.harness.Env`), and input files.

Inputs are real videos, made unique cheaply: one short MP4 is generated once and every copy
gets a different trailing MP4 ``free`` box, which players and the daemon's probe skip but which
changes the content fingerprint (so no copy is taken for a duplicate of another). Large inputs
are the same video padded with a sparse ``free`` box: valid, any size, no disk space used.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import tomli_w

from bench.common import wait_until
from tests.e2e.harness import Env
from tests.e2e.harness import padded_video as padded_video  # inputs, shared with the tests
from tests.e2e.harness import unique_copy as unique_copy
from tests.pg import PgServer
from watchd.emulator import Emulator, EmulatorSettings, Timings
from watchd.media import make_sample_video

# Work inside the API requests (0 timings), no limits on logins: the daemon is what is measured.
FAST = EmulatorSettings(
    port=0,
    storage_port=0,
    inspect=True,
    auth_rate_limits=False,
    tier="ENTERPRISE",
    minutes=10_000_000,
    creates_per_minute=0,
    exports_per_minute=0,
    timings=Timings(keepalive=5),
)


@contextmanager
def emulator(**overrides: Any) -> Iterator[Emulator]:
    """The emulator in a background thread of this process, with ``FAST`` plus overrides."""
    with Emulator(replace(FAST, **overrides)) as emu:
        yield emu


@contextmanager
def pg_server(extra_options: str = "") -> Iterator[PgServer]:
    """A throwaway PostgreSQL server (the tests' own, tests/pg.py) with these further ``-c``
    settings. Without PostgreSQL installed: RuntimeError saying so."""
    import pytest

    from tests.pg import running_server

    try:
        with running_server(extra_options) as server:
            yield server
    except pytest.skip.Exception as e:
        raise RuntimeError(f"no PostgreSQL: {e}") from None


def pg_database(server: PgServer) -> AbstractContextManager[str]:
    """A fresh database on ``server`` (its URL), dropped afterwards."""
    from tests.pg import fresh_database

    return contextmanager(fresh_database)(server)


# ---- inputs -----------------------------------------------------------------------------------


def sample_video(folder: Path, seconds: float = 6.0) -> Path:
    """A small real MP4 (H.264 + AAC), made once per folder."""
    path = folder / f"sample-{seconds:g}s.mp4"
    if not path.exists():
        make_sample_video(path, seconds=seconds, width=160, height=90, fps=10)
    return path


# ---- the daemon -------------------------------------------------------------------------------

BASE_DAEMON = {"settle_seconds": 0.5, "rescan_seconds": 300, "max_uploads": 2}
# The config refuses 0 (the client's pacing would take it as "none"): a million a minute is none.
BASE_CARMIC = {"creates_per_minute": 1_000_000, "exports_per_minute": 1_000_000}


def make_env(
    root: Path,
    emu: Emulator,
    rules: dict[str, dict[str, Any]] | None = None,
    *,
    carmic: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
    inbox: dict[str, Any] | None = None,
    extra_inboxes: int = 0,
    notify: list[dict[str, Any]] | None = None,
) -> Env:
    """An end-to-end environment under ``root`` with its config written. ``extra_inboxes``
    adds that many more inboxes (``inbox2`` ...) with the same settings and rules."""
    env = Env(root=root, emu=emu)
    env.write_config(
        rules,
        carmic={**BASE_CARMIC, **(carmic or {})},
        daemon={**BASE_DAEMON, **(daemon or {})},
        inbox=inbox,
        notify=notify,
    )
    if extra_inboxes:
        cfg = tomllib.loads(env.config_path.read_text())
        first = cfg["inbox"][0]
        for i in range(2, extra_inboxes + 2):
            extra = {**first, "path": str(root / f"inbox{i}"), "outbox": str(root / f"outbox{i}")}
            Path(extra["path"]).mkdir(exist_ok=True)
            cfg["inbox"].append(extra)
        env.config_path.write_bytes(tomli_w.dumps(cfg).encode())
    return env


class Run:
    """One ``watchd run`` of an environment: its pid, its log since it started, readiness."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self._offset = env.log_path.stat().st_size if env.log_path.exists() else 0
        self.started = time.monotonic()
        self.proc = env.start()
        self.pid = self.proc.pid
        self._profiler = _attach_profiler(self.pid, env.root.name)

    def log(self) -> str:
        with open(self.env.log_path, "rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from the start of the process until it logged that it is ready."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"watchd exited with {self.proc.returncode}:\n{self.log()}")
            return "ready:" in self.log()

        wait_until(ready, timeout=timeout, interval=0.005, what="the daemon to be ready")
        return time.monotonic() - self.started

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL if it hangs."""
        self.env.stop()
        if self._profiler is not None:
            self._profiler.wait(timeout=60)


def _attach_profiler(pid: int, tag: str) -> subprocess.Popen[bytes] | None:
    """With ``BENCH_PYSPY=<folder>`` in the environment, record the daemon with py-spy (from
    the venv; not a dependency) as collapsed stacks into ``<folder>/<tag>-<pid>.txt`` until it
    exits; ``BENCH_PYSPY_ARGS`` adds options (``--gil``: only the thread holding the GIL). How
    the figures of these benchmarks were explained. The profiler's own cost lands on the
    daemon: never quote figures from a profiled run."""
    folder = os.environ.get("BENCH_PYSPY")
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{tag}-{pid}.txt"
    py_spy = Path(sys.executable).with_name("py-spy")
    extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
    return subprocess.Popen(
        [str(py_spy), "record", "-f", "raw", "-r", "200", *extra, "-p", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ledger_query(state_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` read beside the running daemon (read-only, WAL); none while the ledger
    or its schema is not there yet."""
    path = state_dir / "ledger.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # the schema is not there yet
    finally:
        conn.close()


def ledger_counts(state_dir: Path) -> dict[str, int]:
    """Jobs by state, read beside the running daemon."""
    rows = ledger_query(state_dir, "SELECT state, COUNT(*) FROM jobs GROUP BY state")
    return {str(state): int(n) for state, n in rows}


def ledger_bytes(state_dir: Path) -> int:
    """The ledger's size on disk (database, WAL and shared memory files)."""
    return sum(p.stat().st_size for p in state_dir.glob("ledger.db*") if p.is_file() and p.exists())


def storage_puts(emu: Emulator) -> list[dict[str, Any]]:
    """The emulator's record of every successful storage PUT."""
    return [
        q
        for q in emu.snapshot()["requests"]
        if q["origin"] == "storage" and q["method"] == "PUT" and q["status"] == 200
    ]


def uploads(emu: Emulator) -> int:
    """How many storage PUTs the emulator has accepted so far."""
    return int(emu.core.inspection.counters["uploads"])


def wait_for_uploads(emu: Emulator, count: int, *, timeout: float) -> None:
    """Wait until the emulator has accepted ``count`` PUTs in all. A plain read of a counter:
    a snapshot would cost the receiver's event loop time during the transfer measured."""
    wait_until(
        lambda: uploads(emu) >= count, timeout=timeout, interval=0.01, what=f"{count} uploads"
    )


def drop_atomically(src: Path, dest: Path) -> float:
    """Put ``src``'s bytes at ``dest`` the way a careful writer does (write, close, rename)
    and return the wall time at which the file was closed under its final name."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dest)
    return time.time()

"""Start-up errors a user can cause: one line naming the path (or address) and what to do,
exit 2, no traceback unless --debug."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Env
from tests.ledger.damage import damage_middle, fill_jobs
from watchd.ledger.db import DB_NAME, Ledger


def run_once(env: Env, *extra: str, config: Path | None = None) -> tuple[int, str]:
    """`watchd run` that is expected to give up at start: its exit code and output."""
    r = subprocess.run(
        [sys.executable, "-m", "watchd", "run", "-c", str(config or env.config_path), *extra],
        capture_output=True,
        text=True,
        cwd=env.root,
        timeout=60,
    )
    return r.returncode, r.stdout + r.stderr


def one_error(text: str) -> str:
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text
    return errors[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_busy_metrics_port(env: Env, busy_port: int) -> None:
    env.write_config(daemon={"metrics": f"127.0.0.1:{busy_port}"})
    code, text = run_once(env)
    assert code == 2, text
    line = one_error(text)
    assert f"127.0.0.1:{busy_port}" in line and "already in use" in line
    assert "[daemon] metrics" in line


def test_debug_shows_the_traceback(env: Env, busy_port: int) -> None:
    env.write_config(daemon={"metrics": f"127.0.0.1:{busy_port}"})
    code, text = run_once(env, "--debug")
    assert code == 2 and "Traceback" in text and "Address already in use" in text, text


def test_a_file_that_is_not_a_database(env: Env) -> None:
    env.write_config()
    db = env.state / DB_NAME
    db.write_bytes(b"not a database at all " * 200)
    code, text = run_once(env)
    assert code == 2, text
    line = one_error(text)
    assert str(db) in line and "aside" in line and "start again" in line


def test_a_ledger_damaged_in_the_middle_does_not_start(env: Env) -> None:
    env.write_config()
    ledger = Ledger.open(env.state)
    fill_jobs(ledger, 2000)
    ledger.close()
    db = env.state / DB_NAME
    damage_middle(db)
    code, text = run_once(env)
    assert code == 2, text
    line = one_error(text)
    assert str(db) in line and "damaged" in line
    assert "ready:" not in text


def test_a_folder_in_place_of_the_ledger(env: Env) -> None:
    env.write_config()
    (env.state / DB_NAME).mkdir()
    code, text = run_once(env)
    assert code == 2, text
    assert str(env.state / DB_NAME) in one_error(text)


def test_an_unreadable_config(env: Env) -> None:
    folder = env.root / "config-folder.toml"
    folder.mkdir()
    code, text = run_once(env, config=folder)
    assert code == 2, text
    assert str(folder) in one_error(text)


def test_a_state_dir_that_is_a_file(env: Env) -> None:
    blocker = env.root / "not-a-folder"
    blocker.write_text("")
    env.write_config(daemon={"state_dir": str(blocker / "state")})
    code, text = run_once(env)
    assert code == 2, text
    assert str(blocker) in one_error(text)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder `watchd run` cannot write: mode 0555, or (as root, whom modes do not stop) a
    read-only tmpfs mount."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("running as root and cannot mount a read-only tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_an_unwritable_state_dir(env: Env, read_only_dir: Path) -> None:
    env.write_config(daemon={"state_dir": str(read_only_dir)})
    code, text = run_once(env)
    assert code == 2, text
    line = one_error(text)
    assert str(read_only_dir) in line and "not writable" in line


def test_an_outbox_on_a_read_only_mount(env: Env, read_only_dir: Path) -> None:
    env.write_config(inbox={"outbox": str(read_only_dir)})
    code, text = run_once(env)
    assert code == 2, text
    line = one_error(text)
    assert str(read_only_dir) in line and "not writable" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_a_ledger_this_user_may_not_read(env: Env) -> None:
    env.write_config()
    Ledger.open(env.state).close()
    db = env.state / DB_NAME
    db.chmod(0)
    try:
        code, text = run_once(env)
    finally:
        db.chmod(0o600)
    assert code == 2, text
    line = one_error(text)
    assert str(db) in line and "permission denied" in line

"""One owner per ledger: the flock on <state_dir>/watchd.lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from watchd.ledger.db import LedgerError
from watchd.ledger.lock import LOCK_NAME, LedgerBusy, acquire


def test_second_acquire_is_refused_naming_the_holder(tmp_path: Path) -> None:
    with acquire(tmp_path, pid=4242) as held:
        assert held.held
        with pytest.raises(LedgerBusy) as e:
            acquire(tmp_path)
        assert e.value.pid == 4242
        assert isinstance(e.value, LedgerError)
        message = str(e.value)
        assert "PID 4242" in message and str(tmp_path) in message and "\n" not in message
    assert not held.held
    # Released: the next one takes it.
    acquire(tmp_path).release()


def test_the_file_holds_our_pid_and_is_private_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        held = acquire(tmp_path)
    finally:
        os.umask(old)
    try:
        path = tmp_path / LOCK_NAME
        assert path.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        held.release()


def test_a_crash_leaves_no_lock_behind(tmp_path: Path) -> None:
    """A file left by a dead owner (longer PID text included) does not block the next one."""
    (tmp_path / LOCK_NAME).write_text("1234567\n")
    with acquire(tmp_path, pid=99):
        assert (tmp_path / LOCK_NAME).read_text() == "99\n"


def test_a_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    code = (
        "import sys, pathlib; from watchd.ledger.lock import acquire; "
        "h = acquire(pathlib.Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LedgerBusy) as e:
            acquire(tmp_path)
        assert e.value.pid == child.pid
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
        if child.stdout is not None:
            child.stdout.close()
    # Gone with the process.
    acquire(tmp_path).release()

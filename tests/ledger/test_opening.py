"""How `watchd run` opens its ledger: private files, the lock, damage and permissions."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ledger.damage import damage_middle, fill_jobs
from watchd.clock import FakeClock
from watchd.ledger.db import DB_NAME, Ledger
from watchd.ledger.health import LedgerDamaged, LedgerUnreadable, check_or_raise, quick_check
from watchd.ledger.lock import LOCK_NAME, LedgerBusy
from watchd.ledger.opening import open_for_daemon


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_everything_created_is_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "new" / "state"
    opened = open_for_daemon(state, clock=FakeClock())
    try:
        fill_jobs(opened.ledger, 3)  # the WAL is written
        assert opened.fresh
        assert _mode(state) == 0o700
        made = sorted(p.name for p in state.iterdir())
        assert made == [DB_NAME, f"{DB_NAME}-shm", f"{DB_NAME}-wal", LOCK_NAME]
        for p in state.iterdir():
            assert _mode(p) == 0o600, p
    finally:
        opened.close()
    # The umask of the process is back to what it was.
    assert os.umask(0o022) == 0o022


def test_wide_state_dir_and_ledger_earn_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.chmod(0o755)
    open_for_daemon(tmp_path).close()
    (tmp_path / DB_NAME).chmod(0o644)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="watchd.ledger"):
        opened = open_for_daemon(tmp_path)
    opened.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(tmp_path) in w and "chmod 700" in w for w in warnings), warnings
    assert any(f"{DB_NAME} may be read" in w and "chmod 600" in w for w in warnings), warnings
    assert not opened.fresh


def test_a_zero_length_ledger_is_fresh(tmp_path: Path) -> None:
    opened = open_for_daemon(tmp_path)
    fill_jobs(opened.ledger, 1)
    opened.close()
    os.truncate(tmp_path / DB_NAME, 0)
    opened = open_for_daemon(tmp_path)
    try:
        assert opened.fresh and opened.ledger.jobs() == []
    finally:
        opened.close()


def test_a_second_open_is_refused_while_the_first_holds_it(tmp_path: Path) -> None:
    first = open_for_daemon(tmp_path)
    try:
        with pytest.raises(LedgerBusy, match=f"PID {os.getpid()}"):
            open_for_daemon(tmp_path)
    finally:
        first.close()
    open_for_daemon(tmp_path).close()


def test_a_file_that_is_not_a_database_is_one_line_with_advice(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    db.write_bytes(b"this is not a database, it is a text file " * 100)
    with pytest.raises(LedgerDamaged) as e:
        open_for_daemon(tmp_path)
    text = str(e.value)
    assert "\n" not in text
    assert f"move {db} aside" in text and "outbox manifests" in text
    # The lock went with the failure: the next start (after the fix) is not refused.
    db.unlink()
    open_for_daemon(tmp_path).close()


def test_a_folder_in_place_of_the_ledger_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).mkdir()
    with pytest.raises(LedgerUnreadable, match=f"cannot open the ledger {tmp_path / DB_NAME}"):
        open_for_daemon(tmp_path)


def test_quick_check_finds_damage_in_the_middle(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path)
    fill_jobs(ledger, 2000)
    ledger.close()
    db = tmp_path / DB_NAME
    assert quick_check(db) == []
    damage_middle(db)
    # It opens: the damage is only found when something walks into it.
    open_for_daemon(tmp_path).close()
    assert quick_check(db), "quick_check found nothing"
    with pytest.raises(LedgerDamaged, match=r"move .* aside"):
        check_or_raise(db)


def test_permission_denied_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What SQLite says for a file it may not open ("unable to open database file") becomes
    "permission denied" with the user and what to do (root ignores modes: the check is faked)."""
    open_for_daemon(tmp_path).close()
    monkeypatch.setattr("watchd.ledger.health.os.access", lambda path, mode: False)

    def refuse(*args: object, **kwargs: object) -> Ledger:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(Ledger, "open", refuse)
    with pytest.raises(LedgerUnreadable) as e:
        open_for_daemon(tmp_path)
    text = str(e.value)
    assert f"cannot open the ledger {tmp_path / DB_NAME}: permission denied" in text
    assert "run the daemon as the user that owns it" in text


def test_a_pending_read_back_makes_the_ledger_fresh_again(tmp_path: Path) -> None:
    opened = open_for_daemon(tmp_path)
    fill_jobs(opened.ledger, 1)
    opened.ledger.db.execute("INSERT INTO meta (key, value) VALUES ('rebuild_pending', 'x')")
    opened.close()
    opened = open_for_daemon(tmp_path)
    try:
        assert opened.fresh
    finally:
        opened.close()


def test_a_folder_in_place_of_the_lock_file_names_it(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(LedgerUnreadable, match=f"cannot open the lock file {tmp_path / LOCK_NAME}"):
        open_for_daemon(tmp_path)

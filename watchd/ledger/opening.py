"""How ``watchd run`` opens its ledger: the state folder (0700), the lock (one daemon per
``state_dir``), the file itself (0600, ``-wal``/``-shm`` included), and whether it starts empty.

Errors a user can cause (another daemon running, a damaged or unreadable file) come out as
:class:`~watchd.ledger.db.LedgerError` with one line that says what to do.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from watchd.clock import Clock
from watchd.ledger import files, lock, rebuild
from watchd.ledger.db import DB_NAME, Ledger, LedgerError
from watchd.ledger.health import LedgerUnreadable, translate


@dataclass
class OpenedLedger:
    ledger: Ledger
    lock: lock.LedgerLock
    fresh: bool
    """The file was missing or empty (nothing of what was done before is in it), or a read-back
    of the outbox manifests into it was started and not finished."""

    @property
    def path(self) -> Path:
        assert self.ledger.path is not None
        return self.ledger.path

    def close(self) -> None:
        self.ledger.close()
        self.lock.release()


def is_empty(db_path: Path) -> bool:
    """No ledger yet, or a file of zero bytes (lost, truncated): SQLite takes it as new."""
    try:
        return db_path.stat().st_size == 0
    except FileNotFoundError:
        return True


def open_for_daemon(state_dir: Path, *, clock: Clock | None = None) -> OpenedLedger:
    """Prepare ``state_dir``, take its lock, open the ledger in it. Raises LedgerError
    (:class:`~watchd.ledger.lock.LedgerBusy`, ``LedgerDamaged``, ``LedgerUnreadable``)."""
    db_path = state_dir / DB_NAME
    try:
        files.prepare_state_dir(state_dir)
        held = lock.acquire(state_dir)
    except OSError as e:
        where = Path(e.filename or state_dir)
        what = "the lock file" if where.name == lock.LOCK_NAME else "the state folder"
        raise LedgerUnreadable(where, e.strerror or str(e), what=what) from e
    try:
        files.warn_if_wide(files.ledger_files(db_path))
        fresh = is_empty(db_path)
        try:
            # SQLite creates -wal and -shm when it first needs them, with our umask.
            with files.private_umask():
                ledger = Ledger.open(state_dir, clock=clock)
            fresh = fresh or rebuild.pending(ledger)
        except (sqlite3.Error, OSError) as e:
            raise translate(db_path, e) from e
        files.make_private(files.ledger_files(db_path))
    except BaseException:
        held.release()
        raise
    return OpenedLedger(ledger, held, fresh)


__all__ = ["LedgerError", "OpenedLedger", "is_empty", "open_for_daemon"]

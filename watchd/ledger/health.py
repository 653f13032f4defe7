"""A ledger that may be damaged or out of reach: how it is found out, and what the user is told.

SQLite reports a damaged file in several ways (``file is not a database`` at the first read,
``database disk image is malformed`` at the page it hits, or nothing at all until a query walks
into the damage); ``PRAGMA quick_check`` walks every page once. Whatever the way, the user gets
one line with the path and what to do: the outbox manifests are the record of what was
delivered, and a new ledger is rebuilt from them (:mod:`watchd.ledger.rebuild`).
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from pathlib import Path

from watchd.ledger.db import LedgerError

# How many problems quick_check reports at most (one is enough to refuse the file).
CHECK_LIMIT = 5


class LedgerDamaged(LedgerError):
    """The ledger file is not a sound SQLite database."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"the ledger {path} is damaged ({detail}): stop the daemon, move {path} aside "
            f"(with any {path.name}-wal and {path.name}-shm beside it), start again: the outbox "
            "manifests are the record and are read back"
        )


class LedgerUnreadable(LedgerError):
    """The ledger cannot be opened by this user (permissions, a folder in its place, …)."""

    def __init__(self, path: Path, detail: str, *, what: str = "the ledger") -> None:
        self.path = path
        super().__init__(
            f"cannot open {what} {path}: {detail}; it must be a file that user {_user()} "
            f"may read and write, in a folder ({path.parent}) that user may write: fix the "
            "owner or mode, or run the daemon as the user that owns it"
        )


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.geteuid())


_DAMAGE = ("not a database", "malformed", "corrupt", "disk image")


def is_damage(e: sqlite3.DatabaseError) -> bool:
    text = str(e).lower()
    return any(word in text for word in _DAMAGE)


def translate(path: Path, e: sqlite3.Error | OSError) -> LedgerError:
    """The error a user gets for ``e``, met while opening the ledger at ``path``."""
    if isinstance(e, OSError):
        return LedgerUnreadable(path, e.strerror or str(e))
    if isinstance(e, sqlite3.DatabaseError) and is_damage(e):
        return LedgerDamaged(path, str(e))
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return LedgerUnreadable(path, "permission denied")
    if path.is_dir():
        return LedgerUnreadable(path, "it is a folder")
    return LedgerUnreadable(path, str(e))


def quick_check(path: Path) -> list[str]:
    """``PRAGMA quick_check`` on its own read-only connection (so that it may run on a thread
    beside the daemon's): the problems found, an empty list when the file is sound."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as e:
        return [str(e)]
    try:
        rows = conn.execute(f"PRAGMA quick_check({CHECK_LIMIT})").fetchall()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return [] if found == ["ok"] else found


def check_or_raise(path: Path) -> None:
    """Raise :class:`LedgerDamaged` when :func:`quick_check` finds anything."""
    if problems := quick_check(path):
        raise LedgerDamaged(path, "; ".join(problems)[:300])

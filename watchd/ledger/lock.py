"""One owner per ledger: an exclusive ``flock`` on ``<state_dir>/watchd.lock``.

Two daemons on one SQLite ledger bill twice and fail each other's jobs, so ``watchd run`` takes
this lock before it opens the ledger and holds it for its whole life. The kernel drops a
``flock`` with the last descriptor of the file, so a crash (even SIGKILL) leaves nothing to
clean up: the file stays, the lock does not. The file holds the owner's PID as text, only so
that a second daemon can name it.

``status``, ``retry`` and ``forget`` never take it: they work beside a running daemon through
SQLite's own locking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from watchd.ledger.db import LedgerError

LOCK_NAME = "watchd.lock"
# A second daemon that loses the race may read the file before the winner has written its PID.
PID_WAIT = 1.0


class LedgerBusy(LedgerError):
    """Another process holds the lock: ``pid`` (None when it could not be read)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"PID {pid}" if pid else "another process (PID unknown)"
        super().__init__(
            f"another watchd is already running on state_dir {state_dir}: {who}; "
            "one daemon per state_dir: stop that one first, or give this one its own state_dir"
        )


class LedgerLock:
    """The held lock; :meth:`release` (or leaving the ``with``) lets it go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> LedgerLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire(state_dir: Path, *, pid: int | None = None) -> LedgerLock:
    """Take the lock of ``state_dir`` (which must exist) without waiting, or raise
    :class:`LedgerBusy` naming the holder. Writes ``pid`` (default: ours) into the file."""
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _wait_for_pid(fd)
        os.close(fd)
        raise LedgerBusy(state_dir, holder) from None
    except BaseException:
        os.close(fd)
        raise
    text = f"{pid if pid is not None else os.getpid()}\n".encode()
    # Over the old text first, then cut: a reader never sees an empty file after the first run.
    os.pwrite(fd, text, 0)
    os.ftruncate(fd, len(text))
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)
    return LedgerLock(path, fd)


def read_pid(fd: int) -> int | None:
    """The PID written in the lock file, or None when there is none (yet)."""
    data = os.pread(fd, 64, 0)
    first = data.split(b"\n", 1)[0].strip()
    return int(first) if first.isdigit() else None


def _wait_for_pid(fd: int) -> int | None:
    deadline = time.monotonic() + PID_WAIT
    while True:
        pid = read_pid(fd)
        if pid is not None or time.monotonic() >= deadline:
            return pid
        time.sleep(0.01)

"""Secrets at rest: what the daemon keeps in ``state_dir`` is for its own user only.

The ledger holds presigned upload URLs (and its ``-wal``/``-shm`` files hold them too, for a
while), so ``state_dir`` is created 0700 and every file in it 0600, whatever the umask of the
shell or container that started the daemon. Files or a folder found wider than that (made by an
older version, or by hand) are left as they are, with a warning: the operator may have given a
group access on purpose.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger("watchd.ledger")

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
# The ledger and what SQLite keeps beside it, and the lock file.
SIDE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def prepare_state_dir(state_dir: Path) -> None:
    """Create ``state_dir`` (and missing parents) 0700 when it is not there; warn once when an
    existing one may be entered by group or others."""
    if not state_dir.is_dir():
        with private_umask():
            state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            os.chmod(state_dir, DIR_MODE)
        return
    warn_if_wide([state_dir])


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created inside are for their owner only (the ledger's ``-wal`` and
    ``-shm`` are created by SQLite when it first needs them, with the process's umask).

    The umask is process-wide: hold it only around a short, synchronous open."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def ledger_files(db_path: Path) -> list[Path]:
    """The ledger and its SQLite companions that exist now."""
    return [p for p in (Path(f"{db_path}{s}") for s in SIDE_SUFFIXES) if p.exists()]


def wide_permissions(path: Path) -> str | None:
    """A warning when group or others have any access to ``path``, else None."""
    try:
        st = path.lstat()
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    classes = ((stat.S_IRWXG, "group"), (stat.S_IRWXO, "others"))
    who = [name for bits, name in classes if mode & bits]
    if not who:
        return None
    want = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    return (
        f"{path} may be read by {' and '.join(who)} (mode {mode:04o}); the ledger holds "
        f"presigned upload URLs: chmod {want:o} it"
    )


def warn_if_wide(paths: Iterable[Path]) -> list[str]:
    """Log (and return) a warning for each of ``paths`` that group or others may access."""
    found = [w for w in (wide_permissions(p) for p in paths) if w]
    for warning in found:
        log.warning("%s", warning)
    return found


def make_private(paths: Iterable[Path]) -> None:
    """chmod 0600 files this process has just created (best effort)."""
    for p in paths:
        with contextlib.suppress(OSError):
            os.chmod(p, FILE_MODE)

"""Files that appear complete or not at all.

Every outbox file is written under a hidden temporary name in its final folder, flushed to
disk, renamed over its final name, and the folder is flushed so that the rename itself survives
a power cut. Temporary names have one recognisable shape (``.<name>.watchd-<random>.tmp``), so
:func:`clean_stale_temps` can remove what a crash left behind without touching anything else;
the inbox scanner ignores them too (hidden, ``.tmp``).

SMB servers refuse a rename while a client (an antivirus scanner, an indexer, a person's
preview pane) holds the destination open; :func:`replace_with_retry` waits and tries again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from watchd.outbox.names import NAME_MAX, truncate_utf8
from watchd.watching.regular import open_regular

TMP_SUFFIX = ".tmp"
_TMP_MARK = ".watchd-"
_TMP_NAME = re.compile(r"^\..*\.watchd-[0-9a-f]{12}\.tmp$", re.DOTALL)
_TMP_OVERHEAD = len(f".{_TMP_MARK}{'0' * 12}{TMP_SUFFIX}")

BUSY_ERRNOS = frozenset({errno.EBUSY, errno.EACCES, errno.EPERM, errno.ETXTBSY})
"""What a CIFS/SMB client reports when the destination of a rename is held open elsewhere."""

# Directory fsync is not supported everywhere (CIFS, some FUSE filesystems); there it is skipped.
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF})
_CHUNK = 1 << 20
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def tmp_path_for(final: Path) -> Path:
    """A fresh hidden temporary name beside ``final``: ``.<name>.watchd-<random>.tmp``.

    The embedded name is shortened when needed so the temporary name fits 255 bytes.
    """
    stem = truncate_utf8(final.name, NAME_MAX - _TMP_OVERHEAD)
    return final.with_name(f".{stem}{_TMP_MARK}{secrets.token_hex(6)}{TMP_SUFFIX}")


def is_tmp_name(name: str) -> bool:
    """True for a name :func:`tmp_path_for` could have made."""
    return bool(_TMP_NAME.match(name))


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, creations) to disk, where the filesystem allows."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except PermissionError:
        return  # a folder we may write to but not list: nothing more can be done
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def replace_with_retry(
    src: Path,
    dst: Path,
    *,
    attempts: int = 5,
    sleep: Callable[[float], None] | None = None,
    first_delay: float = 0.1,
) -> None:
    """``os.replace(src, dst)``, retried with doubling delays while the destination is busy
    (``EBUSY``/``EACCES``/``EPERM``/``ETXTBSY``, as SMB reports it). Other errors, and the
    last busy one, are raised. ``sleep`` defaults to :func:`time.sleep`."""
    pause = sleep or time.sleep
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            os.replace(src, dst)
            return
        except OSError as e:
            if e.errno not in BUSY_ERRNOS or attempt >= attempts:
                raise
        pause(delay)
        delay *= 2


class TempFile:
    """A file being written under a temporary name beside ``final`` (:func:`tmp_path_for`), for
    a writer that fills it over several calls (a download, handed to a worker thread a batch at a
    time). :meth:`commit` gives it its final name; :meth:`discard` removes it."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.path = tmp_path_for(final)
        fd = os.open(
            self.path, _CREATE, 0o666
        )  # the umask decides, as for any file a person creates
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self, *, like: Path | None = None, sync_dir: bool = True) -> None:
        """Flush and sync the file, rename it over ``final`` (and flush the folder unless
        ``sync_dir`` is False). If anything fails the temporary file is removed."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            if like is not None:
                # Mode and times follow the original on a move; a share may refuse (that is fine).
                with contextlib.suppress(OSError):
                    shutil.copystat(like, self.path)
            replace_with_retry(self.path, self.final)
        except BaseException:
            self.discard()
            raise
        if sync_dir:
            fsync_dir(self.final.parent)

    def discard(self) -> None:
        """Close and remove the temporary file; ``final`` is untouched."""
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def write_via_tmp(
    final: Path,
    fill: Callable[[BinaryIO], None],
    *,
    like: Path | None = None,
    sync_dir: bool = True,
) -> None:
    """Create ``final`` atomically from whatever ``fill`` writes into the open temporary file.

    ``like`` copies that file's mode and times onto the result. ``sync_dir=False`` leaves the
    folder fsync to a caller that writes many files into it (then :func:`fsync_dir` once).
    If anything fails, the temporary file is removed and ``final`` is untouched.
    """
    tmp = TempFile(final)
    try:
        fill(tmp.file)
    except BaseException:
        tmp.discard()
        raise
    tmp.commit(like=like, sync_dir=sync_dir)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of
    ``data``, never a part (temp + fsync + rename + folder fsync)."""

    def fill(f: BinaryIO) -> None:
        f.write(data)

    write_via_tmp(path, fill, like=None)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8 (line ends as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """:func:`atomic_write_bytes` of ``obj`` as indented UTF-8 JSON with a final newline."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_text(path, text)


def _copy_stream(src: BinaryIO, dst: BinaryIO) -> None:
    # sendfile keeps a multi-GB copy to a NAS in the kernel; some filesystems refuse it.
    offset = 0
    if hasattr(os, "sendfile"):
        try:
            while sent := os.sendfile(dst.fileno(), src.fileno(), offset, 1 << 26):
                offset += sent
            return
        except OSError as e:
            if offset or e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                raise
    src.seek(0)
    shutil.copyfileobj(src, dst, _CHUNK)


def copy_into_place(src_file: Path, final: Path, *, keep_metadata: bool = False) -> None:
    """Copy ``src_file`` to ``final`` through a temporary file (fsync + rename + folder fsync).
    With ``keep_metadata`` the copy gets the source's mode and times (a move across disks)."""
    with open_regular(src_file) as src:  # a source: never through a link, never a FIFO
        write_via_tmp(
            final, lambda f: _copy_stream(src, f), like=src_file if keep_metadata else None
        )


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove the temporary files a crash left in ``folder`` and its subfolders (ours only:
    names made by :func:`tmp_path_for`); returns what was removed. Symlinks are not followed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            if is_tmp_name(name):
                p = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed

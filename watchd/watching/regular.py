"""Regular files only: what an inbox entry is, opening a source without following links, and
names that cannot be stored as they are.

Anyone who can write to an inbox (a NAS share) could otherwise make the daemon read any file
it can read: ``x.mp4 -> /srv/other/private.mp4`` would be uploaded to Carmic. So an entry is
judged by ``lstat`` (a symbolic link is a link, whatever it points at), every open of a source
goes through :func:`open_regular` (``O_NOFOLLOW``, ``O_NONBLOCK`` so that a FIFO cannot block
the open, then an ``fstat`` of the descriptor: a regular file, and the very file that settled
when its device and inode are given), and anything else is reported, never opened.

Names on Linux are bytes. One that is not valid UTF-8 arrives from ``os.scandir`` with its bad
bytes as lone surrogates (``surrogateescape``), which SQLite's text columns, JSON consumers and
a UTF-8 terminal all refuse; :func:`printable` turns it into text that can be stored and shown
(the bad bytes escaped as ``\\xff``), and the file is reported rather than taken.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from pathlib import Path
from typing import BinaryIO

# The kinds of entry that are not taken, as the report names them.
SYMLINK = "a symbolic link"
SYMLINK_DIR = "a symbolic link to a folder"
FIFO = "a FIFO (named pipe)"
SOCKET = "a socket"
CHAR_DEVICE = "a character device"
BLOCK_DEVICE = "a block device"


SIDECAR_SUFFIX = ".toml"
# The one call that opens a source (a seam: tests running as root make it refuse a file).
_open = os.open


class NotRegularFile(OSError):
    """The path names something other than a regular file (or another file than expected)."""


class NameTooLong(Exception):
    """The file's name leaves no room for its sidecar's (``<name>.toml``)."""

    def __init__(self, name: str, limit: int) -> None:
        self.nbytes = len(os.fsencode(name))
        self.limit = limit
        super().__init__(f"the name is too long for a sidecar ({self.nbytes} bytes)")


def special_kind(mode: int) -> str | None:
    """What an ``lstat`` mode is when it is not a regular file or a folder, else None."""
    if stat_mod.S_ISLNK(mode):
        return SYMLINK
    if stat_mod.S_ISFIFO(mode):
        return FIFO
    if stat_mod.S_ISSOCK(mode):
        return SOCKET
    if stat_mod.S_ISCHR(mode):
        return CHAR_DEVICE
    if stat_mod.S_ISBLK(mode):
        return BLOCK_DEVICE
    return None


def not_taken_reason(kind: str) -> str:
    """The report for an entry that is not a regular file."""
    if kind == SYMLINK_DIR:
        return f"not taken: {kind} is never entered; put the files themselves into the inbox"
    return (
        f"not taken: it is {kind}, and only regular files are taken; copy the video itself "
        "into the inbox"
    )


def printable(name: str) -> tuple[str, bool]:
    """``name`` as text that can be stored and shown, and whether it had to be escaped (it
    held bytes that are not valid UTF-8: ``bad\\udcff.mp4`` -> ``bad\\xff.mp4``, True)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = name.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), True
    return name, False


def open_regular(
    path: Path | str, *, expect: tuple[int, int] | None = None, buffering: int = -1
) -> BinaryIO:
    """Open a source for reading, without following a symbolic link at its name and without
    blocking on a FIFO; raise :class:`NotRegularFile` unless the descriptor is a regular file
    (and, with ``expect=(st_dev, st_ino)``, that very file). Other errors are the OSError of
    the open (``FileNotFoundError``, ``PermissionError`` …)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = _open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, f"{SYMLINK}: not opened", str(path)) from None
        raise
    try:
        st = os.fstat(fd)
        kind = special_kind(st.st_mode) or (
            None if stat_mod.S_ISREG(st.st_mode) else "not a regular file"
        )
        if kind is not None:
            raise NotRegularFile(errno.EINVAL, f"{kind}: not read", str(path))
        if expect is not None and (st.st_dev, st.st_ino) != expect:
            raise NotRegularFile(
                errno.ESTALE, "another file was put in its place since it settled", str(path)
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=buffering)
    except BaseException:
        os.close(fd)
        raise


def find_sidecar(video: Path) -> Path | None:
    """The sidecar ``<name>.toml`` beside ``video`` when there is one (a regular file, by
    ``lstat``). Raises :class:`NameTooLong` when the sidecar's name cannot exist on this
    filesystem, :class:`NotRegularFile` when the sidecar is a link or a special file."""
    sidecar = video.with_name(video.name + SIDECAR_SUFFIX)
    try:
        st = os.lstat(sidecar)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise NameTooLong(video.name, name_max(video.parent) - len(SIDECAR_SUFFIX)) from None
        raise
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise NotRegularFile(
            errno.EINVAL, f"it is {kind}; only a regular file is read", str(sidecar)
        )
    return sidecar if stat_mod.S_ISREG(st.st_mode) else None


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the filesystem of ``folder`` takes."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255

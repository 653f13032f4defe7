"""A full rescan of one inbox: the source of truth that events only hint at.

One ``os.scandir`` walk. Directory entries carry their type, so only candidate videos cost a
``stat`` each; ignored folders (``_done``, ``@eaDir``, hidden ones …) are never entered and
symlinked folders are never followed, so a link cannot lead the walk out of the inbox or round
in a loop. Only regular files are taken: a symbolic link (to a file or a folder), a FIFO, a
device or a socket is listed in ``ScanResult.skipped`` (judged by ``lstat``, never opened) for
the daemon to report once.

Files and folders vanish while we walk (a copy tool renaming its temporary, the daemon moving
a finished source to ``_done``): that is normal and silent. A folder we may not read is
skipped and logged once (again only after it had become readable in between); only trouble
with the inbox root itself makes the scan fail, because then nothing can be said about the
files in it.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from watchd.watching.ignore import VIDEO_EXTENSIONS, is_ignored_dir, is_ignored_name
from watchd.watching.regular import SYMLINK, SYMLINK_DIR, special_kind
from watchd.watching.settle import FileStat

log = logging.getLogger(__name__)

MAX_DEPTH = 64


class ScannedFile:
    """A candidate video found by a scan: ``path``, ``rel`` (to the inbox root) and ``stat``.

    ``rel`` is as named on disk, not NFC-normalised (normalise with ``ignore.nfc`` for keys).
    The ``Path`` objects are built on first use: on a large inbox most files are already in
    the ledger and are looked up by :attr:`rel_str`, and building two pathlib objects per file
    was most of a 100,000-entry scan's time.
    """

    __slots__ = ("_path", "_path_obj", "_rel", "_rel_obj", "stat")

    def __init__(self, path: Path | str, rel: PurePosixPath | str, stat: FileStat) -> None:
        self._path = os.fspath(path)
        self._rel = str(rel)
        self._path_obj: Path | None = path if isinstance(path, Path) else None
        self._rel_obj: PurePosixPath | None = rel if isinstance(rel, PurePosixPath) else None
        self.stat = stat

    @property
    def path(self) -> Path:
        """The file's path (under the inbox root as given to the scan)."""
        if self._path_obj is None:
            self._path_obj = Path(self._path)
        return self._path_obj

    @property
    def rel(self) -> PurePosixPath:
        """The path relative to the inbox root."""
        if self._rel_obj is None:
            self._rel_obj = PurePosixPath(self._rel)
        return self._rel_obj

    @property
    def rel_str(self) -> str:
        """``rel`` as a string, without building a path object."""
        return self._rel

    def _key(self) -> tuple[str, str, FileStat]:
        return (self._path, self._rel, self.stat)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScannedFile):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ScannedFile(path={self._path!r}, rel={self._rel!r}, stat={self.stat!r})"


@dataclass(frozen=True)
class SkippedEntry:
    """An entry that is not a regular file: ``kind`` says what it is (``regular.SYMLINK`` …)."""

    path: str
    rel: str
    kind: str


@dataclass(frozen=True)
class ScanResult:
    """What one scan of an inbox saw.

    ``entries`` counts every top-level entry, ignored ones included: a ``.DS_Store`` or an
    empty ``_done`` folder still proves the share is mounted (see ``inbox.InboxMonitor``).
    ``ok`` is False, with ``error`` saying why, when the root itself could not be read.
    """

    files: list[ScannedFile]
    entries: int
    ok: bool
    error: str | None = None
    unreadable: list[Path] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)


class _ReportOnce:
    """Remembers which unreadable folders were already logged, across scans and threads."""

    def __init__(self, limit: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._limit = limit

    def first(self, path: str) -> bool:
        with self._lock:
            if path in self._seen:
                return False
            if len(self._seen) < self._limit:
                self._seen.add(path)
            return True

    def recovered(self, path: str) -> None:
        if self._seen:  # no lock on the hot path while nothing is broken
            with self._lock:
                self._seen.discard(path)


_reported = _ReportOnce()


def scan_inbox(root: Path, *, max_depth: int = MAX_DEPTH) -> ScanResult:
    """Walk ``root`` and return every candidate video below it, sorted by ``rel_str``."""
    try:
        top = os.scandir(root)
    except FileNotFoundError:
        return ScanResult([], 0, ok=False, error=f"inbox {root} is missing (unmounted share?)")
    except NotADirectoryError:
        return ScanResult([], 0, ok=False, error=f"inbox {root} is not a folder")
    except OSError as exc:
        return ScanResult(
            [], 0, ok=False, error=f"inbox {root} is unreadable: {os_error_text(exc)}"
        )

    files: list[ScannedFile] = []
    skipped: list[SkippedEntry] = []
    unreadable: list[Path] = []
    subdirs: list[tuple[str, str, int]] = []  # (path, rel prefix ending in "/", depth)
    entries = 0
    try:
        with top:
            for entry in top:
                entries += 1
                _visit(entry, "", 1, files, subdirs, skipped)
    except OSError as exc:
        # The root went away or broke mid-listing (an SMB share dropping): no partial answer.
        return ScanResult(
            [], 0, ok=False, error=f"inbox {root} is unreadable: {os_error_text(exc)}"
        )
    _reported.recovered(os.fspath(root))

    while subdirs:
        path, rel, depth = subdirs.pop()
        if depth > max_depth:
            if _reported.first(path):
                log.warning("not descending into %s: deeper than %d folders", path, max_depth)
            continue
        try:
            with os.scandir(path) as it:
                for entry in it:
                    _visit(entry, rel, depth + 1, files, subdirs, skipped)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone, or replaced by a file, since its parent was listed
        except OSError as exc:
            unreadable.append(Path(path))
            if _reported.first(path):
                log.warning("skipping unreadable folder %s: %s", path, os_error_text(exc))
            continue
        _reported.recovered(path)

    files.sort(key=lambda f: f.rel_str)
    skipped.sort(key=lambda s: s.rel)
    return ScanResult(files, entries, ok=True, error=None, unreadable=unreadable, skipped=skipped)


def _visit(
    entry: os.DirEntry[str],
    rel: str,
    depth: int,
    files: list[ScannedFile],
    subdirs: list[tuple[str, str, int]],
    skipped: list[SkippedEntry],
) -> None:
    name = entry.name
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
        plain = is_dir or entry.is_file(follow_symlinks=False)
    except OSError:
        return
    if is_dir:
        if not is_ignored_dir(name):
            subdirs.append((entry.path, f"{rel}{name}/", depth))
        return
    dot = name.rfind(".")
    video = dot > 0 and name[dot:].lower() in VIDEO_EXTENSIONS
    if not plain:
        _skip(entry, rel, video, skipped)
        return
    if not video or is_ignored_name(name):
        return
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return  # vanished
    if stat_mod.S_ISREG(st.st_mode):
        files.append(ScannedFile(entry.path, rel + name, FileStat.from_stat(st)))


def _skip(entry: os.DirEntry[str], rel: str, video: bool, skipped: list[SkippedEntry]) -> None:
    """Note an entry that is neither a regular file nor a folder (never followed or opened):
    a symbolic link named like a video or leading to a folder, or any special file."""
    name = entry.name
    try:
        kind = special_kind(entry.stat(follow_symlinks=False).st_mode)
        if kind == SYMLINK and entry.is_dir():  # a stat of the target; nothing is opened
            kind = SYMLINK_DIR
    except OSError:
        return  # vanished
    if kind is None or (kind == SYMLINK and not video):
        return
    if (is_ignored_dir if kind == SYMLINK_DIR else is_ignored_name)(name):
        return
    skipped.append(SkippedEntry(entry.path, rel + name, kind))


def os_error_text(exc: OSError) -> str:
    """The short reason of an OSError ("Permission denied"), without the path."""
    return exc.strerror or str(exc)

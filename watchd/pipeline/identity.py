"""A source file's identity: what it is on disk and a cheap fingerprint of its content.

The fingerprint (size + SHA-256 of the first and last MiB) recognises the same video dropped
again under another name, or seen again after a remount with new inode numbers, without reading
a multi-GB file twice.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from watchd.watching.regular import open_regular

EDGE = 1 << 20


@dataclass(frozen=True)
class FileIdentity:
    size: int
    mtime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.lstat(path)  # a link put in its place is another file (ST_ISREG checked on open)
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def same_content_as(self, other: FileIdentity) -> bool:
        """Size and mtime unchanged (inodes change across remounts; they are not compared)."""
        return (self.size, self.mtime_ns) == (other.size, other.mtime_ns)


class Work(Protocol):
    """What a job asks for besides its content (a ledger JobRow is one)."""

    @property
    def inbox(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def preset_dict(self) -> dict[str, Any]: ...


def same_work(a: Work, b: Work) -> bool:
    """Whether two jobs of the same content ask for the same results: the same inbox and rule,
    the same resolved preset. Only then is the later one a duplicate of the earlier."""
    return (a.inbox, a.rule) == (b.inbox, b.rule) and same_preset(a.preset_dict, b.preset_dict)


def same_preset(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two stored presets ask for the same work (where results go does not count)."""

    def work(preset: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in preset.items() if k != "_delivery"}

    return work(a) == work(b)


def fingerprint(
    path: Path, size: int | None = None, *, expect: tuple[int, int] | None = None
) -> str:
    """Raises ``regular.NotRegularFile`` for a link or a special file, and for another file
    than ``expect=(st_dev, st_ino)`` when given (see :func:`regular.open_regular`)."""
    h = hashlib.sha256()
    with open_regular(path, expect=expect) as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode())
        h.update(f.read(EDGE))
        if size > EDGE:
            f.seek(max(EDGE, size - EDGE))
            h.update(f.read(EDGE))
    return h.hexdigest()


def sha256_file(path: Path, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

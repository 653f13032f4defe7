"""When is a dropped file complete? A pure function of observations and time.

A file is *settled* once its size, mtime and inode have stayed the same for ``settle_seconds``
since we first saw it that way, and no local process holds it open for writing. Any change
restarts its clock: a slow chunked copy keeps moving its size or mtime, and a tool that writes
a temporary and renames it over the name changes the inode.

Nothing here sleeps or reads a clock: callers pass ``now`` (monotonic seconds). Events and
rescans both feed :meth:`SettleTracker.observe`; the daemon asks :meth:`SettleTracker.due` for
what is ready and sleeps :meth:`SettleTracker.next_due_in`. Not thread-safe: it belongs to the
daemon's loop, and watcher threads only enqueue paths for it.

The open-for-write check reads ``/proc`` and is by far the dearest step, so it runs only for a
file that has otherwise settled; a file found open starts a fresh settle period rather than
being asked again on every tick.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchd.watching import openfiles

log = logging.getLogger(__name__)

StatFn = Callable[[Path], os.stat_result]
# Which of these files a process holds open for writing (one walk of /proc for all of them).
OpenCheck = Callable[[list[Path]], set[Path]]


@dataclass(frozen=True)
class FileStat:
    """The identity and shape of a file at one moment."""

    size: int
    mtime_ns: int
    ino: int
    dev: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> FileStat:
        """Take the fields that matter from an ``os.stat_result``."""
        return cls(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino, dev=st.st_dev)


@dataclass(frozen=True)
class Settled:
    """A file that is complete, with the stat it settled at."""

    path: Path
    stat: FileStat


@dataclass
class _Entry:
    stat: FileStat
    since: float
    generation: int
    writing: bool = False  # found open for writing at its last due time


class SettleTracker:
    """Tracks candidate files until each has been stable for ``settle_seconds``."""

    def __init__(
        self,
        settle_seconds: float,
        stat: StatFn = os.lstat,  # a symbolic link is not a regular file: never followed
        open_for_write: OpenCheck = openfiles.open_for_write,
    ) -> None:
        if settle_seconds < 0:
            raise ValueError(f"settle_seconds must be >= 0, not {settle_seconds!r}")
        self.settle_seconds = float(settle_seconds)
        self._stat = stat
        self._open_for_write = open_for_write
        self._entries: dict[Path, _Entry] = {}
        # (due_at, generation, path). An entry whose clock restarts pushes a new item with a
        # new generation; stale items are skipped when they surface, which keeps due() and
        # next_due_in() logarithmic with tens of thousands of files pending.
        self._heap: list[tuple[float, int, Path]] = []
        self._generation = 0

    def observe(self, path: Path, now: float) -> None:
        """Record a sighting of ``path`` at ``now`` (an event or a rescan saw it).

        A new file starts its clock; a changed one restarts it; an unchanged one keeps it.
        A file that is gone, unreadable or not a regular file is dropped.
        """
        current = self._current(path)
        if current is None:
            self.forget(path)
            return
        entry = self._entries.get(path)
        if entry is None or entry.stat != current:
            self._start(path, current, now)

    def due(self, now: float) -> list[Settled]:
        """Files settled at ``now``; each is returned once and no longer tracked.

        Every file whose clock has run out is stat'ed again (events can be missed, and a
        network filesystem may change without any); only then is the open-for-write check
        made.
        """
        unchanged: list[tuple[Path, FileStat]] = []
        while self._heap and self._heap[0][0] <= now:
            _, generation, path = heapq.heappop(self._heap)
            entry = self._entries.get(path)
            if entry is None or entry.generation != generation:
                continue
            current = self._current(path)
            if current is None:
                del self._entries[path]
            elif current != entry.stat:
                self._start(path, current, now)
            else:
                unchanged.append((path, current))
        if not unchanged:
            return []
        # One walk of /proc for every file due now (a burst settles a thousand at once).
        writing = self._open_for_write([path for path, _ in unchanged])
        ready: list[Settled] = []
        for path, current in unchanged:
            if path in writing:
                log.debug("%s is still open for writing; waiting another settle period", path)
                self._start(path, current, now)
                self._entries[path].writing = True
            else:
                del self._entries[path]
                ready.append(Settled(path, current))
        return ready

    def forget(self, path: Path) -> None:
        """Stop tracking ``path`` (it was taken, or is known to be gone)."""
        self._entries.pop(path, None)

    def waiting(self) -> list[tuple[Path, FileStat, float, bool]]:
        """Every file still settling: its path, its stat, when its clock (re)started, and
        whether a process had it open for writing when it was last due."""
        return [(path, e.stat, e.since, e.writing) for path, e in self._entries.items()]

    def pending(self) -> int:
        """How many files are waiting to settle."""
        return len(self._entries)

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next file could be due (0 if one is due now); None if none wait."""
        while self._heap:
            due_at, generation, path = self._heap[0]
            entry = self._entries.get(path)
            if entry is not None and entry.generation == generation:
                return max(0.0, due_at - now)
            heapq.heappop(self._heap)
        return None

    def recheck(self, path: Path, expected: FileStat) -> bool:
        """True if ``path`` is still exactly the file that settled, and nobody is writing it.

        Called just before an upload starts: a file replaced or appended to since it settled
        must go round the settle loop again rather than be sent half-written.
        """
        current = self._current(path)
        return current == expected and not self._open_for_write([path])

    def _start(self, path: Path, current: FileStat, now: float) -> None:
        self._generation += 1
        self._entries[path] = _Entry(current, now, self._generation)
        heapq.heappush(self._heap, (now + self.settle_seconds, self._generation, path))

    def _current(self, path: Path) -> FileStat | None:
        try:
            st = self._stat(path)
        except OSError:
            return None
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return FileStat.from_stat(st)

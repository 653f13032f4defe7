"""Watchdog observers for one inbox: inotify where it works, polling where it cannot.

Events are hints, never the truth: the periodic rescan is. So this module's whole job is to
turn filesystem activity into quick calls to ``on_path`` (on watchdog's thread; the daemon
passes something thread-safe that only enqueues), and to keep doing so when the ground moves:

* a network filesystem under ``scan = "events"`` is polled instead, because inotify only sees
  writes made through this machine's kernel;
* running out of inotify watches or instances falls back to polling and says which sysctl
  to raise;
* a dead observer thread, or an inbox root that is now a different directory (a remount), is
  reported by :meth:`InboxObserver.alive` and fixed by :meth:`InboxObserver.restart`.

The inotify watch asks only for creations, completed writes, moves and deletions: a copy of a
multi-gigabyte file would otherwise wake us for every ``write()``, and the settle tracker
re-stats a file before trusting it anyway.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path, PurePosixPath
from typing import Literal

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

from watchd.watching import mounts
from watchd.watching.ignore import is_candidate, is_ignored_dir, is_ignored_name
from watchd.watching.scanner import os_error_text

log = logging.getLogger(__name__)

Mode = Literal["events", "poll"]
ObserverFactory = Callable[[], BaseObserver]
PollFactory = Callable[[float], BaseObserver]

JOIN_TIMEOUT = 10.0

# watchdog's inotify reader warns when a folder created inside a new folder is both found by
# its recursive walk and reported by its own IN_CREATE (`mkdir -p a/b`): a benign race it
# resolves itself. Left alone it fills the journal; turned into an error (as under a strict
# warnings filter) it kills the reader thread. Only these two messages are silenced.
WATCHDOG_BENIGN_WARNINGS = r"Callback with id '.*' (already exists|does not exist)"
warnings.filterwarnings(
    "ignore", message=WATCHDOG_BENIGN_WARNINGS, category=RuntimeWarning, module=r"watchdog\."
)


class _DropStopRace(logging.Filter):
    """Drops the error watchdog logs when its emitter loops once more while being stopped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_DropStopRace())

_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
]

# errno → (what ran out, the sysctl that raises it, a sensible value)
_INOTIFY_LIMITS = {
    errno.ENOSPC: ("inotify watch limit", "fs.inotify.max_user_watches", 524288),
    errno.EMFILE: ("inotify instance limit", "fs.inotify.max_user_instances", 1024),
}


def polling_observer(interval: float) -> BaseObserver:
    """A polling observer that snapshots only what the scanner would look at.

    Like watchdog's ``PollingObserver(timeout=interval)``, but its snapshots skip ignored
    folders (a large ``_done`` is not re-stat'ed every few seconds on a NAS) and never follow
    a symlinked folder, which plain ``os.stat`` would, out of the inbox or round a loop.
    """
    return PollingObserverVFS(_poll_stat, _poll_listdir, polling_interval=interval)


def _poll_stat(path: str) -> os.stat_result:
    return os.lstat(path)  # a symbolic link is reported, never followed


def _poll_listdir(path: str | None) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as it:
        for entry in it:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if not (is_ignored_dir(entry.name) if is_dir else is_ignored_name(entry.name)):
                yield entry


class _Enqueue(FileSystemEventHandler):
    """Passes candidate file paths to ``on_path``; never raises into watchdog's thread.

    Watchdog reports paths under the directory actually watched (the inbox root with symlinks
    resolved); they are handed on under the root as configured, as the scanner names them.
    """

    def __init__(self, watched: str, root: Path, on_path: Callable[[Path], None]) -> None:
        self._prefix = watched.rstrip("/") + "/"
        self._root = root
        self._on_path = on_path

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        try:
            for raw in (event.src_path, event.dest_path):
                path = os.fsdecode(raw) if raw else ""
                if not path.startswith(self._prefix):
                    continue
                rel = PurePosixPath(path[len(self._prefix) :])
                if is_candidate(rel):
                    self._on_path(self._root / rel)
        except Exception:
            # An exception here would kill watchdog's dispatcher thread, and events would
            # silently stop until the next liveness check.
            log.exception("on_path failed for %r", event)


class InboxObserver:
    """Watches one inbox tree and calls ``on_path`` for each candidate file touched.

    ``mode`` is what the configuration asks for; :attr:`effective_mode` is what runs, with
    :attr:`reason` saying why it polls. ``on_path`` is called on watchdog's thread for
    created, completely written, moved (both ends) and deleted candidate files.

    ``events_observer``, ``poll_observer`` and ``fs_type`` are seams for tests.
    """

    def __init__(
        self,
        root: Path,
        mode: Mode,
        on_path: Callable[[Path], None],
        poll_interval: float = 2.0,
        *,
        events_observer: ObserverFactory = Observer,
        poll_observer: PollFactory = polling_observer,
        fs_type: Callable[[Path], str] = mounts.fs_type,
    ) -> None:
        if mode not in ("events", "poll"):
            raise ValueError(f"mode must be 'events' or 'poll', not {mode!r}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval!r}")
        self.root = root
        self.mode: Mode = mode
        self.poll_interval = poll_interval
        self._on_path = on_path
        self._events_observer = events_observer
        self._poll_observer = poll_observer
        self._fs_type = fs_type
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None
        self._root_id: tuple[int, int] | None = None
        self._reported_root_change = False
        self.effective_mode: Mode = mode
        self.reason = "" if mode == "events" else 'scan = "poll" in the configuration'
        self.error: str | None = None
        self._said: set[str] = set()

    def start(self) -> bool:
        """Start watching; True if an observer now runs.

        Never raises for filesystem trouble: an inbox that cannot be watched (missing,
        unreadable) leaves :attr:`error` set and :meth:`alive` False, and the daemon retries
        with :meth:`restart` (typically once the inbox monitor sees the inbox back).
        """
        with self._lock:
            if self._observer is not None:
                return True
            self.error = None
            if self.mode == "events":
                self._pick_events_or_poll()
            self._observer = self._launch()
            return self._observer is not None

    def stop(self) -> None:
        """Stop watching and join the observer's threads (idempotent)."""
        with self._lock:
            observer, self._observer = self._observer, None
            self._root_id = None
        if observer is not None:
            _shut(observer, self.root)

    def restart(self) -> bool:
        """Stop whatever runs (dead or alive) and start afresh, choosing the mode again."""
        self.stop()
        return self.start()

    def alive(self) -> bool:
        """True if the observer and all its threads run, on the same inbox root as at start.

        A remounted share is a new directory: inotify watches on the old one would never fire
        again, so a changed device or inode of the root counts as dead.
        """
        with self._lock:
            observer, root_id = self._observer, self._root_id
        if observer is None or not _threads_alive(observer):
            return False
        try:
            st = os.stat(self.root)
        except OSError:
            return False
        if (st.st_dev, st.st_ino) != root_id:
            if not self._reported_root_change:
                self._reported_root_change = True
                log.warning("inbox %s is a different directory now (remounted?)", self.root)
            return False
        return True

    def _pick_events_or_poll(self) -> None:
        self.effective_mode, self.reason = "events", ""
        fs = self._fs_type(self.root)
        if mounts.is_network_type(fs):
            self.effective_mode = "poll"
            self.reason = (
                f"inbox {self.root} is on {fs}, a network filesystem: inotify does not see "
                f"files written by other machines, so it is polled every {self.poll_interval:g} s"
            )
            self._say(self.reason)

    def _launch(self) -> BaseObserver | None:
        try:
            root_st = os.stat(self.root)
        except OSError as exc:
            self._failed(exc)
            return None
        if self.effective_mode == "events":
            try:
                observer = self._schedule(self._events_observer())
            except OSError as exc:
                if exc.errno not in _INOTIFY_LIMITS:
                    self._failed(exc)
                    return None
                self._fall_back_from_inotify(exc)
            else:
                return self._started(observer, root_st)
        try:
            observer = self._schedule(self._poll_observer(self.poll_interval))
        except OSError as exc:
            self._failed(exc)
            return None
        return self._started(observer, root_st)

    def _schedule(self, observer: BaseObserver) -> BaseObserver:
        # Watch the real directory: inotify does not follow a symlinked root by itself.
        watched = os.path.realpath(self.root)
        handler = _Enqueue(watched, self.root, self._on_path)
        filt = _EVENT_FILTER if self.effective_mode == "events" else None
        try:
            observer.schedule(handler, watched, recursive=True, event_filter=filt)
            observer.start()
        except BaseException:
            # The inotify observer starts its reader thread when built; do not leak it.
            _shut(observer, self.root)
            raise
        return observer

    def _started(self, observer: BaseObserver, root_st: os.stat_result) -> BaseObserver:
        self._root_id = (root_st.st_dev, root_st.st_ino)
        self._reported_root_change = False
        self._said.clear()
        log.info("watching %s (%s)", self.root, self.effective_mode)
        return observer

    def _failed(self, exc: OSError) -> None:
        self.error = f"cannot watch {self.root}: {os_error_text(exc)}"
        self._say(self.error)

    def _say(self, warning: str) -> None:
        # The daemon may retry a failing start on every tick: each warning is said once.
        if warning not in self._said:
            self._said.add(warning)
            log.warning("%s", warning)

    def _fall_back_from_inotify(self, exc: OSError) -> None:
        what, sysctl, suggested = _INOTIFY_LIMITS[exc.errno or 0]
        current = _read_sysctl(sysctl)
        self.effective_mode = "poll"
        self.reason = (
            f"{what} reached while watching {self.root}"
            f" ({sysctl} = {current if current is not None else '?'}),"
            f" so it is polled every {self.poll_interval:g} s;"
            f" raise it with `sysctl -w {sysctl}={suggested}`"
            f" and persist that in /etc/sysctl.d/"
        )
        self._say(self.reason)


def _threads_alive(observer: BaseObserver) -> bool:
    if not observer.is_alive():
        return False
    if not all(e.is_alive() for e in list(observer.emitters)):
        return False
    # watchdog >= 6 reads inotify on a thread of its own, owned by the observer.
    reader = getattr(observer, "_inotify_fd", None)
    return not (isinstance(reader, threading.Thread) and not reader.is_alive())


def _shut(observer: BaseObserver, root: Path) -> None:
    try:
        observer.stop()
    except Exception:
        log.exception("stopping the observer of %s failed", root)
    with suppress(RuntimeError):  # never started
        observer.join(JOIN_TIMEOUT)
    if observer.is_alive():
        # A poll stuck on a hard-mounted NFS share: its threads are daemon threads, and a
        # new observer must not wait for them.
        log.warning("the observer of %s did not stop within %g s", root, JOIN_TIMEOUT)


def _read_sysctl(name: str) -> int | None:
    try:
        return int(Path("/proc/sys", *name.split(".")).read_text().strip())
    except (OSError, ValueError):
        return None

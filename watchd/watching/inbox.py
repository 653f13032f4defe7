"""Mount safety: is this inbox really there, or is it an unmounted share?

When a NAS share drops, its mount point is either gone or an empty local folder. Read
naively, either looks like "every file was deleted": jobs would lose their sources and a
remount would look like a flood of new files. :class:`InboxMonitor` turns those sightings
into a *pause* instead, with a reason a person can act on, and lifts it when entries come
back. The daemon reads the inbox's files only while it is not paused.

Pure: it sees scans (and, for :meth:`InboxMonitor.probe`, a ``stat`` and a ``listdir``) and
the time it is given; it never sleeps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchd.watching.scanner import ScanResult, os_error_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboxHealth:
    """Whether an inbox may be read, and if not, why and since when."""

    paused: bool
    reason: str = ""
    since: float | None = None


_OK = InboxHealth(paused=False)


class InboxMonitor:
    """Watches one inbox root for signs of an unmounted or vanished share.

    ``last_entries`` restores the count from the last good scan (kept in the ledger), so a
    daemon that starts while the share is down pauses instead of starting from "empty".
    Not thread-safe: it belongs to the daemon's loop.
    """

    def __init__(
        self,
        root: Path,
        *,
        stat: Callable[[Path], os.stat_result] = os.stat,
        listdir: Callable[[Path], list[str]] = os.listdir,
        last_entries: int | None = None,
    ) -> None:
        self.root = root
        self._stat = stat
        self._listdir = listdir
        self._last_entries = last_entries
        self._removed = 0
        self._dev: int | None = None
        self._health = _OK

    @property
    def health(self) -> InboxHealth:
        """The verdict of the last check or probe."""
        return self._health

    @property
    def last_good_entries(self) -> int | None:
        """Top-level entries at the last good scan (to persist); None before the first."""
        return self._last_entries

    def note_removed(self, count: int = 1) -> None:
        """The daemon itself removed ``count`` top-level entries (``on_success = "delete"``).

        An inbox the daemon emptied is not suspicious; without this, deleting the last file
        of an inbox with no subfolders would pause it until the next file arrives.
        """
        self._removed += count

    def check(self, scan: ScanResult, now: float) -> InboxHealth:
        """Judge a full scan of the inbox, made just now. This is the only way to resume."""
        if not scan.ok:
            return self._pause(scan.error or f"inbox {self.root} is unreadable", now)
        dev = self._root_dev(now)
        if dev is None:
            return self._health
        if scan.entries == 0 and self._expected() > 0:
            return self._pause(self._empty_reason(), now)
        if self._dev is not None and dev != self._dev:
            log.warning(
                "inbox %s is on another device now (%d, was %d): remounted?",
                self.root,
                dev,
                self._dev,
            )
        if self._health.paused:
            log.info("inbox %s is back (%d entries); resuming", self.root, scan.entries)
        self._dev = dev
        self._last_entries = scan.entries
        self._removed = 0
        self._health = _OK
        return self._health

    def probe(self, now: float) -> InboxHealth:
        """A cheap look between scans (one ``stat`` and one ``listdir`` of the root).

        It can pause an inbox (a share that dropped since the last scan) but never resumes
        one: only a full scan, through :meth:`check`, does that.
        """
        if self._root_dev(now) is None:
            return self._health
        try:
            entries = len(self._listdir(self.root))
        except OSError as exc:
            return self._pause(f"inbox {self.root} is unreadable: {os_error_text(exc)}", now)
        if entries == 0 and self._expected() > 0:
            return self._pause(self._empty_reason(), now)
        return self._health

    def _root_dev(self, now: float) -> int | None:
        try:
            return self._stat(self.root).st_dev
        except FileNotFoundError:
            self._pause(f"inbox {self.root} is missing (unmounted share?)", now)
        except OSError as exc:
            self._pause(f"inbox {self.root} is unreadable: {os_error_text(exc)}", now)
        return None

    def _expected(self) -> int:
        return (self._last_entries or 0) - self._removed

    def _empty_reason(self) -> str:
        return (
            f"inbox suddenly empty: had {self._last_entries} entries; waiting for it to come back"
        )

    def _pause(self, reason: str, now: float) -> InboxHealth:
        if not self._health.paused or self._health.reason != reason:
            log.warning("pausing inbox %s: %s", self.root, reason)
        since = self._health.since if self._health.paused else now
        self._health = InboxHealth(paused=True, reason=reason, since=since)
        return self._health

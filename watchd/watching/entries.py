"""Inbox entries that are not jobs, as ``watchd status`` shows them.

``watchd status`` is another process: what the daemon knows only in memory (a file still
settling, an entry it will not take) is mirrored into the ledger's ``inbox_entries`` table.

* **settling**: a file seen and waiting to be complete ("waiting for the copy to finish:
  unchanged for 2 s of 5"); the row goes when the file is taken or gone.
* **not taken** (state ``failed``, no job id): a symbolic link, a FIFO, a device, a socket, a
  name that cannot be stored, or an entry whose handling failed unexpectedly. Each is logged
  once, when first seen, and its row stays while the entry does.

Writes are batched: :meth:`EntryBook.sync` writes the difference since the last sync in one
relaxed transaction, at most every ``min_interval`` seconds (a burst of files does not cost a
commit per observation; losing the table to a power cut loses nothing: the next scan finds the
same entries again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from watchd.ledger.db import EntryRow, Ledger
from watchd.watching.ignore import nfc
from watchd.watching.regular import printable

if TYPE_CHECKING:
    from watchd.cluster.ledger import ClusterLedger

log = logging.getLogger("watchd.daemon")

SETTLING = "settling"
NOT_TAKEN = "failed"  # terminal until the entry changes or goes; never a job
SYNC_EVERY = 1.0
ERROR = "error"  # the code of an entry whose handling raised

Key = tuple[str, str]


WRITING = "open for writing"  # the reason of a settling file a process holds open to write


def settling_text(
    since: float | None, wait: float | None, now: float, reason: str | None = None
) -> str:
    """``waiting for the copy to finish: unchanged for 2 s of 5`` (``…: open for writing by a
    program, unchanged for 2 s`` while one holds it)."""
    if since is None or wait is None:
        return "waiting for the copy to finish"
    held = max(0, min(int(now - since), int(wait)))
    head = "waiting for the copy to finish"
    if reason == WRITING:
        return f"{head}: open for writing by a program, unchanged for {held} s"
    return f"{head}: unchanged for {held} s of {wait:g}"


def settling_row(
    inbox: str,
    path: str,
    rel: str,
    *,
    rule: str,
    since: float,
    wait: float,
    size: int,
    now: float,
    writing: bool = False,
) -> EntryRow:
    """The row of a file still settling (its clock started at ``since``, of ``wait`` s;
    ``writing``: a program holds it open for writing)."""
    return EntryRow(
        inbox=inbox,
        rel_path=rel,
        path=path,
        rule=rule,
        state=SETTLING,
        code=None,
        reason=WRITING if writing else None,
        escaped=0,
        since=since,
        wait=wait,
        size=size,
        updated_at=now,
    )


class EntryBook:
    """The daemon's entries that are not jobs (see the module docstring); one per daemon."""

    def __init__(self, *, min_interval: float = SYNC_EVERY) -> None:
        self.min_interval = min_interval
        self._not_taken: dict[Key, EntryRow] = {}
        self._settling: dict[Key, EntryRow] = {}
        self._synced: dict[Key, EntryRow] = {}
        self._next_sync = 0.0
        self._cleared = False
        self._scans: dict[str, set[Key]] = {}  # inbox -> keys seen by the scan under way
        # A row gone or a new entry not taken is written at once (a file taken must not show
        # as settling beside its job); only the settling clocks wait for min_interval.
        self._urgent = False

    # ---- not taken -----------------------------------------------------------------------

    def not_taken(
        self,
        inbox: str,
        path: str,
        rel: str,
        *,
        rule: str,
        code: str,
        reason: str,
        now: float,
        exc_info: Any = None,
    ) -> Key:
        """Record that the entry ``rel`` of ``inbox`` is not taken, and why; logged only when
        it is new (or its reason changed). Returns the entry's key."""
        shown_rel, escaped = printable(nfc(rel))
        shown_path, _ = printable(path)
        key = (inbox, shown_rel)
        self.seen(key)
        old = self._not_taken.get(key)
        if old is not None and (old.code, old.reason) == (code, reason):
            return key
        self._urgent = True
        self._not_taken[key] = EntryRow(
            inbox=inbox,
            rel_path=shown_rel,
            path=shown_path,
            rule=rule,
            state=NOT_TAKEN,
            code=code,
            reason=reason,
            escaped=int(escaped),
            since=None,
            wait=None,
            size=None,
            updated_at=now,
        )
        log.warning(
            "%s: %s",
            shown_path,
            reason,
            exc_info=exc_info,
            extra={"source_path": shown_path, "rule": rule, "state": "not_taken"},
        )
        return key

    @staticmethod
    def key(inbox: str, rel: str) -> Key:
        return (inbox, printable(nfc(rel))[0])

    def is_not_taken(self, inbox: str, rel: str) -> bool:
        return self.key(inbox, rel) in self._not_taken

    def regular(self, inbox: str, rel: str) -> None:
        """The entry is a regular file with a good name now: a row saying it is not goes; one
        for an error of its own stays (seen) until it is taken."""
        key = self.key(inbox, rel)
        row = self._not_taken.get(key)
        if row is None:
            return
        if row.code == ERROR:
            self.seen(key)
        else:
            del self._not_taken[key]

    def gone(self, inbox: str, rel: str) -> None:
        """The entry is no longer there (or is now taken as a job)."""
        self._not_taken.pop(self.key(inbox, rel), None)
        self._urgent = True

    def begin_scan(self, inbox: str) -> None:
        """A full scan of ``inbox`` starts reporting: what it does not see is gone after it."""
        self._scans[inbox] = set()

    def seen(self, key: Key) -> None:
        """The scan under way saw this entry (a not-taken one stays)."""
        keys = self._scans.get(key[0])
        if keys is not None:
            keys.add(key)

    def end_scan(self, inbox: str) -> None:
        """Forget the not-taken entries of ``inbox`` that its scan did not see."""
        keep = self._scans.pop(inbox, set())
        for key in [k for k in self._not_taken if k[0] == inbox and k not in keep]:
            del self._not_taken[key]
            self._urgent = True

    # ---- settling ------------------------------------------------------------------------

    def set_settling(self, rows: Iterable[EntryRow]) -> None:
        """The files settling now (replaces the previous set)."""
        self._settling = {(r.inbox, r.rel_path): r for r in rows}

    # ---- the ledger ----------------------------------------------------------------------

    def rows(self) -> dict[Key, EntryRow]:
        """Every row the table should hold now."""
        return {**self._settling, **self._not_taken}

    def due(self, now: float) -> bool:
        """Whether :meth:`sync` would write now: a row went or came, or ``min_interval`` has
        passed since the last sync."""
        return self._urgent or now >= self._next_sync

    def sync(self, ledger: Ledger | ClusterLedger, now: float, *, force: bool = False) -> bool:
        """Write what changed since the last sync (one relaxed transaction); at most every
        ``min_interval`` seconds unless ``force``. Returns whether it wrote."""
        if not force and not self.due(now):
            return False
        self._next_sync = now + self.min_interval
        self._urgent = False
        wanted = self.rows()
        put = [row for key, row in wanted.items() if _differs(self._synced.get(key), row)]
        stored: Iterable[Key] = self._synced
        if not self._cleared:
            # Rows a previous run left are stale: this run's scans find the entries again.
            stored = [(r.inbox, r.rel_path) for r in ledger.entries()]
            self._cleared = True
        drop = [key for key in stored if key not in wanted]
        if not put and not drop:
            return False
        with ledger.relaxed():
            ledger.sync_entries(put, drop)
        self._synced = wanted
        return True


def _differs(old: EntryRow | None, new: EntryRow) -> bool:
    """Whether the stored row must be rewritten (not for a new ``updated_at`` alone)."""
    return old is None or replace(old, updated_at=new.updated_at) != new

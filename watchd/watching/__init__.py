"""Watching inboxes: what is an input, when a file is complete, and whether the inbox is there.

Plain classes and functions, free of asyncio: the daemon drives them from its loop, and the
watchdog observers call back on their own threads only to enqueue a path.

A daemon tick, roughly::

    scan = scan_inbox(root)                  # the source of truth (every rescan_seconds)
    health = monitor.check(scan, now)        # never read a paused inbox as "all deleted"
    if not health.paused:
        for f in scan.files: tracker.observe(f.path, now)   # minus files the ledger has
    for path in drained_queue: tracker.observe(path, now)    # hints from InboxObserver
    for s in tracker.due(now): ...           # settled: record in the ledger
    if not observer.alive(): observer.restart()
    sleep(min(tracker.next_due_in(now), ...))
"""

from watchd.watching.ignore import (
    VIDEO_EXTENSIONS,
    is_candidate,
    is_ignored_dir,
    is_ignored_name,
    nfc,
)
from watchd.watching.inbox import InboxHealth, InboxMonitor
from watchd.watching.mounts import fs_type, is_network_fs, mount_point
from watchd.watching.observer import InboxObserver
from watchd.watching.openfiles import is_open_for_write
from watchd.watching.scanner import ScannedFile, ScanResult, scan_inbox
from watchd.watching.settle import FileStat, Settled, SettleTracker

__all__ = [
    "VIDEO_EXTENSIONS",
    "FileStat",
    "InboxHealth",
    "InboxMonitor",
    "InboxObserver",
    "ScanResult",
    "ScannedFile",
    "SettleTracker",
    "Settled",
    "fs_type",
    "is_candidate",
    "is_ignored_dir",
    "is_ignored_name",
    "is_network_fs",
    "is_open_for_write",
    "mount_point",
    "nfc",
    "scan_inbox",
]

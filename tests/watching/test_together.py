"""The pieces as the daemon will drive them: observer hints, scans, settling, mount safety.

Real files and a real inotify observer; time is a number the test advances.
"""

from __future__ import annotations

import queue
import shutil
from pathlib import Path

import pytest

from watchd.watching import InboxMonitor, InboxObserver, SettleTracker, scan_inbox

pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

TIMEOUT = 10.0


def _drain_until(q: queue.Queue[Path], path: Path) -> set[Path]:
    got: set[Path] = set()
    while path not in got:
        got.add(q.get(timeout=TIMEOUT))
    return got


def test_slow_copy_settles_only_after_the_writer_finishes(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "podcasts").mkdir(parents=True)
    hints: queue.Queue[Path] = queue.Queue()
    observer = InboxObserver(inbox, "events", hints.put, fs_type=lambda p: "ext4")
    tracker = SettleTracker(3.0)
    monitor = InboxMonitor(inbox)
    video = inbox / "podcasts" / "ep1.mp4"
    observer.start()
    try:
        now = 0.0
        with video.open("wb") as f:
            for _ in range(6):  # one chunk a "second", as a slow SMB copy would
                f.write(b"x" * 4096)
                f.flush()
                now += 1.0
                for p in list(_pending(hints)):
                    tracker.observe(p, now)
                tracker.observe(video, now)  # the periodic rescan sees it too
                assert tracker.due(now) == []
        # close() produced the last hint; the daemon observes it.
        for p in _drain_until(hints, video):
            tracker.observe(p, now)
        assert monitor.check(scan_inbox(inbox), now).paused is False
        wait = tracker.next_due_in(now)
        assert wait is not None and 0 < wait <= 3.0
        [settled] = tracker.due(now + wait)
        assert settled.path == video and settled.stat.size == 6 * 4096
        assert tracker.recheck(video, settled.stat)
    finally:
        observer.stop()


def _pending(q: queue.Queue[Path]) -> list[Path]:
    out: list[Path] = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return out


def test_unmounted_share_pauses_instead_of_losing_files(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.mp4").write_bytes(b"v")
    monitor = InboxMonitor(inbox)
    assert not monitor.check(scan_inbox(inbox), 0.0).paused
    shutil.rmtree(inbox)
    inbox.mkdir()  # the empty mount point of a share that dropped
    health = monitor.check(scan_inbox(inbox), 0.5)
    assert health.paused and "suddenly empty" in health.reason
    assert monitor.last_good_entries == 1  # what the ledger keeps across a restart
    (inbox / "a.mp4").write_bytes(b"v")  # the share is back
    assert not monitor.check(scan_inbox(inbox), 5.0).paused

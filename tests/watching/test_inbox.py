"""InboxMonitor: pause on a missing, unreadable or suddenly empty inbox; resume on return."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from watchd.watching.inbox import InboxHealth, InboxMonitor
from watchd.watching.scanner import ScanResult, scan_inbox


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "inbox"
    (root / "podcasts").mkdir(parents=True)
    (root / "podcasts" / "ep1.mp4").write_bytes(b"v")
    (root / "a.mp4").write_bytes(b"v")
    return root


def _unmount(root: Path) -> None:
    """What an unmounted share leaves: the mount point, empty."""
    shutil.rmtree(root)
    root.mkdir()


def test_healthy_inbox(share: Path) -> None:
    mon = InboxMonitor(share)
    assert mon.check(scan_inbox(share), 1.0) == InboxHealth(paused=False)
    assert mon.last_good_entries == 2
    assert mon.probe(2.0) == InboxHealth(paused=False)


def test_suddenly_empty_pauses_and_resumes(share: Path, caplog: pytest.LogCaptureFixture) -> None:
    mon = InboxMonitor(share)
    mon.check(scan_inbox(share), 1.0)
    _unmount(share)
    with caplog.at_level(logging.INFO, logger="watchd.watching.inbox"):
        h = mon.check(scan_inbox(share), 2.0)
        again = mon.check(scan_inbox(share), 3.0)
    assert h == InboxHealth(
        paused=True,
        reason="inbox suddenly empty: had 2 entries; waiting for it to come back",
        since=2.0,
    )
    assert again == h  # still paused, since the first sighting, logged once
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert mon.last_good_entries == 2  # never read as "everything was deleted"
    (share / "a.mp4").write_bytes(b"v")
    with caplog.at_level(logging.INFO, logger="watchd.watching.inbox"):
        assert mon.check(scan_inbox(share), 4.0) == InboxHealth(paused=False)
    assert "is back (1 entries); resuming" in caplog.records[-1].getMessage()
    assert mon.last_good_entries == 1


def test_missing_inbox_pauses(share: Path) -> None:
    mon = InboxMonitor(share)
    mon.check(scan_inbox(share), 1.0)
    shutil.rmtree(share)
    h = mon.check(scan_inbox(share), 2.0)
    assert h.paused and h.since == 2.0
    assert h.reason == f"inbox {share} is missing (unmounted share?)"
    assert mon.probe(3.0) == h
    share.mkdir()
    (share / "x.mov").write_bytes(b"v")
    assert not mon.check(scan_inbox(share), 4.0).paused


def test_missing_before_any_good_scan(tmp_path: Path) -> None:
    mon = InboxMonitor(tmp_path / "never")
    h = mon.check(scan_inbox(tmp_path / "never"), 1.0)
    assert h.paused and "is missing" in h.reason


def test_root_vanishing_between_scan_and_stat(share: Path) -> None:
    scan = scan_inbox(share)
    shutil.rmtree(share)
    h = InboxMonitor(share).check(scan, 1.0)
    assert h.paused and h.reason == f"inbox {share} is missing (unmounted share?)"


def test_unreadable_root(share: Path) -> None:
    def denied(p: Path) -> os.stat_result:
        raise PermissionError(13, "Permission denied")

    mon = InboxMonitor(share, stat=denied)
    h = mon.check(scan_inbox(share), 1.0)
    assert h.paused and h.reason == f"inbox {share} is unreadable: Permission denied"
    failed = ScanResult([], 0, ok=False, error=None)
    assert InboxMonitor(share).check(failed, 1.0).reason == f"inbox {share} is unreadable"


def test_fresh_empty_inbox_is_not_paused(tmp_path: Path) -> None:
    root = tmp_path / "new"
    root.mkdir()
    mon = InboxMonitor(root)
    assert not mon.check(scan_inbox(root), 1.0).paused
    assert mon.last_good_entries == 0
    assert not mon.check(scan_inbox(root), 2.0).paused


def test_restored_count_pauses_a_daemon_started_while_unmounted(tmp_path: Path) -> None:
    root = tmp_path / "mnt"
    root.mkdir()
    mon = InboxMonitor(root, last_entries=7)
    h = mon.check(scan_inbox(root), 1.0)
    assert h.paused and "had 7 entries" in h.reason


def test_hidden_entries_prove_the_share_is_there(share: Path) -> None:
    # Only ignored entries left (the daemon moved everything to _done): not suspicious.
    mon = InboxMonitor(share)
    mon.check(scan_inbox(share), 1.0)
    (share / "a.mp4").unlink()
    shutil.rmtree(share / "podcasts")
    (share / "_done").mkdir()
    assert not mon.check(scan_inbox(share), 2.0).paused


def test_daemon_emptying_the_inbox_is_not_suspicious(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"v")
    mon = InboxMonitor(root)
    mon.check(scan_inbox(root), 1.0)
    (root / "a.mp4").unlink()  # on_success = "delete"
    mon.note_removed()
    assert not mon.check(scan_inbox(root), 2.0).paused
    # ...but a share that then vanishes still pauses.
    (root / "b.mp4").write_bytes(b"v")
    mon.check(scan_inbox(root), 3.0)
    (root / "b.mp4").unlink()
    assert mon.check(scan_inbox(root), 4.0).paused


def test_probe_pauses_but_never_resumes(share: Path) -> None:
    mon = InboxMonitor(share)
    mon.check(scan_inbox(share), 1.0)
    _unmount(share)
    h = mon.probe(2.0)
    assert h.paused and "suddenly empty" in h.reason
    (share / "a.mp4").write_bytes(b"v")
    assert mon.probe(3.0) == h
    assert not mon.check(scan_inbox(share), 4.0).paused


def test_probe_unreadable_listing(share: Path) -> None:
    def broken(p: Path) -> list[str]:
        raise OSError(5, "Input/output error")

    mon = InboxMonitor(share, listdir=broken)
    mon.check(scan_inbox(share), 1.0)
    h = mon.probe(2.0)
    assert h.paused and h.reason == f"inbox {share} is unreadable: Input/output error"


def test_device_change_is_logged(share: Path, caplog: pytest.LogCaptureFixture) -> None:
    real = os.stat(share)
    dev = [real.st_dev]

    def stat(p: Path) -> os.stat_result:
        fields = list(real)
        fields[2] = dev[0]
        return os.stat_result(fields)

    mon = InboxMonitor(share, stat=stat)
    mon.check(scan_inbox(share), 1.0)
    dev[0] += 1
    with caplog.at_level(logging.WARNING, logger="watchd.watching.inbox"):
        assert not mon.check(scan_inbox(share), 2.0).paused
    assert "on another device now" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="watchd.watching.inbox"):
        mon.check(scan_inbox(share), 3.0)
    assert caplog.text == ""


def test_reason_change_while_paused_keeps_since(share: Path) -> None:
    mon = InboxMonitor(share)
    mon.check(scan_inbox(share), 1.0)
    _unmount(share)
    assert mon.check(scan_inbox(share), 2.0).since == 2.0
    share.rmdir()
    h = mon.check(scan_inbox(share), 3.0)
    assert h.paused and "missing" in h.reason and h.since == 2.0
    assert mon.health == h

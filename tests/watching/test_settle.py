"""SettleTracker: pure function of observations and time (tests pass times, never sleep)."""

from __future__ import annotations

import os
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchd.watching.settle import FileStat, Settled, SettleTracker


@dataclass
class FakeFS:
    """Just enough of os.stat for the tracker: regular files keyed by path."""

    files: dict[Path, list[int]] = field(default_factory=dict)  # size, mtime_ns, ino
    open_for_write: set[Path] = field(default_factory=set)
    stat_calls: int = 0
    open_checks: int = 0
    walks: int = 0

    def write(self, path: Path, size: int, mtime_ns: int, ino: int = 1) -> None:
        self.files[path] = [size, mtime_ns, ino]

    def stat(self, path: Path) -> os.stat_result:
        self.stat_calls += 1
        if path not in self.files:
            raise FileNotFoundError(path)
        size, mtime_ns, ino = self.files[path]
        return cast(
            os.stat_result,
            _St(st_mode=stat_mod.S_IFREG | 0o644, st_size=size, st_mtime_ns=mtime_ns, st_ino=ino),
        )

    def writing(self, paths: list[Path]) -> set[Path]:
        self.open_checks += len(paths)
        self.walks += 1
        return {p for p in paths if p in self.open_for_write}

    def tracker(self, settle: float = 5.0) -> SettleTracker:
        return SettleTracker(settle, stat=self.stat, open_for_write=self.writing)


@dataclass
class _St:
    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ino: int
    st_dev: int = 2049


A = Path("/in/a.mp4")
B = Path("/in/b.mp4")


def _tracking(*paths: Path, settle: float = 5.0) -> tuple[FakeFS, SettleTracker]:
    """A tracker that saw each of ``paths`` (10 bytes, mtime 1) at time 0."""
    fs = FakeFS()
    t = fs.tracker(settle)
    for p in paths:
        fs.write(p, 10, 1)
        t.observe(p, 0.0)
    return fs, t


def test_new_file_is_due_after_settle_seconds() -> None:
    fs = FakeFS()
    fs.write(A, 10, 1)
    t = fs.tracker(5)
    t.observe(A, 100.0)
    assert t.pending() == 1
    assert t.next_due_in(100.0) == 5.0
    assert t.due(104.9) == []
    assert t.due(105.0) == [Settled(A, FileStat(10, 1, 1, 2049))]
    assert t.pending() == 0
    assert t.next_due_in(105.0) is None
    assert t.due(200.0) == []  # returned once


def test_slow_chunked_copy_is_not_due_early() -> None:
    fs = FakeFS()
    t = fs.tracker(5)
    now = 0.0
    for chunk in range(1, 20):  # a chunk every 4 s: each restarts the clock
        fs.write(A, chunk * 1000, chunk)
        t.observe(A, now)
        now += 4.0
        assert t.due(now) == []
    assert t.due(now + 0.9) == []  # last change at now-4, so due at now+1
    [settled] = t.due(now + 1.0)
    assert settled.stat.size == 19_000


def test_change_seen_only_at_due_time_restarts_clock() -> None:
    # No event reported the change (a network share): due() stats again before trusting.
    fs, t = _tracking(A)
    fs.write(A, 20, 2)
    assert t.due(5.0) == []
    assert t.next_due_in(5.0) == 5.0
    assert [s.stat.size for s in t.due(10.0)] == [20]


def test_inode_change_restarts_clock() -> None:
    fs = FakeFS()
    fs.write(A, 10, 1, ino=1)
    t = fs.tracker(5)
    t.observe(A, 0.0)
    fs.write(A, 10, 1, ino=2)  # same size and mtime, replaced by rename
    t.observe(A, 3.0)
    assert t.due(5.0) == []
    assert [s.stat.ino for s in t.due(8.0)] == [2]


def test_unchanged_observation_keeps_clock() -> None:
    _fs, t = _tracking(A)
    t.observe(A, 4.0)  # a rescan saw it again, unchanged
    assert len(t.due(5.0)) == 1


def test_vanished_file_is_dropped() -> None:
    fs, t = _tracking(A, B)
    del fs.files[A]
    t.observe(A, 1.0)  # the delete event
    assert t.pending() == 1
    del fs.files[B]  # gone without an event
    assert t.due(5.0) == []
    assert t.pending() == 0
    assert t.next_due_in(5.0) is None


def test_unknown_missing_file_is_ignored() -> None:
    t = FakeFS().tracker()
    t.observe(A, 0.0)
    assert t.pending() == 0


def test_directories_are_not_tracked(tmp_path: Path) -> None:
    t = SettleTracker(0)
    t.observe(tmp_path, 0.0)
    assert t.pending() == 0


def test_open_for_write_blocks_and_is_checked_only_when_due() -> None:
    fs = FakeFS()
    fs.write(A, 10, 1)
    fs.open_for_write.add(A)
    t = fs.tracker(5)
    t.observe(A, 0.0)
    for now in (1.0, 2.0, 4.9):
        t.observe(A, now)
        assert t.due(now) == []
    assert fs.open_checks == 0
    assert t.due(5.0) == []
    assert fs.open_checks == 1
    # Found open: a fresh settle period, not a check on every tick.
    assert t.next_due_in(5.0) == 5.0
    assert t.due(9.0) == []
    assert fs.open_checks == 1
    fs.open_for_write.clear()
    assert len(t.due(10.0)) == 1
    assert fs.open_checks == 2


def test_files_due_together_are_checked_in_one_walk() -> None:
    fs = FakeFS()
    paths = [Path(f"/in/f{i}.mp4") for i in range(50)]
    for i, p in enumerate(paths):
        fs.write(p, 10, i + 1)
    fs.open_for_write.add(paths[7])
    t = fs.tracker(5)
    for p in paths:
        t.observe(p, 0.0)
    ready = t.due(5.0)
    assert [s.path for s in ready] == [p for p in paths if p != paths[7]]
    assert (fs.walks, fs.open_checks) == (1, 50)
    assert t.pending() == 1 and t.next_due_in(5.0) == 5.0  # the one being written waits on


def test_forget() -> None:
    _fs, t = _tracking(A)
    t.forget(A)
    t.forget(B)
    assert t.pending() == 0
    assert t.next_due_in(0.0) is None
    assert t.due(100.0) == []


def test_next_due_in_is_the_earliest() -> None:
    fs = FakeFS()
    fs.write(A, 10, 1)
    fs.write(B, 10, 1)
    t = fs.tracker(5)
    t.observe(A, 0.0)
    t.observe(B, 2.0)
    assert t.next_due_in(1.0) == 4.0
    assert t.next_due_in(9.0) == 0.0
    assert [s.path for s in t.due(5.0)] == [A]
    assert t.next_due_in(5.0) == 2.0


def test_zero_settle_and_negative_rejected() -> None:
    fs = FakeFS()
    fs.write(A, 10, 1)
    t = fs.tracker(0)
    t.observe(A, 7.0)
    assert len(t.due(7.0)) == 1
    with pytest.raises(ValueError):
        SettleTracker(-1)


def test_recheck() -> None:
    fs, t = _tracking(A)
    [s] = t.due(5.0)
    assert t.recheck(A, s.stat)
    fs.open_for_write.add(A)
    assert not t.recheck(A, s.stat)
    fs.open_for_write.clear()
    fs.write(A, 11, 2)
    assert not t.recheck(A, s.stat)
    del fs.files[A]
    assert not t.recheck(A, s.stat)


@pytest.mark.skipif(not os.path.exists("/proc/self/fdinfo"), reason="needs /proc")
def test_real_files_and_real_open_check(tmp_path: Path) -> None:
    # The defaults: os.stat and the /proc scan, with a real descriptor held open.
    video = tmp_path / "ep12.mp4"
    t = SettleTracker(5)
    with video.open("wb") as f:
        f.write(b"x" * 100)
        f.flush()
        t.observe(video, 0.0)
        assert t.due(5.0) == []
    [settled] = t.due(10.0)
    assert settled.path == video
    assert settled.stat == FileStat.from_stat(video.stat())


def test_many_pending_stays_cheap() -> None:
    fs = FakeFS()
    t = fs.tracker(5)
    paths = [Path(f"/in/{i}.mp4") for i in range(20_000)]
    for i, p in enumerate(paths):
        fs.write(p, 1, 1)
        t.observe(p, float(i % 100))
    fs.stat_calls = 0
    assert t.due(4.0) == []
    assert fs.stat_calls == 0  # nothing whose clock runs out is stat'ed
    assert len(t.due(5.0)) == 200
    assert fs.stat_calls == 200


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 10, allow_nan=False), st.booleans(), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_never_due_before_stable_for_settle_seconds(steps: list[tuple[float, bool, bool]]) -> None:
    # Safety: whether or not a write was reported, nothing is due until the current content
    # has been left alone for settle_seconds. Liveness: once writes stop, it becomes due
    # within two settle periods (one to notice an unreported change, one to wait it out).
    fs = FakeFS()
    fs.write(A, 0, 0)
    t = fs.tracker(5)
    now, last_write, version = 0.0, 0.0, 0
    t.observe(A, now)
    taken = False
    for dt, write, reported in steps:
        now += dt
        if write and not taken:
            version += 1
            fs.write(A, version, version)
            last_write = now
            if reported:
                t.observe(A, now)
        for s in t.due(now):
            taken = True
            assert s.stat.size == version
            assert now - last_write >= 5
    if not taken:
        # The daemon calls due() when next_due_in() says so.
        got = t.due(now + 5) + t.due(now + 10)
        assert len(got) == 1
        assert got[0].stat.size == version

"""The source's disposal repeated after a SIGKILL (seen in the soak benchmark): whichever side
of the move the daemon died on, the source ends in ``_done/<rule>/<name>`` and the ledger
says so."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.ledger.db import JobRow, Ledger
from watchd.outbox.delivery import dispose_source, find_disposed
from watchd.pipeline import deliver


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "inbox" / "podcasts").mkdir(parents=True)
    return tmp_path / "inbox"


def _job(ledger: Ledger, inbox: Path, data: bytes = b"video") -> JobRow:
    src = inbox / "podcasts" / "ep.mp4"
    src.write_bytes(data)
    st = src.stat()
    return ledger.add_job(
        inbox=str(inbox),
        rel_path="podcasts/ep.mp4",
        path=str(src),
        rule="podcasts",
        preset={"_delivery": {"inbox": str(inbox), "on_success": "move"}},
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        inode=st.st_ino,
        dev=st.st_dev,
        fingerprint="fp",
    )


def _pipeline(ledger: Ledger) -> Any:
    # _dispose only records the new path and tells of a source leaving the inbox's top level.
    return SimpleNamespace(
        ledger=ledger, on_event=lambda kind, data: None, source_path=lambda job: Path(job.path)
    )


def test_killed_after_the_move_before_the_path_was_recorded(inbox: Path) -> None:
    ledger = Ledger(None, clock=FakeClock())
    job = _job(ledger, inbox)
    dispose_source(Path(job.path), inbox, "podcasts", "move", "done")  # ... and then SIGKILL
    done = inbox / "_done" / "podcasts" / "ep.mp4"
    got = deliver._dispose(_pipeline(ledger), job, deliver.target_of(job), kind="done")
    assert got == str(done)
    assert ledger.require(job.id).path == str(done)
    assert os.listdir(done.parent) == ["ep.mp4"]


def test_killed_after_the_path_was_recorded_before_delivered(inbox: Path) -> None:
    ledger = Ledger(None, clock=FakeClock())
    job = _job(ledger, inbox)
    p = _pipeline(ledger)
    first = deliver._dispose(p, job, deliver.target_of(job), kind="done")  # ... and then SIGKILL
    again = deliver._dispose(p, ledger.require(job.id), deliver.target_of(job), kind="done")
    done = inbox / "_done" / "podcasts" / "ep.mp4"
    assert first == again == str(done)
    assert os.listdir(done.parent) == ["ep.mp4"] and done.read_bytes() == b"video"


def test_find_disposed_goes_by_inode_through_numbered_names(inbox: Path) -> None:
    done = inbox / "_done" / "podcasts"
    done.mkdir(parents=True)
    (done / "ep.mp4").write_bytes(b"an older ep.mp4")
    src = inbox / "podcasts" / "ep.mp4"
    src.write_bytes(b"this one")
    st = src.stat()
    kw = {"inode": st.st_ino, "dev": st.st_dev}
    assert find_disposed("ep.mp4", inbox, "podcasts", "done", **kw) is None
    moved = dispose_source(src, inbox, "podcasts", "move", "done")
    assert moved == done / "ep (2).mp4"
    assert find_disposed("ep.mp4", inbox, "podcasts", "done", **kw) == moved
    assert find_disposed("ep.mp4", inbox, "podcasts", "failed", **kw) is None
    assert find_disposed("other.mp4", inbox, "podcasts", "done", **kw) is None


# ---- killed between reserving the name and renaming onto it -------------------------------------


def _placeholder(path: Path, *, age: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o000)
    os.close(fd)
    os.chmod(path, 0o000)  # whatever the umask
    then = time.time() - age
    os.utime(path, (then, then))


def test_a_placeholder_left_by_a_killed_daemon_is_taken_over(inbox: Path) -> None:
    src = inbox / "podcasts" / "ep.mp4"
    src.write_bytes(b"video")
    stale = inbox / "_done" / "podcasts" / "ep.mp4"
    _placeholder(stale, age=3600)  # from before this process started
    dst = dispose_source(src, inbox, "podcasts", "move", "done")
    assert dst == stale and dst.read_bytes() == b"video"
    assert sorted(p.name for p in stale.parent.iterdir()) == ["ep.mp4"]


def test_a_fresh_placeholder_or_a_real_empty_file_is_numbered_around(inbox: Path) -> None:
    done = inbox / "_done" / "podcasts"
    _placeholder(done / "ep.mp4", age=-5)  # another disposal of this process, still moving
    (done / "ep (2).mp4").write_bytes(b"")  # somebody's empty file: readable, not ours
    src = inbox / "podcasts" / "ep.mp4"
    src.write_bytes(b"video")
    dst = dispose_source(src, inbox, "podcasts", "move", "done")
    assert dst == done / "ep (3).mp4" and dst.read_bytes() == b"video"
    assert (done / "ep.mp4").stat().st_size == 0 and (done / "ep (2).mp4").exists()

"""The source's disposal repeated after a SIGKILL (seen in the soak benchmark): whichever side
of the move the daemon died on, the source ends in ``_done/<rule>/<name>`` and the ledger
says so."""

from __future__ import annotations

import os
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
    return SimpleNamespace(ledger=ledger, on_event=lambda kind, data: None)


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

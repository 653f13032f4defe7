"""The ledger read back from outbox manifests (watchd/ledger/rebuild.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from watchd.clock import FakeClock
from watchd.config import InboxConfig, Preset, Rule
from watchd.ledger.db import Ledger
from watchd.ledger.rebuild import (
    SHA_PREFIX,
    any_manifest,
    manifests,
    pending,
    rebuild,
    rebuilt_without_source,
)
from watchd.pipeline.identity import fingerprint

CONTENT = b"video bytes " * 1000
DIGEST = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def inbox(tmp_path: Path) -> InboxConfig:
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    rules = (Rule("", Preset()), Rule("podcasts", Preset(video_type="podcast")))
    return InboxConfig(0, tmp_path / "in", tmp_path / "out", "keep", "move", rules)


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(None, clock=FakeClock())


def write_manifest(folder: Path, name: str, *, status: str = "delivered", **extra: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "status": status,
        "source": {"name": name, "size": len(CONTENT), "sha256": DIGEST},
        "rule": "podcasts",
        "project_id": "p-1",
        "clips": [],
        "skipped": [],
        "error": None,
        "completed_at": "2026-12-01T00:00:00Z",
        **extra,
    }
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder


def test_manifests_skips_hidden_folders_and_does_not_descend_into_deliveries(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    write_manifest(out / "podcasts/ep1", "ep1.mp4")
    write_manifest(out / "podcasts/ep1/exports/premiere", "inner.mp4")  # not a delivery
    write_manifest(out / "podcasts/.ep2.tmp", "ep2.mp4")
    assert [p.parent.name for p in manifests(out)] == ["ep1"]


def test_a_kept_source_gets_its_identity_and_fingerprint(
    inbox: InboxConfig, ledger: Ledger
) -> None:
    src = inbox.path / "podcasts/ep1.mp4"
    src.parent.mkdir()
    src.write_bytes(CONTENT)
    folder = write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")

    report = rebuild(ledger, [inbox])

    assert (report.delivered, report.failed, report.sources_found) == (1, 0, 1)
    (job,) = ledger.jobs()
    st = src.stat()
    assert (job.state, job.rel_path, job.rule, job.project_id) == (
        "delivered",
        "podcasts/ep1.mp4",
        "podcasts",
        "p-1",
    )
    assert (job.size, job.mtime_ns, job.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)
    assert job.fingerprint == fingerprint(src)
    assert job.outbox_dir == str(folder)
    assert job.preset_dict["video_type"] == "podcast"
    assert ledger.find_by_identity(str(inbox.path), job.rel_path, st.st_size, st.st_mtime_ns)
    # Twice: nothing new.
    again = rebuild(ledger, [inbox])
    assert (again.recorded, again.known) == (0, 1)


def test_a_source_moved_to_done_is_found(inbox: InboxConfig, ledger: Ledger) -> None:
    moved = inbox.path / "_done/podcasts/ep1.mp4"
    moved.parent.mkdir(parents=True)
    moved.write_bytes(CONTENT)
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")
    rebuild(ledger, [inbox])
    (job,) = ledger.jobs()
    assert job.fingerprint == fingerprint(moved) and job.disposed_to == str(moved)


def test_a_changed_source_is_not_trusted(inbox: InboxConfig, ledger: Ledger) -> None:
    """Same name and size, other content: the file is new work, not the delivered one."""
    src = inbox.path / "podcasts/ep1.mp4"
    src.parent.mkdir()
    src.write_bytes(CONTENT.replace(b"video", b"VIDEO"))
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")
    report = rebuild(ledger, [inbox])
    (job,) = ledger.jobs()
    assert report.sources_found == 0
    assert job.fingerprint == SHA_PREFIX + DIGEST
    assert job.mtime_ns == 0  # the scan does not take the file in the inbox for it


def test_a_gone_source_is_known_by_size_and_sha256(inbox: InboxConfig, ledger: Ledger) -> None:
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")
    rebuild(ledger, [inbox])
    (job,) = ledger.jobs()
    assert [j.id for j in rebuilt_without_source(ledger, len(CONTENT))] == [job.id]
    assert rebuilt_without_source(ledger, len(CONTENT) + 1) == []


def test_a_failed_manifest_is_a_failed_job(inbox: InboxConfig, ledger: Ledger) -> None:
    write_manifest(
        inbox.outbox / "ep9",
        "ep9.mp4",
        status="failed",
        rule="",
        project_id=None,
        error={"code": "probe_truncated", "message": "the file ends early"},
    )
    report = rebuild(ledger, [inbox])
    (job,) = ledger.jobs()
    assert report.failed == 1
    assert (job.state, job.rel_path, job.error_code) == ("failed", "ep9.mp4", "probe_truncated")
    # It billed nothing: it is no original for a later drop of the same content.
    assert rebuilt_without_source(ledger, len(CONTENT)) == []


def test_an_unreadable_manifest_is_reported_and_the_rest_recorded(
    inbox: InboxConfig, ledger: Ledger
) -> None:
    bad = inbox.outbox / "podcasts/bad"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")
    report = rebuild(ledger, [inbox])
    assert report.delivered == 1 and len(report.problems) == 1
    assert str(bad / "manifest.json") in report.problems[0]
    assert "could not be read" in report.summary()


def test_a_read_back_stopped_half_way_is_pending_until_finished(
    inbox: InboxConfig, ledger: Ledger
) -> None:
    for n in range(3):
        write_manifest(inbox.outbox / f"podcasts/ep{n}", f"ep{n}.mp4")
    calls = iter([False, True])  # stop before the second manifest
    report = rebuild(ledger, [inbox], should_stop=lambda: next(calls, True))
    assert report.recorded == 1 and pending(ledger)
    report = rebuild(ledger, [inbox])
    assert (report.recorded, report.known) == (2, 1) and not pending(ledger)


def test_a_source_name_that_leaves_its_folder_is_refused(
    inbox: InboxConfig, ledger: Ledger
) -> None:
    write_manifest(inbox.outbox / "podcasts/evil", "../../../etc/passwd")
    report = rebuild(ledger, [inbox])
    assert report.recorded == 0 and "is not a file name" in report.problems[0]


def test_any_manifest(inbox: InboxConfig) -> None:
    assert not any_manifest([inbox])
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4")
    assert any_manifest([inbox])


def test_a_rebuilt_job_asks_for_the_preset_its_manifest_records(
    inbox: InboxConfig, ledger: Ledger
) -> None:
    recorded = Preset(video_type="podcast", caption_style="KARAOKE", title="Ep One").to_json()
    write_manifest(inbox.outbox / "podcasts/ep1", "ep1.mp4", preset=recorded)
    write_manifest(inbox.outbox / "podcasts/ep2", "ep2.mp4", preset={"render": 12})  # bad
    write_manifest(inbox.outbox / "podcasts/ep3", "ep3.mp4")  # from before manifests had one
    rebuild(ledger, [inbox])
    jobs = {j.rel_path: j.preset_dict for j in ledger.jobs()}
    assert jobs["podcasts/ep1.mp4"]["caption_style"] == "KARAOKE"
    assert jobs["podcasts/ep1.mp4"]["title"] == "Ep One"
    assert jobs["podcasts/ep1.mp4"]["_delivery"]["outbox"] == str(inbox.outbox)
    for rel in ("podcasts/ep2.mp4", "podcasts/ep3.mp4"):  # the rule's preset, as it is now
        assert (jobs[rel]["video_type"], jobs[rel]["caption_style"]) == ("podcast", None)

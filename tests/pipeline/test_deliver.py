"""delivering -> delivered, duplicate -> delivered | failed | queued, and the failure report:
what lands in the outbox, where the source goes, and what the ledger says about it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.handoffs import count_hand_offs
from tests.pipeline.conftest import World, crash_at
from watchd.config import RenderChoice
from watchd.emulator import Faults
from watchd.ledger.states import Stage

ONE = RenderChoice("best", max_clips=1)


@pytest.mark.parametrize(
    ("on_success", "left"),
    [("move", "_done/talk.mp4"), ("keep", "talk.mp4"), ("delete", None)],
)
async def test_delivery_writes_the_outbox_then_disposes_of_the_source(
    world: World, on_success: str, left: str | None
) -> None:
    job = world.drop(render=ONE, delivery={"on_success": on_success})
    p = world.pipeline()
    await world.run(p)
    j = world.job(job.id)
    folder = world.outbox / "talk"
    assert (j.state, j.outbox_dir, j.progress) == ("delivered", str(folder), 100)
    ev = world.events(job.id)[-1]
    assert (ev.kind, ev.from_state, ev.to_state) == ("delivered", "delivering", "delivered")
    assert json.loads(ev.detail or "") == {
        "status": "delivered",
        "clips": 1,
        "folder": str(folder),
    }
    doc = world.manifest(job.id)
    (clip,) = doc["clips"]
    assert (doc["status"], doc["job_id"], doc["project_id"]) == ("delivered", j.id, j.project_id)
    assert doc["source"] == {"name": "talk.mp4", "size": j.size, "sha256": j.sha256}
    for key in ("file", "captions", "thumbnail"):
        assert (folder / clip[key]).is_file(), key
    assert clip["file"].startswith("01 - ") and clip["file"].endswith(".mp4")
    assert not [f for f in folder.rglob(".*")]  # no temporary left visible or hidden
    if left is None:
        assert j.disposed_to is None and not list(world.inbox.rglob("*.mp4"))
    else:
        assert j.disposed_to == str(world.inbox / left) and (world.inbox / left).is_file()


async def test_a_failure_with_on_failure_keep_leaves_the_source(world: World) -> None:
    world.emu.update(faults=Faults(fail_project="FAILED_CORRUPT_VIDEO"))
    job = world.drop(delivery={"on_failure": "keep"})
    p = world.pipeline()
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "failed" and Path(job.path).is_file()
    assert j.disposed_to == job.path
    text = (world.outbox / "talk" / "FAILED.txt").read_text()
    assert "FAILED_CORRUPT_VIDEO" in text and j.id in text


async def test_an_unwritable_outbox_is_retried_not_failed(world: World) -> None:
    blocker = world.root / "not-a-folder"
    blocker.write_text("a file where the outbox should be")
    job = world.drop(render="none", delivery={"outbox": str(blocker / "out")})
    p = world.pipeline()
    await world.run(p, lambda: world.job(job.id).attempts == 1)
    j = world.job(job.id)
    assert j.state == "delivering"
    assert "Not a directory" in (j.error or "")
    assert 1.6 <= j.next_attempt_at - world.clock.now() <= 2.0
    blocker.unlink()
    await world.run(p)
    j = world.job(job.id)
    assert (j.state, j.outbox_dir) == ("delivered", str(blocker / "out" / "talk"))


# ---- duplicates ---------------------------------------------------------------------------------


async def test_a_duplicate_waits_for_its_original_then_points_to_it(world: World) -> None:
    first = world.drop("a.mp4", render=ONE)
    p = world.pipeline()
    crashed = crash_at(p, Stage.RENDERING)
    await world.run(p, lambda: bool(crashed))
    second = world.drop("later/b.mp4", render=ONE)
    await world.step(p)
    j = world.job(second.id)
    assert (j.state, j.attempts, j.duplicate_of) == ("duplicate", 0, first.id)
    # A wait, not an error.
    assert j.error is None
    assert j.wait == f"duplicate: same content as job {first.id} (rendering); delivered when it is"
    p = await world.restart(p)
    await world.run(p)
    assert world.job(first.id).state == "delivered"
    j = world.job(second.id)
    assert (j.state, j.project_id) == ("delivered", world.job(first.id).project_id)
    ev = world.events(second.id)[-1]
    assert (ev.kind, ev.from_state) == ("delivered_duplicate", "duplicate")
    doc = world.manifest(second.id)
    assert doc["duplicate_of"] == {"job_id": first.id, "source": "a.mp4", "outbox_folder": "a"}
    assert doc["clips"] == [] and doc["skipped"][0]["what"] == "duplicate"
    assert (world.inbox / "_done" / "b.mp4").is_file()
    assert len(world.snapshot()["projects"]) == 1


async def test_a_duplicate_of_a_failed_job_fails_pointing_to_it(world: World) -> None:
    world.emu.update(faults=Faults(fail_project="FAILED_NO_SPEECH"))
    first = world.drop("a.mp4")
    p = world.pipeline()
    await world.run(p)
    second = world.drop("b.mp4")
    await world.run(p)
    j = world.assert_failed(
        second.id, left="duplicate", code="duplicate_of_failed", resume="duplicate"
    )
    assert world.path_of(second.id) == ["queued", "duplicate", "failed"]
    assert f"(job {first.id})" in (j.error or "") and "`watchd retry` it" in (j.error or "")
    assert len(world.snapshot()["projects"]) == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"rule": "a"}, {"rule": "b"}),  # another rule, the same preset
        ({"caption_style": "KARAOKE"}, {"caption_style": "HORMOZI"}),  # another preset
        ({"title": "One"}, {"title": "Two"}),  # another sidecar
    ],
)
async def test_the_same_content_with_other_work_to_do_is_not_a_duplicate(
    world: World, first: dict[str, Any], second: dict[str, Any]
) -> None:
    one = world.drop("a/x.mp4", render=ONE, **first)
    two = world.drop("b/y.mp4", render=ONE, **second)
    p = world.pipeline()
    await world.run(p)
    assert world.job(one.id).state == world.job(two.id).state == "delivered"
    assert world.job(two.id).duplicate_of is None
    assert len(world.snapshot()["projects"]) == 2


async def test_delivery_writes_each_clip_and_the_job_once(world: World) -> None:
    """The writes a delivery costs: the folder's reservation, then one row update per clip (its
    video, captions and thumbnail together) committed with the transition, which also records
    where the source went; no progress line for a single clip."""
    job = world.drop(render=ONE)
    p = world.pipeline()
    crashed = crash_at(p, Stage.DELIVERING)
    await world.run(p, lambda: bool(crashed))
    p = await world.restart(p)
    writes: list[str] = []
    world.ledger.db.conn.set_trace_callback(
        lambda sql: writes.append(sql) if sql.startswith(("UPDATE ", "COMMIT")) else None
    )
    try:
        await world.run(p)
    finally:
        world.ledger.db.conn.set_trace_callback(None)
    j = world.assert_delivered_once(job.id)
    # Two commits: the reservation, then the clip's row with the transition.
    assert writes.count("COMMIT") == 2, writes
    clip_writes = [w for w in writes if w.startswith("UPDATE clips")]
    job_writes = [w for w in writes if w.startswith("UPDATE jobs")]
    assert len(clip_writes) == 1, clip_writes
    assert all(k in clip_writes[0] for k in ("file =", "sha256 =", "captions =", "thumbnail ="))
    assert len(job_writes) == 2, job_writes  # outbox_dir reserved; then the transition
    assert "outbox_dir =" in job_writes[0] and "state = 'delivered'" in job_writes[1]
    assert j.path == j.disposed_to == str(world.inbox / "_done" / "talk.mp4")
    (row,) = world.ledger.clips(job.id, selected_only=True)
    assert row.file and row.captions and row.thumbnail and row.sha256


def _clip_reads(world: World, clip_id: str) -> int:
    return sum(
        1
        for r in world.snapshot()["requests"]
        if r["method"] == "GET" and r["path"].endswith(f"/v1/clips/{clip_id}")
    )


async def test_delivery_uses_the_transcript_and_thumbnail_saved_with_the_preset(
    world: World,
) -> None:
    job = world.drop(render=ONE)
    p = world.pipeline()
    await world.run(p)
    world.assert_delivered_once(job.id)
    (clip,) = world.ledger.clips(job.id, selected_only=True)
    assert clip.words and clip.thumbnail_url
    assert _clip_reads(world, clip.clip_id) == 1  # when the preset was applied, not again
    (entry,) = world.manifest(job.id)["clips"]
    srt_text = (world.outbox / "talk" / entry["captions"]).read_text()
    assert srt_text.startswith("1\n00:00:00,")  # the saved words, clip-relative


async def test_a_saved_thumbnail_link_that_fails_is_asked_for_again(world: World) -> None:
    job = world.drop(render=ONE)
    p = world.pipeline()
    crashed = crash_at(p, Stage.DELIVERING)
    await world.run(p, lambda: bool(crashed))
    (clip,) = world.ledger.clips(job.id, selected_only=True)
    assert clip.thumbnail_url
    gone = clip.thumbnail_url.split("?")[0] + ".expired"  # the storage answers 404
    world.ledger.update_clip(job.id, clip.clip_id, thumbnail_url=gone)
    p = await world.restart(p)
    await world.run(p)
    world.assert_delivered_once(job.id)
    (entry,) = world.manifest(job.id)["clips"]
    assert (world.outbox / "talk" / entry["thumbnail"]).stat().st_size > 0
    skipped = world.manifest(job.id)["skipped"]
    assert not [s for s in skipped if not s["what"].startswith("clip ")]  # but those not chosen
    assert _clip_reads(world, clip.clip_id) == 2  # the preset's read, and the fresh link


async def test_clips_delivered_before_a_failure_are_not_fetched_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from watchd.outbox import manifest as manifest_mod

    job = world.drop(render=ONE)
    p = world.pipeline()
    real_write = manifest_mod.write_manifest
    failures: list[int] = []

    def full_disk(folder: Path, doc: Any) -> Path:
        if not failures:
            failures.append(1)
            raise OSError(28, "No space left on device")
        return real_write(folder, doc)

    monkeypatch.setattr(manifest_mod, "write_manifest", full_disk)
    await world.run(p, lambda: bool(failures))
    (clip,) = world.ledger.clips(job.id, selected_only=True)
    assert clip.file and clip.sha256 and clip.captions and clip.thumbnail  # kept for the retry
    await world.run(p)
    world.assert_delivered_once(job.id)
    videos = [
        r for r in world.snapshot()["requests"] if r["path"].endswith(f"/{clip.clip_id}/video")
    ]
    assert len(videos) == 1


async def test_captions_go_to_the_thread_with_the_manifest(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each hand-off to a worker thread costs the loop a wake-up and the GIL a few switches: a
    clip's SRT is written in the manifest's hand-off, not one of its own."""
    handed = count_hand_offs(monkeypatch)
    job = world.drop(render=RenderChoice("best", max_clips=2))
    await world.run(world.pipeline())
    doc = world.manifest(job.id)
    assert len(doc["clips"]) == 2
    for clip in doc["clips"]:
        assert (world.outbox / "talk" / clip["captions"]).read_text().startswith("1\n")
    assert [c.captions for c in world.ledger.clips(job.id, selected_only=True)] == [
        c["captions"] for c in doc["clips"]
    ]
    assert "atomic_write_text" not in handed
    assert handed.count("_write_and_verify") == 1

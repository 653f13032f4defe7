"""uploading -> uploaded | probed | queued | failed and uploaded -> processing | uploading |
parked: the upload, presigned URL expiry, a source that changes or vanishes, and /process."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.conftest import World, crash_at
from watchd.emulator import Faults, Timings, Variants
from watchd.ledger.db import JobRow
from watchd.ledger.states import Stage
from watchd.pipeline import ingest
from watchd.pipeline.runner import Pipeline
from watchd.pipeline.scheduler import ProcessingLimit


@contextlib.contextmanager
def held_open(path: str | Path) -> Iterator[None]:
    """A local writer holds the file: the last look before upload makes the job wait."""
    with open(path, "r+b"):
        yield


async def to_uploading(world: World, p: Pipeline, job: JobRow) -> JobRow:
    """Run ``job`` until its project exists and the upload waits on a local writer (the
    caller holds the file open)."""
    await world.run(p, lambda: world.job(job.id).stage is Stage.UPLOADING)
    j = world.job(job.id)
    assert (j.error, j.wait) == (None, "settling: a local process has the file open for writing")
    return j


async def waiting_upload(world: World, **settings: Any) -> tuple[Pipeline, JobRow]:
    """A new job run until its project exists and its upload waits (a local writer held the
    file meanwhile; it has let go since)."""
    job = world.drop()
    p = world.pipeline(**settings)
    with held_open(job.path):
        j = await to_uploading(world, p, job)
    return p, j


async def test_upload_waits_while_a_local_process_writes_the_file(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    with held_open(job.path):
        j = await to_uploading(world, p, job)
        assert (j.attempts, j.next_attempt_at) == (0, world.clock.now() + 5.0)
        world.clock.advance(5.0)
        await world.step(p)
        assert world.job(job.id).stage is Stage.UPLOADING  # still held
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "delivered"
    detail = world.detail(job.id, "uploaded")
    assert detail["bytes"] == j.size and detail["sha256"] == j.sha256
    assert j.bytes_uploaded == j.size  # written by the transition to uploaded
    puts = [r for r in world.snapshot()["requests"] if r["method"] == "PUT"]
    assert len(puts) == 1


@pytest.mark.parametrize("emu_settings", [{"faults": Faults(upload_reset_rate=1.0)}])
async def test_a_reset_upload_is_retried_from_the_start_with_backoff(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    await world.run(p, lambda: world.job(job.id).attempts == 2)
    j = world.job(job.id)
    assert j.state == "uploading"
    assert 3.2 <= j.next_attempt_at - world.clock.now() <= 4.0  # the 2nd failure waits ~4 s
    world.emu.update(faults=Faults())
    await world.run(p)
    assert world.assert_delivered_once(job.id).attempts == 0
    assert "project_restarted" not in world.kinds(job.id)


async def test_storage_refusing_the_upload_restarts_the_project_after_five_tries(
    world: World,
) -> None:
    p, job = await waiting_upload(world)
    assert job.upload_url
    bad = job.upload_url.replace("X-Amz-Signature=", "X-Amz-Signature=00")
    world.ledger.update(job.id, upload_url=bad)
    old = job.project_id
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "delivered" and j.project_id != old
    restarted = world.detail(job.id, "project_restarted")
    assert restarted["old_project_id"] == old
    assert restarted["reason"].startswith("upload refused 5 times: ")
    assert "SignatureDoesNotMatch" in restarted["reason"]
    assert "X-Amz-Signature=00" not in restarted["reason"]  # no presigned secrets in the ledger
    world.assert_delivered_once(job.id, replaced=old)


async def test_an_upload_url_past_its_lifetime_restarts_the_project(world: World) -> None:
    p, job = await waiting_upload(world)
    old = job.project_id
    # Measured on our own monotonic clock: the URL was handed to this process an hour ago.
    world.clock.advance(3600.0 - 59.0)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.project_id, j.upload_url) == ("probed", None, None)
    ev = world.events(job.id, "project_restarted")[-1]
    assert (ev.from_state, ev.to_state) == ("uploading", "probed")
    assert world.detail(job.id, "project_restarted") == {
        "reason": "the presigned upload URL expired",
        "old_project_id": old,
    }
    assert j.next_attempt_at == 0  # the first restart goes straight back for a slot
    await world.run(p)
    j = world.assert_delivered_once(job.id, replaced=old)


async def test_a_project_without_a_known_upload_url_is_made_afresh(world: World) -> None:
    p, job = await waiting_upload(world)
    world.ledger.update(job.id, upload_url=None)  # adopted after a lost create, say
    world.clock.advance(5.0)
    await world.step(p)
    assert world.detail(job.id, "project_restarted") == {
        "reason": "no upload URL known for the project",
        "old_project_id": job.project_id,
    }
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=job.project_id)


async def test_a_url_still_inside_its_margin_is_used(world: World) -> None:
    p, job = await waiting_upload(world)
    world.clock.advance(3600.0 - 61.0)  # 60 s margin before expiry
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    assert "project_restarted" not in world.kinds(job.id)


async def test_an_upload_url_that_expired_while_the_daemon_was_stopped(world: World) -> None:
    p, job = await waiting_upload(world)
    old = job.project_id
    p = await world.restart(p)
    world.clock.advance(3600.0)  # judged by our wall clock against the signer's date
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=old)
    assert world.detail(job.id, "project_restarted")["reason"] == (
        "the presigned upload URL expired"
    )


async def test_storage_saying_expired_restarts_the_project(world: World) -> None:
    p, job = await waiting_upload(world)
    old = job.project_id
    # Our clock says the URL is fresh; the signer's says it is not (our clock runs behind).
    world.emu_clock.advance(7200.0)
    world.clock.advance(5.0)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.project_id) == ("probed", None)
    assert world.detail(job.id, "project_restarted")["reason"] == (
        "the presigned upload URL expired"
    )
    storage_puts = [r for r in world.snapshot()["requests"] if r["method"] == "PUT"]
    assert [r["status"] for r in storage_puts] == [403]
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=old)


async def test_an_expired_url_of_a_project_already_uploaded_moves_on(world: World) -> None:
    p, job = await waiting_upload(world)
    assert job.project_id and job.upload_url
    # An earlier run uploaded and started processing, then died before writing it down.
    client = world.client()
    await client.upload(job.upload_url, Path(job.path), "video/mp4")
    await client.process_project(job.project_id)
    p = await world.restart(p)
    world.clock.advance(7200.0)
    await world.run(p)
    world.assert_delivered_once(job.id)
    kinds = world.kinds(job.id)
    assert "upload_found_done" in kinds and "project_restarted" not in kinds


async def test_repeated_project_restarts_back_off(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    with held_open(job.path):
        await to_uploading(world, p, job)
        world.clock.advance(3600.0)
        await world.step(p)  # restart 1: straight back
        assert world.job(job.id).next_attempt_at == 0
        await to_uploading(world, p, job)
        world.clock.advance(3600.0)
        await world.step(p)  # restart 2: waits
    j = world.job(job.id)
    assert j.state == "probed"
    assert len(world.events(job.id, "project_restarted")) == 2
    assert 1.6 <= j.next_attempt_at - world.clock.now() <= 2.0
    assert j.error and j.error.startswith("project restarted 2 times (the presigned upload URL")
    await world.run(p)
    j = world.assert_delivered_once(job.id)


async def test_a_source_rewritten_after_create_deletes_the_project_and_starts_over(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    with held_open(job.path):
        j = await to_uploading(world, p, job)
        shutil.copyfile(world.samples[1], job.path)  # the editor saved another version
    old = j.project_id
    new_size = Path(job.path).stat().st_size
    world.clock.advance(5.0)
    await world.step(p)
    j = world.job(job.id)
    ev = world.events(job.id, "source_changed")[-1]
    assert (ev.from_state, ev.to_state) == ("uploading", "queued")
    assert world.detail(job.id, "source_changed") == {"old_project_id": old, "size": new_size}
    assert (j.project_id, j.upload_url, j.size) == (None, None, new_size)
    await world.run(p)
    j = world.assert_delivered_once(job.id, replaced=old)
    assert [pr["filesize"] for pr in world.billed(j.marker)] == [new_size]


async def test_a_source_gone_before_its_upload_fails_and_its_project_is_not_billed(
    world: World,
) -> None:
    p, job = await waiting_upload(world, missing_source_grace=60.0)
    old = job.project_id
    Path(job.path).unlink()
    await world.run(p)
    j = world.assert_failed(job.id, left="uploading", code="source_missing", resume="queued")
    assert world.path_of(job.id)[-2:] == ["uploading", "failed"]
    # The project would wait for its bytes for ever (billed, holding a slot): it is deleted.
    assert world.detail(job.id, "project_deleted") == {
        "project_id": old,
        "reason": "talk.mp4 disappeared from the inbox before it was uploaded",
    }
    assert (j.project_id, j.upload_url) == (None, None)
    (project,) = world.projects(j.marker)
    assert project["deleted"] and not world.billed(j.marker)


async def test_a_source_gone_after_an_unrecorded_upload_is_processed_not_billed_again(
    world: World,
) -> None:
    """The bytes reached the storage, then the daemon died before recording it, and the source
    was moved away meanwhile: /process proves the upload, the job goes on with its project."""
    p, job = await waiting_upload(world)
    assert job.upload_url and job.content_type
    await p.client.upload(job.upload_url, Path(job.path), job.content_type)
    Path(job.path).unlink()
    p = await world.restart(p)
    await world.run(p)
    j = world.assert_delivered_once(job.id)
    assert j.project_id == job.project_id
    assert world.detail(job.id, "upload_unconfirmed") == {
        "reason": "source gone; the upload may have completed before a restart"
    }
    assert len(world.billed(j.marker)) == 1


async def test_a_source_unreachable_behind_a_paused_inbox_waits_at_uploading(
    world: World,
) -> None:
    p, job = await waiting_upload(world)
    p.paused_inboxes.add(job.inbox)
    Path(job.path).unlink()
    world.clock.advance(5.0)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.error) == ("uploading", None)
    assert j.wait == "inbox paused: the source cannot be reached until it is back"
    assert "upload_unconfirmed" not in world.kinds(job.id)


async def test_a_source_gone_while_waiting_for_a_slot_creates_no_project(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    await world.step(p)
    assert world.job(job.id).stage is Stage.PROBED
    Path(job.path).unlink()
    await world.run(p)
    world.assert_failed(job.id, left="creating", code="source_missing", resume="queued")
    assert world.path_of(job.id) == ["queued", "probed", "creating", "failed"]
    assert world.snapshot()["projects"] == []


# ---- uploaded -----------------------------------------------------------------------------------


async def test_process_refused_because_the_storage_has_no_upload_reuploads(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    with held_open(job.path):
        await to_uploading(world, p, job)
        # The ledger says uploaded, the storage never saw the bytes (lost in a crash).
        world.ledger.transition(job.id, Stage.UPLOADED, kind="test_setup", next_attempt_at=0)
        for n in (1, 2, 3):
            await world.step(p)
            j = world.job(job.id)
            assert (j.state, j.attempts) == ("uploaded", n)
            assert j.error == "Carmic has not registered the upload yet"
            world.clock.advance(5.0)
        await world.step(p)  # the fourth 409: upload again
        ev = world.events(job.id, "reupload")[-1]
        assert (ev.from_state, ev.to_state) == ("uploaded", "uploading")
        assert world.detail(job.id, "reupload") == {
            "reason": "the storage does not have the upload"
        }
    await world.run(p)
    j = world.assert_delivered_once(job.id)


@pytest.mark.parametrize("emu_settings", [{"minutes": 0}])
async def test_process_402_parks_at_uploaded_until_minutes_are_back(world: World) -> None:
    job = world.drop()
    p = world.pipeline(park_retry_seconds=900.0)
    await world.step(p)
    world.ledger.update(job.id, duration=None)  # nothing pre-deducted: /process charges
    await world.run(p, lambda: world.job(job.id).stage is Stage.PARKED)
    world.assert_parked(
        job.id,
        left="uploaded",
        resume="uploaded",
        reason="billing: Insufficient processing minutes (1 needed, 0 left)",
    )
    world.emu.add_minutes(100)
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "delivered"
    assert world.path_of(job.id)[4:8] == ["uploaded", "parked", "uploaded", "processing"]
    assert world.kinds(job.id).count("uploaded") == 1  # not uploaded twice


async def test_process_tier_limit_parks_at_uploaded_and_wakes_when_ours_finishes(
    world: World,
) -> None:
    world.emu.update(
        tier="PROFESSIONAL", variants=Variants(tier_limit_at="process", tier_limit_status=409)
    )
    first = world.drop("a.mp4", render="none")
    p = world.pipeline(limit=ProcessingLimit(), realtime="poll")
    crashed = crash_at(p, Stage.PROCESSING)
    # The first project holds the tier's only slot while the emulator's clock stands still.
    world.emu.update(timings=Timings(step=100.0))
    await world.run(p, lambda: bool(crashed))
    second = world.drop("b.mp4", sample=1, render="none")
    await world.run(p, lambda: world.job(second.id).stage is Stage.PARKED)
    world.assert_parked(
        second.id,
        left="uploaded",
        resume="uploaded",
        reason="tier limit: Concurrent processing limit",
    )
    assert p.limit.effective() == 1  # learned: one of ours was processing
    world.emu.update(timings=Timings())
    world.emu_clock.advance(1000.0)  # the first project's processing ends
    p.handlers[Stage.PROCESSING] = ingest.handle_processing
    await world.run(p, jump=False)  # woken by our own slot coming free, not by the clock
    for job in (first, second):
        world.assert_delivered_once(job.id)


async def test_upload_progress_logs_the_quarters_between_its_first_and_last_line(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    job = world.drop()
    p = world.pipeline()
    report = ingest._ProgressReporter(p, job)
    with caplog.at_level("INFO"):
        for sent in (0, 10, 30, 55, 60, 80, 100):
            report(sent, 100)
        one_chunk = ingest._ProgressReporter(p, job)
        one_chunk(0, 100)
        one_chunk(100, 100)  # a small file: no percentage line at all
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploading ")]
    name = job.name
    assert lines == [f"uploading {name}: 25%", f"uploading {name}: 50%", f"uploading {name}: 75%"]
    # Within half a second nothing is written: the end is the transition's write, not this.
    assert world.job(job.id).bytes_uploaded == 0

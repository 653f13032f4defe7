"""queued -> probed | duplicate | failed, and creating -> uploading | probed | parked | failed:
local checks before anything is billed, and exactly one billed project per file."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from tests.carmic.fakeapi import FakeApi, make_client, ok
from tests.pipeline.conftest import World, crash_at
from watchd.emulator import Faults, Variants
from watchd.ledger.states import Stage
from watchd.pipeline import ingest
from watchd.pipeline.ingest import project_title
from watchd.pipeline.scheduler import ProcessingLimit
from watchd.probe import ProbeError

# ---- queued -------------------------------------------------------------------------------------


async def test_a_valid_video_is_probed_with_its_duration_and_type(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.duration, j.content_type) == ("probed", 12.0, "video/mp4")
    assert world.detail(job.id, "probed") == {"duration": 12.0, "content_type": "video/mp4"}
    assert world.snapshot()["projects"] == []  # probing bills nothing


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (lambda s: b"", "empty"),
        (lambda s: random.Random(1).randbytes(50_000), "not_video"),
        (lambda s: s[: len(s) // 2], "truncated"),
    ],
    ids=["zero-byte", "random-bytes", "truncated"],
)
async def test_a_bad_file_fails_locally_and_creates_no_project(
    world: World, content: Any, code: str
) -> None:
    src = world.inbox / "bad.mp4"
    src.write_bytes(content(world.samples[0].read_bytes()))
    job = world.add(src)
    p = world.pipeline(hold_seconds=0)  # a truncated file is not held (test_hold.py)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.error_code, j.resume_stage) == ("failed", f"probe_{code}", "queued")
    assert world.detail(job.id, "failed")["code"] == f"probe_{code}"
    assert (world.outbox / "bad" / "FAILED.txt").is_file()
    assert world.manifest(job.id)["status"] == "failed"
    assert (world.inbox / "_failed" / "bad.mp4").is_file() and not src.exists()
    # The same text beside the source where it was moved, as config.example.toml says.
    beside = world.inbox / "_failed" / "bad.mp4.FAILED.txt"
    assert beside.read_text() == (world.outbox / "bad" / "FAILED.txt").read_text()
    assert world.snapshot()["projects"] == []


async def test_a_probe_timeout_retries_later_and_counts(world: World) -> None:
    async def hung(path: Path, **_: Any) -> Any:
        raise ProbeError("timeout", "no answer from the NAS within 120 s")

    job = world.drop()
    p = world.pipeline(probe_fn=hung)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.attempts) == ("queued", 1)
    assert j.error == "probing timed out (no answer from the NAS within 120 s)"
    assert 1.6 <= j.next_attempt_at - world.clock.now() <= 2.0


async def test_a_file_written_to_after_settling_waits_to_settle_again(world: World) -> None:
    job = world.drop()
    with open(job.path, "ab") as f:
        f.write(b"more")
    p = world.pipeline(poll_seconds=10.0)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.attempts, j.size) == ("queued", 0, job.size + 4)
    assert j.next_attempt_at == world.clock.now() + 5.0
    assert world.detail(job.id, "source_changed") == {"size": job.size + 4}


async def test_a_vanished_source_is_looked_for_twice_then_fails(world: World) -> None:
    job = world.drop()
    Path(job.path).unlink()
    p = world.pipeline(missing_source_grace=60.0)
    for n in (1, 2):
        await world.step(p)
        j = world.job(job.id)
        assert (j.state, j.attempts) == ("queued", n)
        assert j.next_attempt_at == world.clock.now() + 60.0
        assert "looking again in 60s" in (j.error or "")
        world.clock.advance(60.0)
    await world.step(p)
    j = world.assert_failed(job.id, left="queued", code="source_missing", resume="queued")
    assert not (world.outbox / "talk").exists()  # nothing to report next to: it is gone


async def test_a_source_in_a_paused_inbox_waits_without_counting(world: World) -> None:
    job = world.drop()
    Path(job.path).unlink()
    p = world.pipeline()
    p.paused_inboxes.add(str(world.inbox))
    for _ in range(3):
        await world.step(p)
        world.clock.advance(30.0)
    j = world.job(job.id)
    assert (j.state, j.attempts) == ("queued", 0)
    assert (j.error, j.wait) == (
        None,
        "inbox paused: the source cannot be reached until it is back",
    )


async def test_same_content_again_is_a_duplicate_not_a_second_project(world: World) -> None:
    first = world.drop("a.mp4")
    p = world.pipeline()
    await world.run(p)
    second = world.drop("b.mp4")
    await world.run(p)
    assert world.path_of(second.id) == ["queued", "duplicate", "delivered"]
    assert world.detail(second.id, "duplicate") == {"of": first.id}
    assert world.job(second.id).duplicate_of == first.id
    assert len(world.snapshot()["projects"]) == 1


async def test_an_earlier_drop_that_failed_before_billing_does_not_count(world: World) -> None:
    first = world.drop("a.mp4")
    world.ledger.transition(first.id, Stage.FAILED, kind="test_setup")
    world.clock.advance(1.0)
    second = world.drop("b.mp4")
    p = world.pipeline()
    await world.step(p)
    assert world.job(second.id).state == "probed"
    assert world.job(second.id).duplicate_of is None


# ---- creating -----------------------------------------------------------------------------------


async def test_create_records_the_project_and_sends_the_marker_and_preset(world: World) -> None:
    job = world.drop(video_type="podcast", custom_instructions="laughs", title="Episode 12")
    p = world.pipeline()
    crash_at(p, Stage.UPLOADING)
    await world.run(p, lambda: world.job(job.id).stage is Stage.UPLOADING)
    j = world.job(job.id)
    (project,) = world.projects(j.marker)
    assert project["title"] == f"Episode 12 [{j.marker}]" == project_title(j)
    assert (project["video_type"], project["custom_instructions"]) == ("podcast", "laughs")
    assert (project["duration"], project["filesize"]) == (12.0, j.size)
    assert j.project_id == project["id"] and j.upload_url and j.object_key
    assert world.kinds(job.id)[-2:] == ["create_intent", "created"]
    assert world.detail(job.id, "created") == {
        "project_id": project["id"],
        "object_key": project["object_key"],
    }


async def test_a_file_unreadable_when_taken_is_fingerprinted_when_retried(world: World) -> None:
    job = world.drop("a.mp4")
    world.ledger.update(job.id, fingerprint="")  # as the daemon records a file it cannot read
    p = world.pipeline()
    await world.step(p)
    after = world.job(job.id)
    assert after.state == "probed" and len(after.fingerprint) == 64


async def test_a_long_name_is_cut_to_the_title_limit_keeping_the_marker(world: World) -> None:
    job = world.drop(title="t" * 300)
    title = project_title(job)
    assert len(title) == 255 and title.endswith(f" [{job.marker}]")


@pytest.mark.parametrize("emu_settings", [{"creates_per_minute": 1}])
async def test_create_rate_limited_gives_the_slot_back(world: World) -> None:
    first = world.drop("a.mp4")
    second = world.drop("b.mp4", sample=1)
    p = world.pipeline()
    crash_at(p, Stage.UPLOADING)
    await world.step(p)  # both probed
    await world.step(p)  # both granted a slot; the emulator takes one create a minute
    states = sorted(world.job(j.id).state for j in (first, second))
    assert states == ["probed", "uploading"]
    deferred = next(j for j in (first, second) if world.job(j.id).state == "probed")
    ev = world.events(deferred.id)[-1]
    assert (ev.kind, ev.from_state, ev.to_state) == ("create_deferred", "creating", "probed")
    assert "project creations per minute" in world.detail(deferred.id, "create_deferred")["reason"]
    j = world.job(deferred.id)
    assert j.next_attempt_at > world.clock.now() and j.attempts == 0
    assert p.in_flight() == 1  # the slot went back


@pytest.mark.parametrize("status", [429, 402, 403, 409])
async def test_create_tier_limit_parks_learns_the_limit_and_wakes_when_a_slot_frees(
    world: World, status: int
) -> None:
    world.emu.update(tier="PROFESSIONAL", variants=Variants(tier_limit_status=status))
    first = world.drop("a.mp4", render="none")
    second = world.drop("b.mp4", sample=1, render="none")
    p = world.pipeline(limit=ProcessingLimit())  # the tier is unknown: nothing holds creates
    crash_at(p, Stage.UPLOADING)  # the first project stays waiting for its upload
    await world.step(p)
    await world.step(p)
    parked = [j for j in (first, second) if world.job(j.id).state == "parked"]
    assert len(parked) == 1, [world.job(j.id).state for j in (first, second)]
    j = world.assert_parked(
        parked[0].id,
        left="creating",
        resume="probed",
        reason="tier limit: Concurrent processing limit",
    )
    assert j.attempts == 0
    assert j.next_attempt_at > world.clock.now()  # the service's Retry-After
    assert p.limit.effective() == 1  # one of ours existed when the limit answered
    assert len(world.snapshot()["projects"]) == 1
    # Once the first project is through processing, the parked job goes on at once.
    p.handlers[Stage.UPLOADING] = ingest.handle_uploading
    await world.run(p, jump=False)
    for job in (first, second):
        world.assert_delivered_once(job.id)
    assert world.path_of(j.id)[2:5] == ["creating", "parked", "probed"]


@pytest.mark.parametrize("how", ["schedule", "watchd retry"])
@pytest.mark.parametrize("emu_settings", [{"minutes": 0}])
async def test_create_402_parks_until_minutes_are_back(world: World, how: str) -> None:
    job = world.drop()
    p = world.pipeline(park_retry_seconds=900.0)
    await world.run(p, lambda: world.job(job.id).stage is Stage.PARKED)
    j = world.assert_parked(
        job.id, left="creating", resume="probed", reason="billing: Insufficient processing minutes"
    )
    assert j.next_attempt_at == world.clock.now() + 900.0
    assert world.snapshot()["projects"] == []
    world.emu.add_minutes(100)
    if how == "watchd retry":
        world.ledger.retry(job.id)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    assert world.path_of(job.id)[:6] == [
        "queued",
        "probed",
        "creating",
        "parked",
        "probed",
        "creating",
    ]
    world.assert_delivered_once(job.id)


async def test_create_refused_as_invalid_fails_with_the_reason_and_a_hint(world: World) -> None:
    job = world.drop(trim_start=100.0)  # past the end of the 12 s video
    p = world.pipeline()
    await world.run(p)
    world.assert_failed(job.id, left="creating", code="BadRequest", resume="creating")
    assert "trim_start: must not be past the end" in world.detail(job.id, "failed")["message"]
    assert "Fix the rule's settings" in (world.outbox / "talk" / "FAILED.txt").read_text()
    assert world.snapshot()["projects"] == []


@pytest.mark.parametrize("mode", ["500", "drop"])
async def test_a_lost_create_answer_is_found_by_its_marker(world: World, mode: str) -> None:
    world.emu.update(faults=Faults(create_commit_then_fail=1.0, commit_fail_mode=mode))
    job = world.drop()
    p = world.pipeline()
    await world.step(p)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.attempts, j.project_id) == ("creating", 1, None)
    assert j.error and j.error.startswith("create answer lost")
    assert j.next_attempt_at == world.clock.now() + 5.0  # let the service finish committing
    (orphan,) = world.projects(j.marker)
    world.emu.update(faults=Faults())
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=orphan["id"])
    assert world.detail(job.id, "orphan_deleted") == {
        "project_id": orphan["id"],
        "reason": "create answer lost; no upload URL",
    }


async def test_a_restart_with_a_create_intent_searches_before_creating(world: World) -> None:
    job = world.drop()
    p = world.pipeline()
    crashed = crash_at(p, Stage.CREATING)  # the intent is on disk; the POST never left
    await world.run(p, lambda: bool(crashed))
    assert world.job(job.id).state == "creating"
    p = await world.restart(p)
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "delivered"
    searches = [
        r
        for r in world.snapshot()["requests"]
        if r["method"] == "GET" and r["path"].endswith("/v1/projects")
    ]
    assert len(searches) == 1
    assert "orphan_deleted" not in world.kinds(job.id)
    world.assert_delivered_once(job.id)


async def test_a_lost_create_whose_project_was_already_started_is_adopted(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    await world.step(p)
    world.force(job.id, Stage.CREATING)  # not this process's fresh intent: it searches first
    j = world.job(job.id)
    # The earlier run created, uploaded and processed the project, then lost the ledger write.
    client = world.client()
    created = await client.create_project(
        filename=j.name, filesize=j.size, duration=j.duration, title=project_title(j)
    )
    await client.upload(created.upload_url, Path(j.path), "video/mp4")
    await client.process_project(created.project_id)
    await world.run(p)
    j = world.job(job.id)
    assert (j.state, j.project_id) == ("delivered", created.project_id)
    assert world.detail(job.id, "create_recovered") == {
        "project_id": created.project_id,
        "status": "CLIPS_READY",
    }
    kinds = world.kinds(job.id)
    assert kinds.index("create_recovered") < kinds.index("upload_found_done")
    assert "created" not in kinds
    world.assert_delivered_once(job.id)
    uploads = [r for r in world.snapshot()["requests"] if r["method"] == "PUT"]
    assert len(uploads) == 1  # ours, above: the daemon did not upload again


async def test_two_lost_creates_adopt_the_started_one_and_delete_the_other(
    world: World,
) -> None:
    job = world.drop()
    p = world.pipeline()
    await world.step(p)
    world.force(job.id, Stage.CREATING)
    j = world.job(job.id)
    client = world.client()
    # Two earlier runs each created a project and lost the answer; one of them got further.
    kw = {"filename": j.name, "filesize": j.size, "duration": j.duration}
    first = await client.create_project(**kw, title=project_title(j))
    second = await client.create_project(**kw, title=project_title(j))
    await client.upload(second.upload_url, Path(j.path), "video/mp4")
    await client.process_project(second.project_id)
    await world.run(p)
    j = world.job(job.id)
    assert (j.state, j.project_id) == ("delivered", second.project_id)
    assert world.detail(job.id, "orphan_deleted") == {
        "project_id": first.project_id,
        "reason": "a second lost create",
    }
    by_id = {pr["id"]: pr for pr in world.projects(j.marker)}
    assert by_id[first.project_id]["deleted"] and not by_id[second.project_id]["deleted"]
    world.assert_delivered_once(job.id)


async def test_a_lost_create_listed_with_its_upload_url_is_adopted(world: World) -> None:
    job = world.drop()
    world.force(job.id, Stage.CREATING)
    j = world.job(job.id)
    url = (
        "https://storage.test/put?X-Amz-Date=20990101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=s"
    )
    api = FakeApi()
    api.routes[("GET", "/v1/projects")] = lambda r: ok(
        [
            {"id": "other", "title": "someone else's [wd-x]", "status": "PENDING_UPLOAD"},
            {
                "id": "p1",
                "title": project_title(j),
                "status": "PENDING_UPLOAD",
                "upload_url": url,
                "object_key": "k/p1.mp4",
            },
        ],
        meta={"total": 2, "limit": 100, "offset": 0, "has_more": False},
    )
    client = make_client(api, clock=world.clock)
    world.clients.append(client)
    p = world.pipeline(client=client)
    crash_at(p, Stage.UPLOADING)
    await world.step(p)
    j = world.job(job.id)
    assert (j.state, j.project_id, j.upload_url, j.object_key) == (
        "uploading",
        "p1",
        url,
        "k/p1.mp4",
    )
    assert world.detail(job.id, "create_recovered") == {"project_id": "p1"}
    assert api.count("POST", "/v1/projects/create") == 0
    assert api.count("DELETE", "/v1/projects/other") == 0
    search = next(r for r in api.log if r.url.path.endswith("/v1/projects"))
    assert search.url.params["search"] == j.marker

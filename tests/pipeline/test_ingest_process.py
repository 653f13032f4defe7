"""processing -> clips_ready | failed | parked: following the project (SSE or polling), the
API's FAILED_* outcomes with its reason, and the clip choice recorded in the ledger."""

from __future__ import annotations

import pytest

from tests.pipeline.conftest import World, crash_at
from watchd.carmic.models import ProjectStatus
from watchd.config import RenderChoice
from watchd.emulator import Faults
from watchd.failures import failure
from watchd.ledger.states import Stage
from watchd.pipeline import ingest


@pytest.mark.parametrize("realtime", ["sse", "poll"])
async def test_processing_ends_with_the_clips_recorded_and_chosen(
    world: World, realtime: str
) -> None:
    job = world.drop(render="all")
    p = world.pipeline(realtime=realtime)
    crash_at(p, Stage.CLIPS_READY)
    await world.run(p, lambda: world.job(job.id).stage is Stage.CLIPS_READY)
    j = world.job(job.id)
    assert (j.progress, j.step) == (100, "clips ready")
    clips = world.ledger.clips(job.id)
    assert len(clips) == 2 and all(c.selected for c in clips)
    assert [c.rank for c in clips] == [1, 2]
    assert clips[0].virality_score >= clips[1].virality_score
    assert world.detail(job.id, "clips_ready") == {"clips": 2, "chosen": 2}
    assert world.path_of(job.id)[-3:] == ["uploaded", "processing", "clips_ready"]


async def test_best_of_chooses_by_score_and_count(world: World) -> None:
    job = world.drop(render=RenderChoice("best", min_score=0, max_clips=1))
    p = world.pipeline()
    crash_at(p, Stage.CLIPS_READY)
    await world.run(p, lambda: world.job(job.id).stage is Stage.CLIPS_READY)
    clips = world.ledger.clips(job.id)
    assert [c.selected for c in clips] == [1, 0]
    assert world.detail(job.id, "clips_ready") == {"clips": 2, "chosen": 1}


@pytest.mark.parametrize("status", ["FAILED_NO_SPEECH", "FAILED_CORRUPT_VIDEO", "FAILED"])
@pytest.mark.parametrize("realtime", ["sse", "poll"])
async def test_a_failed_project_fails_the_job_with_the_api_reason(
    world: World, status: str, realtime: str
) -> None:
    world.emu.update(faults=Faults(fail_project=status))
    job = world.drop()
    p = world.pipeline(realtime=realtime)
    await world.run(p)
    j = world.assert_failed(job.id, left="processing", code=status.lower(), resume="probed")
    (project,) = world.projects(j.marker)
    assert project["status"] == status
    message = world.detail(job.id, "failed")["message"]
    assert message.startswith(f"Carmic processing ended in {status}: ")
    failed_txt = (world.outbox / "talk" / "FAILED.txt").read_text()
    assert message.split(": ", 1)[1] in failed_txt  # the API's own words reach the person
    assert " ".join(failure(status.lower()).hint.split())[:40] in " ".join(failed_txt.split())
    assert world.manifest(job.id)["error"]["code"] == status.lower()
    assert (world.inbox / "_failed" / "talk.mp4").is_file()


async def test_failed_no_speech_carries_the_emulator_reason(world: World) -> None:
    world.emu.update(faults=Faults(fail_project="FAILED_NO_SPEECH"))
    job = world.drop()
    p = world.pipeline()
    await world.run(p)
    assert world.detail(job.id, "failed") == {
        "code": "failed_no_speech",
        "message": (
            "Carmic processing ended in FAILED_NO_SPEECH: No speech was detected in the video"
        ),
    }


async def test_failed_billing_parks_and_starts_over_with_a_new_project(world: World) -> None:
    world.emu.update(faults=Faults(fail_project="FAILED_BILLING"))
    job = world.drop()
    p = world.pipeline(park_retry_seconds=900.0)
    await world.run(p, lambda: world.job(job.id).stage is Stage.PARKED)
    j = world.assert_parked(
        job.id, left="processing", resume="probed", reason="billing: project FAILED_BILLING"
    )
    first_project = j.project_id
    world.emu.update(faults=Faults())
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=first_project, deleted=False)


async def test_a_project_without_clips_fails(world: World) -> None:
    job = world.drop(trim_start=0.0, trim_end=0.4)  # nothing long enough to be a clip
    p = world.pipeline()
    await world.run(p)
    j = world.job(job.id)
    assert (j.state, j.error_code) == ("failed", "no_clips")
    assert world.detail(job.id, "failed") == {
        "code": "no_clips",
        "message": "Carmic found no clips in this video",
    }


@pytest.mark.parametrize("status", ["FAILED", "FAILED_NO_SPEECH"])
async def test_watchd_retry_of_a_failed_project_starts_over_with_a_new_one(
    world: World, status: str
) -> None:
    world.emu.update(faults=Faults(fail_project=status))
    job = world.drop(render="none")
    p = world.pipeline()
    await world.run(p)
    j = world.job(job.id)
    dead = j.project_id
    assert (j.state, j.resume_stage) == ("failed", "probed")  # not the dead project again
    world.emu.update(faults=Faults())
    world.ledger.retry(job.id)
    await world.run(p)
    world.assert_delivered_once(job.id, replaced=dead, deleted=False)
    assert world.path_of(job.id)[6:9] == ["failed", "probed", "creating"]
    assert (world.inbox / "_done" / "talk.mp4").is_file()  # taken back from _failed/


@pytest.mark.parametrize("realtime", ["sse", "poll"])
async def test_a_project_done_when_first_looked_at_costs_one_call(
    world: World, realtime: str
) -> None:
    """After /process the project is looked at once, which lists its clips when it is done
    already (as after a restart): no status read, no stream."""
    job = world.drop(render="all")
    p = world.pipeline(realtime=realtime)
    crash_at(p, Stage.CLIPS_READY)
    await world.run(p, lambda: world.job(job.id).stage is Stage.CLIPS_READY)
    pid = world.job(job.id).project_id
    assert pid
    requests = world.snapshot()["requests"]
    calls = [f"{r['method']} {r['path']}" for r in requests if r.get("origin") == "api"]
    after = calls[calls.index(f"POST /api/v1/projects/{pid}/process") + 1 :]
    assert after == [f"GET /api/v1/projects/{pid}"]
    assert len(world.ledger.clips(job.id)) == 2


@pytest.mark.parametrize(
    ("step", "line"),
    [("", "processing: TRANSCRIBING (12%)"), ("Whisper", "processing: TRANSCRIBING Whisper (12%)")],
)
async def test_a_look_without_a_step_logs_no_gap_for_it(
    world: World, caplog: pytest.LogCaptureFixture, step: str, line: str
) -> None:
    """A look at the whole project may carry a status but no step (the reference does not list
    ``current_step`` in the project record)."""
    job = world.drop()
    tracker = ingest._StepTracker(world.pipeline(), job)
    with caplog.at_level("INFO"):
        tracker(ProjectStatus("p1", "TRANSCRIBING", progress=12.0, current_step=step))
    assert [r.getMessage() for r in caplog.records] == [line]
    assert (world.job(job.id).progress, world.job(job.id).step) == (12.0, step or "TRANSCRIBING")

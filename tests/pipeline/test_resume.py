"""Resume after a crash from every non-terminal state: a new Pipeline (new client, new ledger
connection on the same file) finishes the job with one billed project, one render charge per
rendered clip, one export per clip and format, and one clean outbox folder."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.pipeline.conftest import MAIN_PATH, World, crash_at
from watchd.config import RenderChoice
from watchd.emulator import Faults
from watchd.ledger.states import Stage

ONE = RenderChoice("best", max_clips=1)
PRESET: dict[str, Any] = {"render": ONE, "exports": ("premiere",)}


def assert_one_clean_delivery(world: World, job_id: str) -> None:
    world.assert_delivered_once(job_id)
    snap = world.snapshot()
    chosen = [c for c in world.ledger.clips(job_id) if c.selected]
    rendered = {c.clip_id for c in chosen if c.state == "rendered"}
    renders = [e for e in snap["clip_puts"] if e["kind"] in ("render", "retry")]
    assert sorted(e["clip_id"] for e in renders) == sorted(rendered)  # never rendered twice
    charges = [
        ch
        for ws in snap["billing"].values()
        for ch in ws["charges"]
        if ch["kind"] == "render" and not ch["refunded"]
    ]
    assert len(charges) == len(rendered)
    # Export requests are idempotent on (clip, format): a lost answer may be asked again, but
    # the service holds one export each.
    assert len(snap["exports"]) == len(world.ledger.exports(job_id))
    manifests = list(world.outbox.rglob("manifest.json"))
    assert [m.parent for m in manifests] == [world.outbox / "talk"]
    assert world.manifest(job_id)["status"] == "delivered"
    leftovers = [f for f in world.outbox.rglob("*") if f.name.startswith(".")]
    assert not leftovers


@pytest.mark.parametrize(
    "stage",
    # Every stage with a handler (probed waits for schedule(); it is restarted below).
    [s for s in MAIN_PATH if s not in (Stage.PROBED, Stage.DELIVERED)],
    ids=str,
)
async def test_a_crash_on_entering_a_stage_resumes_there(world: World, stage: Stage) -> None:
    job = world.drop(**PRESET)
    p = world.pipeline()
    crashed = crash_at(p, stage)
    await world.run(p, lambda: bool(crashed))
    assert world.job(job.id).stage is stage
    p = await world.restart(p)
    await world.run(p)
    assert_one_clean_delivery(world, job.id)
    assert stage.value in world.path_of(job.id)


async def test_a_restart_while_waiting_for_a_slot(world: World) -> None:
    job = world.drop(**PRESET)
    p = world.pipeline()
    await world.step(p)
    assert world.job(job.id).stage is Stage.PROBED
    p = await world.restart(p)
    await world.run(p)
    assert_one_clean_delivery(world, job.id)


@pytest.mark.parametrize("emu_settings", [{"minutes": 0}])
async def test_a_restart_while_parked(world: World) -> None:
    job = world.drop(**PRESET)
    p = world.pipeline(park_retry_seconds=900.0)
    await world.run(p, lambda: world.job(job.id).stage is Stage.PARKED)
    p = await world.restart(p, park_retry_seconds=900.0)
    world.emu.add_minutes(100)
    await world.step(p)
    assert world.job(job.id).stage is Stage.PARKED  # still waits out its re-check time
    await world.run(p)
    assert_one_clean_delivery(world, job.id)
    assert world.path_of(job.id)[3:5] == ["parked", "probed"]


@pytest.mark.parametrize("forget_original", [False, True], ids=["original-kept", "forgotten"])
async def test_a_restart_of_a_duplicate(world: World, forget_original: bool) -> None:
    first = world.drop("a.mp4", render="none")
    p = world.pipeline()
    crashed = crash_at(p, Stage.DUPLICATE)
    await world.run(p)
    second = world.drop("b.mp4", render="none")
    await world.run(p, lambda: bool(crashed))
    if forget_original:
        world.ledger.forget(first.id)  # `watchd forget` while the copy waited on it
    p = await world.restart(p)
    await world.run(p)
    if not forget_original:
        j = world.job(second.id)
        assert world.events(second.id)[-1].kind == "delivered_duplicate"
        assert (j.state, j.project_id) == ("delivered", world.job(first.id).project_id)
        assert len(world.snapshot()["projects"]) == 1
        return
    # Nothing to point to any more: the copy is taken on its own.
    j = world.assert_delivered_once(second.id)
    assert j.duplicate_of is None
    ev = world.events(second.id, "duplicate_orphaned")[-1]
    assert (ev.from_state, ev.to_state) == ("duplicate", "queued")
    assert world.path_of(second.id)[:4] == ["queued", "duplicate", "queued", "probed"]


# ---- crashes in the middle of a stage, around the calls that bill ----------------------------


Wrap = Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]


def after_call(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The call reaches the service; the process dies before it hears the answer."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        await fn(*args, **kwargs)
        raise asyncio.CancelledError

    return wrapper


def before_call(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """The intent is on disk; the process dies before the request leaves."""

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        raise asyncio.CancelledError

    return wrapper


@pytest.mark.parametrize(
    ("method", "wrap", "stage"),
    [
        ("upload", after_call, Stage.UPLOADING),
        ("process_project", after_call, Stage.UPLOADED),
        ("put_clip", after_call, Stage.RENDERING),
        ("render_clip", before_call, Stage.RENDERING),
        ("render_clip", after_call, Stage.RENDERING),
        ("create_export", after_call, Stage.EXPORTING),
        ("download_clip_video", after_call, Stage.DELIVERING),
    ],
    ids=[
        "after-upload",
        "after-process",
        "after-preset-put",
        "before-render",
        "after-render",
        "after-export-request",
        "after-first-download",
    ],
)
async def test_a_crash_around_a_call_resumes_without_billing_twice(
    world: World, monkeypatch: pytest.MonkeyPatch, method: str, wrap: Wrap, stage: Stage
) -> None:
    job = world.drop(render="all", exports=("premiere",), caption_style="KARAOKE")
    p = world.pipeline()
    monkeypatch.setattr(p.client, method, wrap(getattr(p.client, method)))
    await world.run(p, lambda: not p.tasks and world.job(job.id).stage is stage, rounds=10)
    p2 = await world.restart(p)
    await world.run(p2)
    assert_one_clean_delivery(world, job.id)
    folder = world.outbox / "talk"
    assert len(list(folder.glob("*.mp4"))) == 2
    assert [c["file"] for c in world.manifest(job.id)["clips"]] == sorted(
        f.name for f in folder.glob("*.mp4")
    )


async def test_a_crash_after_a_create_whose_answer_was_lost(world: World) -> None:
    world.emu.update(faults=Faults(create_commit_then_fail=1.0, commit_fail_mode="drop"))
    job = world.drop(**PRESET)
    p = world.pipeline()
    await world.run(p, lambda: world.job(job.id).attempts == 1)
    assert world.job(job.id).stage is Stage.CREATING
    world.emu.update(faults=Faults())
    p = await world.restart(p)
    await world.run(p)
    assert_one_clean_delivery(world, job.id)
    assert "orphan_deleted" in world.kinds(job.id)

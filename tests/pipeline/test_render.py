"""clips_ready -> rendering | exporting | delivering, rendering -> exporting | delivering |
failed | parked, exporting -> delivering: the preset PUT, renders and their bounded retries,
partial deliveries, billing waits, and NLE exports that are skipped rather than failing the job."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.conftest import World, crash_at
from watchd.config import RenderChoice
from watchd.emulator import Faults
from watchd.ledger.states import Stage


def clip_log(world: World, clip_id: str) -> list[str]:
    return [e["kind"] for e in world.snapshot()["clip_puts"] if e["clip_id"] == clip_id]


def render_charges(world: World) -> list[dict[str, Any]]:
    return [
        ch
        for ws in world.snapshot()["billing"].values()
        for ch in ws["charges"]
        if ch["kind"] == "render" and not ch["refunded"]
    ]


@pytest.mark.parametrize(
    ("preset", "to", "clips", "renders"),
    [
        ({"render": "all"}, Stage.RENDERING, 2, 2),
        ({"render": "none", "exports": ("premiere",)}, Stage.EXPORTING, 2, 0),
        ({"render": "none"}, Stage.DELIVERING, 2, 0),
        ({"render": RenderChoice("best", min_score=101)}, Stage.DELIVERING, 0, 0),
    ],
    ids=["render", "exports-only", "nothing-to-render", "nothing-chosen"],
)
async def test_clips_ready_goes_where_the_rule_says(
    world: World, preset: dict[str, Any], to: Stage, clips: int, renders: int
) -> None:
    job = world.drop(**preset)
    p = world.pipeline()
    crashed = crash_at(p, to)
    await world.run(p, lambda: bool(crashed))
    ev = world.events(job.id)[-1]
    assert (ev.kind, ev.from_state, ev.to_state) == (to.value, "clips_ready", to.value)
    p = await world.restart(p)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    doc = world.manifest(job.id)
    assert (doc["status"], len(doc["clips"])) == ("delivered", clips)
    assert sum(1 for c in doc["clips"] if c["file"]) == renders
    assert len([e for e in world.snapshot()["clip_puts"] if e["kind"] == "render"]) == renders


async def test_the_preset_is_put_before_render_and_only_when_it_changes(world: World) -> None:
    job = world.drop(render="all", caption_style="HORMOZI", template={"position": "top"})
    other = world.drop("plain.mp4", sample=1, render="all")
    p = world.pipeline()
    await world.run(p)
    for clip in world.ledger.clips(job.id):
        assert clip_log(world, clip.clip_id) == ["put", "render"]
        assert clip.state == "rendered" and clip.render_attempts == 1
    put = next(e for e in world.snapshot()["clip_puts"] if e["kind"] == "put")
    assert put["template_config"]["caption_style"] == "HORMOZI"
    assert put["template_config"]["position"] == "top"
    for clip in world.ledger.clips(other.id):
        assert clip_log(world, clip.clip_id) == ["render"]  # nothing to change: no PUT
    assert len(render_charges(world)) == 4  # one per rendered clip


@pytest.mark.parametrize("emu_settings", [{"faults": Faults(render_fail_first=1)}])
async def test_a_failed_render_is_retried_and_delivered_in_full(world: World) -> None:
    job = world.drop(render="all")
    p = world.pipeline(max_render_retries=2)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    for clip in world.ledger.clips(job.id):
        assert clip_log(world, clip.clip_id) == ["render", "retry"]
        assert (clip.state, clip.render_attempts) == ("rendered", 2)
    assert world.manifest(job.id)["status"] == "delivered"
    assert len(render_charges(world)) == 2  # the failed attempts were refunded


@pytest.mark.parametrize("retries", [0, 2])
@pytest.mark.parametrize("emu_settings", [{"faults": Faults(render_fail_clips=1)}])
async def test_a_clip_that_never_renders_is_bounded_then_delivered_as_partial(
    world: World, retries: int
) -> None:
    job = world.drop(render="all")
    p = world.pipeline(max_render_retries=retries)
    await world.run(p)
    j = world.job(job.id)
    assert j.state == "delivered"
    assert world.detail(job.id, "delivered")["status"] == "partial"
    clips = {c.state: c for c in world.ledger.clips(job.id)}
    assert set(clips) == {"rendered", "failed"}
    bad = clips["failed"]
    assert clip_log(world, bad.clip_id) == ["render"] + ["retry"] * retries
    assert bad.error
    doc = world.manifest(job.id)
    assert doc["status"] == "partial"
    assert [c["id"] for c in doc["clips"]] == [clips["rendered"].clip_id]
    assert {"what": f"render {bad.title}", "reason": bad.error} in doc["skipped"]


@pytest.mark.parametrize("emu_settings", [{"faults": Faults(render_fail_clips=2)}])
async def test_no_clip_rendered_fails_the_job(world: World) -> None:
    job = world.drop(render="all")
    p = world.pipeline(max_render_retries=1)
    await world.run(p)
    world.assert_failed(job.id, left="rendering", code="render_failed", resume="rendering")
    assert world.detail(job.id, "failed")["message"].startswith("no clip could be rendered (")
    assert world.manifest(job.id)["status"] == "failed"


@pytest.mark.parametrize("emu_settings", [{"faults": Faults(render_fail_clips=2)}])
async def test_watchd_retry_after_no_clip_rendered_renders_again(world: World) -> None:
    job = world.drop(render="all")
    p = world.pipeline(max_render_retries=0)
    await world.run(p)
    assert world.job(job.id).error_code == "render_failed"
    world.emu.update(faults=Faults())
    world.ledger.retry(job.id)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    assert world.path_of(job.id)[-4:] == ["failed", "rendering", "delivering", "delivered"]
    assert world.manifest(job.id)["status"] == "delivered"
    for clip in world.ledger.clips(job.id):
        assert clip_log(world, clip.clip_id) == ["render", "retry"]
        assert (clip.state, clip.error) == ("rendered", None)
    assert len(render_charges(world)) == 2  # the failed attempts were refunded by the retry


@pytest.mark.parametrize("emu_settings", [{"minutes": 1}])  # the ingest, not the renders
async def test_render_402_parks_at_rendering_then_retry_delivers(world: World) -> None:
    job = world.drop(render="all")
    p = world.pipeline()
    await world.run(p, lambda: world.job(job.id).stage is Stage.PARKED)
    world.assert_parked(
        job.id,
        left="rendering",
        resume="rendering",
        reason="billing: Insufficient processing minutes (1 needed, 0 left)",
    )
    # The refused request is not taken for one in flight; the next clip was not reached.
    assert [c.state for c in world.ledger.clips(job.id)] == ["configured", "pending"]
    world.emu.add_minutes(10)
    world.ledger.retry(job.id)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    assert world.manifest(job.id)["status"] == "delivered"
    assert len(render_charges(world)) == 2
    puts = [e for e in world.snapshot()["clip_puts"] if e["kind"] == "render"]
    assert len(puts) == 2


# ---- exports ------------------------------------------------------------------------------------


async def test_exports_are_requested_followed_and_delivered(world: World) -> None:
    job = world.drop(render=RenderChoice("best", max_clips=1), exports=("premiere", "davinci"))
    p = world.pipeline()
    await world.run(p)
    assert world.path_of(job.id)[-4:] == ["rendering", "exporting", "delivering", "delivered"]
    exports = world.ledger.exports(job.id)
    assert {(e.format, e.state) for e in exports} == {
        ("premiere", "delivered"),
        ("davinci", "delivered"),
    }
    (clip,) = world.manifest(job.id)["clips"]
    assert {e["format"] for e in clip["exports"]} == {"premiere", "davinci"}
    folder = world.outbox / "talk"
    for e in clip["exports"]:
        assert any((folder / e["path"]).iterdir())


async def test_exports_without_renders_cover_every_chosen_clip(world: World) -> None:
    job = world.drop(render="none", exports=("fcpx",))
    p = world.pipeline()
    await world.run(p)
    assert len([e for e in world.ledger.exports(job.id) if e.state == "delivered"]) == 2
    assert not render_charges(world)


@pytest.mark.parametrize("emu_settings", [{"tier": "FREE"}])
async def test_exports_refused_by_the_plan_are_skipped_not_failed(world: World) -> None:
    job = world.drop(render="none", exports=("premiere", "davinci"))
    p = world.pipeline()
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    exports = world.ledger.exports(job.id)
    assert len(exports) == 4 and {e.state for e in exports} == {"skipped"}
    reason = exports[0].reason or ""
    assert reason.startswith("the workspace's plan does not include NLE exports (")
    assert "Pro plan" in reason
    asked = [r for r in world.snapshot()["requests"] if r["path"].endswith("/exports")]
    assert len(asked) == 1  # one refusal answers for all of them
    doc = world.manifest(job.id)
    assert doc["status"] == "delivered"
    assert sum(1 for s in doc["skipped"] if s["what"].startswith("export ")) == 4


@pytest.mark.parametrize("emu_settings", [{"faults": Faults(export_fail_rate=1.0)}])
async def test_a_failed_export_is_skipped_with_its_reason(world: World) -> None:
    job = world.drop(render="none", exports=("premiere",))
    p = world.pipeline()
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    exports = world.ledger.exports(job.id)
    assert {e.state for e in exports} == {"skipped"}
    assert all(e.reason for e in exports)
    skipped = world.manifest(job.id)["skipped"]
    assert {s["reason"] for s in skipped if s["what"].startswith("export ")} == {
        e.reason for e in exports
    }


@pytest.mark.parametrize("emu_settings", [{"exports_per_minute": 1}])
async def test_export_rate_limit_waits_without_counting(world: World) -> None:
    job = world.drop(render="none", exports=("premiere",))
    p = world.pipeline()
    await world.run(p, lambda: world.job(job.id).wait is not None)
    j = world.job(job.id)
    assert (j.state, j.attempts, j.error) == ("exporting", 0, None)
    assert (j.wait or "").startswith("export rate limit: ")
    assert j.wait_until == j.next_attempt_at
    assert j.next_attempt_at > world.clock.now()
    assert {e.state for e in world.ledger.exports(job.id)} == {"requested", "pending"}
    world.emu_clock.advance(61.0)
    await world.run(p)
    assert world.job(job.id).state == "delivered"
    assert {e.state for e in world.ledger.exports(job.id)} == {"delivered"}


async def test_a_clip_is_written_once_per_render_step(world: World) -> None:
    """The preset's outcome (transcript, thumbnail link) goes to disk with the render intent, in
    one write; then the request's answer and the render's end: three writes, and no progress
    write for the job once every render has ended (its transition follows)."""
    world.drop(render=RenderChoice("best", max_clips=1))
    p = world.pipeline()
    crashed = crash_at(p, Stage.DELIVERING)
    writes: list[str] = []
    world.ledger.db.conn.set_trace_callback(
        lambda sql: writes.append(sql) if sql.startswith("UPDATE ") else None
    )
    try:
        await world.run(p, lambda: bool(crashed))
    finally:
        world.ledger.db.conn.set_trace_callback(None)
    clip_writes = [w for w in writes if w.startswith("UPDATE clips")]
    assert [w.split("state = '")[1].split("'")[0] for w in clip_writes] == [
        "render_requested",
        "rendering",
        "rendered",
    ]
    assert "words = " in clip_writes[0] and "thumbnail_url = " in clip_writes[0]
    assert not [w for w in writes if "step = 'rendering " in w]

"""Waits are waits: export progress under the export pace, and one log line per wait."""

from __future__ import annotations

import logging

import pytest

from tests.pipeline.conftest import World
from watchd.pipeline import waits
from watchd.pipeline.outcomes import Wait
from watchd.pipeline.render import _export_progress


async def test_export_progress_says_when_the_next_export_may_go(world: World) -> None:
    client = world.client(exports_per_minute=1)
    job = world.drop()
    p = world.pipeline(client=client)
    await _export_progress(p, job, 0, 12)
    assert (world.job(job.id).step, world.job(job.id).progress) == ("exports 0 of 12", 0)
    bucket = await client._bucket("exports")
    assert bucket.try_acquire()  # one export went: the next waits a minute (and a margin)
    await _export_progress(p, job, 3, 12)
    assert world.job(job.id).step == "exports 3 of 12, next in 61 s"
    assert world.job(job.id).progress == 25


async def test_a_wait_logs_when_it_starts_and_when_it_ends(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    job = world.drop()
    p = world.pipeline()
    caplog.set_level(logging.INFO, logger="watchd.pipeline")
    for n in range(5):
        await p.handle_error(world.job(job.id), Wait("duplicate", f"look {n}", 2.0))
        world.clock.advance(2.0)
    j = world.job(job.id)
    assert (j.wait, j.error) == ("duplicate: look 4", None)
    assert j.wait_since is not None and world.clock.now() - j.wait_since == 10.0
    p.advance(j, j.stage.__class__("probed"))
    lines = [r.getMessage() for r in caplog.records if "wait" in r.getMessage()]
    assert lines == ["waiting: duplicate: look 0", "wait over after 10s: duplicate"]
    assert world.job(job.id).wait is None
    assert waits.cause_of("export rate limit: slow down") == "export rate limit"

"""What a power cut may take: only relaxed writes (progress, steps whose redo is harmless), and
never one made before a billed call. The ledger counts relaxed commits since the last durable
one (:attr:`Ledger.unsynced_writes`); every billed or destructive call must find it at zero."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pipeline.conftest import World
from watchd.config import RenderChoice
from watchd.pipeline.runner import Pipeline

BILLED = (
    "create_project",
    "process_project",
    "render_clip",
    "retry_render",
    "create_export",
    "delete_project",
)
READS = ("get_project", "project_status", "render_progress")


def watch_billed_calls(p: Pipeline, seen: list[tuple[str, int]]) -> None:
    """Record, at each billed or destructive client call, the ledger's unsynced writes."""
    for name in BILLED + READS:
        real = getattr(p.client, name)

        async def call(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            seen.append((_name, p.ledger.unsynced_writes))
            return await _real(*args, **kw)

        setattr(p.client, name, call)


@pytest.mark.parametrize("exports", [(), ("premiere",)])
async def test_every_billed_call_follows_a_durable_commit(
    world: World, exports: tuple[str, ...]
) -> None:
    jobs = [
        world.drop(
            f"ep{k}.mp4", sample=k, render=RenderChoice("best", max_clips=2), exports=exports
        )
        for k in range(2)
    ]
    p = world.pipeline()
    seen: list[tuple[str, int]] = []
    watch_billed_calls(p, seen)
    relaxed_before = world.ledger.unsynced_writes
    await world.run(p)
    for job in jobs:
        world.assert_delivered_once(job.id)
    called = {name for name, _ in seen}
    assert {"create_project", "process_project", "render_clip"} <= called
    assert not exports or "create_export" in called
    assert [s for s in seen if s[0] in BILLED and s[1]] == [], seen
    # Relaxed writes were made (after /process, the processing transition is one): not every
    # write waits for the disk. The last write (delivered) is durable.
    assert any(n for name, n in seen if name in READS), seen
    assert relaxed_before == 0 and world.ledger.unsynced_writes == 0

"""The pipeline, unchanged, on the PostgreSQL ledger: jobs delivered once each, every billed call
after a durable commit, and a restart (a new connection pool) carrying jobs on. The pipeline
does not know which ledger it has (watchd.ledger.protocol.LedgerAPI)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pipeline import test_resume
from tests.pipeline.conftest import MAIN_PATH, World
from tests.pipeline.test_durability import BILLED, watch_billed_calls
from watchd.config import RenderChoice
from watchd.ledger.pg import PgLedger
from watchd.ledger.states import Stage


@pytest.fixture
def on_postgresql(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Worlds built after this (list it before ``world``) open their ledger in PostgreSQL."""

    def open_ledger(self: World) -> PgLedger:
        ledger = PgLedger(pg_url, clock=self.clock)
        self.ledgers.append(ledger)  # type: ignore[arg-type]
        return ledger

    monkeypatch.setattr(World, "open_ledger", open_ledger)
    yield


async def test_jobs_are_delivered_once_each_on_postgresql(
    on_postgresql: None, world: World
) -> None:
    assert isinstance(world.ledger, PgLedger)
    jobs = [
        world.drop(
            f"ep{k}.mp4", sample=k, render=RenderChoice("best", max_clips=2), exports=("premiere",)
        )
        for k in range(2)
    ]
    p = world.pipeline()
    seen: list[tuple[str, int]] = []
    watch_billed_calls(p, seen)
    await world.run(p)
    for job in jobs:
        world.assert_delivered_once(job.id)
        assert world.manifest(job.id)["clips"]
    assert {"create_project", "process_project", "render_clip", "create_export"} <= {
        name for name, _ in seen
    }
    assert [s for s in seen if s[0] in BILLED and s[1]] == [], seen


@pytest.mark.parametrize(
    "stage", [s for s in MAIN_PATH if s not in (Stage.PROBED, Stage.DELIVERED)], ids=str
)
async def test_a_crash_on_entering_a_stage_resumes_there(
    on_postgresql: None, world: World, stage: Stage
) -> None:
    """tests/pipeline/test_resume.py's crash at each stage, then a new pool on the database."""
    assert isinstance(world.ledger, PgLedger)
    await test_resume.test_a_crash_on_entering_a_stage_resumes_there(world, stage)
    assert isinstance(world.ledger, PgLedger)  # the ledger reopened after the crash

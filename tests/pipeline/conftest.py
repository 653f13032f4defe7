"""Fixtures for the pipeline's unit tests: the real emulator on loopback, a real ledger file, a
real client, a :class:`FakeClock`, and a driver that runs :class:`Pipeline` until a condition
holds by scheduling, awaiting the job tasks and jumping the clock to the next due job (no wall
time is slept anywhere)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from watchd.carmic import http as carmic_http
from watchd.carmic.client import CarmicClient
from watchd.carmic.http import ssl_context
from watchd.carmic.retry import RetryPolicy
from watchd.clock import FakeClock
from watchd.config import Preset, RenderChoice
from watchd.emulator import Emulator, EmulatorSettings
from watchd.ledger.db import DB_NAME, EventRow, JobRow, Ledger
from watchd.ledger.states import Stage
from watchd.media import make_sample_video
from watchd.pipeline.identity import FileIdentity, fingerprint
from watchd.pipeline.runner import Pipeline, PipelineSettings, ProbeFn
from watchd.pipeline.scheduler import ProcessingLimit

# The happy path, in the order the stages are declared.
MAIN_PATH = tuple(s for s in Stage if s not in (Stage.FAILED, Stage.PARKED, Stage.DUPLICATE))
SECONDS = 12.0  # the emulator finds two clips in a 12 s video
WAIT = 10.0  # bound on awaiting one round of job tasks (real seconds; normally milliseconds)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three real, different small H.264 videos without sound (the emulator decodes pictures
    only), so jobs are not each other's duplicates."""
    folder = tmp_path_factory.mktemp("pipeline-media")
    out = []
    for n in range(3):
        path = folder / f"sample{n}.mp4"
        make_sample_video(
            path, seconds=SECONDS, width=64, height=36, fps=10, audio=False, label=f"s{n}"
        )
        out.append(path)
    return out


def preset(**overrides: Any) -> dict[str, Any]:
    """A stored preset (``Preset.to_json()``) with ``overrides``; ``render`` may be a mode. By
    default only the best clip is rendered: renders are the emulator's dearest work."""
    render = overrides.pop("render", RenderChoice("best", max_clips=1))
    choice = render if isinstance(render, RenderChoice) else RenderChoice.from_json(render)
    return dataclasses.replace(Preset(), render=choice, **overrides).to_json()


@dataclass
class World:
    """One test's emulator, folders, clock, ledger and client, with helpers to drive jobs."""

    root: Path
    emu: Emulator
    samples: list[Path]
    template: Path | None = None  # an empty, migrated ledger file to start from
    # The daemon's clock; the emulator has a clock of its own (``emu_clock``), so a test can
    # move the signer's time apart from ours. Both start at the real time: presigned URLs carry
    # wall-clock dates.
    clock: FakeClock = field(default_factory=lambda: FakeClock(start=time.time()))
    ledgers: list[Ledger] = field(default_factory=list)
    clients: list[CarmicClient] = field(default_factory=list)
    pipelines: list[Pipeline] = field(default_factory=list)

    def __post_init__(self) -> None:
        for d in (self.inbox, self.outbox, self.state):
            d.mkdir(parents=True, exist_ok=True)
        if self.template is not None:
            shutil.copyfile(self.template, self.state / DB_NAME)
        self.ledger = self.open_ledger()

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def state(self) -> Path:
        return self.root / "state"

    # ---- construction ---------------------------------------------------------------------

    def open_ledger(self) -> Ledger:
        # The crashes here are simulated inside one process: no write needs to reach the platter,
        # and an fsync per transition would make these tests disk-bound.
        ledger = Ledger(self.state / DB_NAME, clock=self.clock, fsync=False)
        self.ledgers.append(ledger)
        return ledger

    def client(self, *, exports_per_minute: float = 10_000) -> CarmicClient:
        client = CarmicClient(
            self.emu.api_url,
            self.emu.seed_email,
            self.emu.seed_password,
            clock=self.clock,
            retry=RetryPolicy(attempts=3, base=0.01, max_delay=0.05, jitter=0),
            creates_per_minute=10_000,
            exports_per_minute=exports_per_minute,
        )
        self.clients.append(client)
        return client

    @property
    def emu_clock(self) -> FakeClock:
        clock = self.emu.clock
        assert isinstance(clock, FakeClock)
        return clock

    def pipeline(
        self,
        *,
        client: CarmicClient | None = None,
        probe_fn: ProbeFn | None = None,
        limit: ProcessingLimit | None = None,
        **settings: Any,
    ) -> Pipeline:
        """A pipeline on the current ledger, with a fresh client (as after a restart)."""
        settings.setdefault("poll_seconds", 1.0)
        p = Pipeline(
            self.ledger,
            client or self.client(),
            settings=PipelineSettings(**settings),
            clock=self.clock,
            probe_fn=probe_fn,
            limit=limit,
        )
        p.rng.seed(0)
        self.pipelines.append(p)
        return p

    async def restart(self, p: Pipeline, **settings: Any) -> Pipeline:
        """A crash and a new start: the old pipeline's tasks are cancelled wherever they are,
        its ledger connection is closed, and a new pipeline opens the same ledger file."""
        await p.stop()
        self.ledger.close()
        self.ledger = self.open_ledger()
        return self.pipeline(**settings)

    def drop(
        self,
        rel: str = "talk.mp4",
        *,
        sample: int = 0,
        rule: str = "",
        delivery: dict[str, str] | None = None,
        **preset_overrides: Any,
    ) -> JobRow:
        """Copy a sample into the inbox and record it as a settled job (what the daemon does)."""
        dest = self.inbox / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.samples[sample], dest)
        return self.add(dest, rule=rule, delivery=delivery, **preset_overrides)

    def add(
        self,
        path: Path,
        *,
        rule: str = "",
        delivery: dict[str, str] | None = None,
        **preset_overrides: Any,
    ) -> JobRow:
        """Record ``path`` (in the inbox) as a settled job with the given preset; ``delivery``
        overrides where its results go (``outbox``, ``on_success``, ``on_failure``)."""
        ident = FileIdentity.of(path)
        record = preset(**preset_overrides)
        record["_delivery"] = {
            "inbox": str(self.inbox),
            "outbox": str(self.outbox),
            "on_success": "move",
            "on_failure": "move",
            **(delivery or {}),
        }
        job = self.ledger.add_job(
            inbox=str(self.inbox),
            rel_path=path.relative_to(self.inbox).as_posix(),
            path=str(path),
            rule=rule,
            preset=record,
            size=ident.size,
            mtime_ns=ident.mtime_ns,
            inode=ident.ino,
            dev=ident.dev,
            fingerprint=fingerprint(path),
        )
        self.clock.advance(1.0)  # files settle one after the other: "older" is well defined
        return job

    # ---- driving --------------------------------------------------------------------------

    async def settle(self, p: Pipeline) -> None:
        """Await every job task the pipeline is running (each ends when its job has to wait)."""
        while p.tasks:
            tasks = list(p.tasks.values())
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT)
            await asyncio.sleep(0)  # let the done callbacks drop them from p.tasks
            for t in tasks:
                if not t.cancelled() and t.exception() is not None:
                    raise AssertionError(f"job task crashed: {t.exception()!r}")

    async def step(self, p: Pipeline) -> list[str]:
        """One tick: schedule what is due now and let it run until it has to wait."""
        started = p.schedule(self.clock.now())
        await self.settle(p)
        return started

    async def run(
        self,
        p: Pipeline,
        until: Callable[[], bool] | None = None,
        *,
        rounds: int = 40,
        jump: bool = True,
    ) -> None:
        """Tick until ``until()`` (default: every job terminal); when a tick started nothing,
        jump the clock to the next due job (unless ``jump`` is False: then give up)."""
        done = until or self.all_terminal
        for _ in range(rounds):
            started = await self.step(p)
            if done():
                return
            if started:
                continue  # something moved: tick again before letting time pass
            nxt = self.ledger.next_due_at()
            if nxt is None:
                break
            if nxt > self.clock.now():
                if not jump:
                    break
                self.clock.advance(nxt - self.clock.now())
        states = {j.rel_path: (j.state, j.error) for j in self.ledger.jobs()}
        raise AssertionError(f"condition not reached after {rounds} rounds: {states}")

    async def run_to(self, p: Pipeline, job_id: str, *stages: Stage, rounds: int = 40) -> JobRow:
        await self.run(p, lambda: self.job(job_id).stage in stages, rounds=rounds)
        return self.job(job_id)

    def all_terminal(self) -> bool:
        return all(j.state in ("delivered", "failed") for j in self.ledger.jobs())

    def force(self, job_id: str, stage: Stage) -> JobRow:
        """Walk a job along the main path to ``stage`` without doing the work (test setup)."""
        job = self.job(job_id)
        path = MAIN_PATH[: MAIN_PATH.index(stage) + 1]
        for to in path[path.index(job.stage) + 1 :]:
            job = self.ledger.transition(job_id, to, kind="test_setup")
        return job

    # ---- reading --------------------------------------------------------------------------

    def job(self, job_id: str) -> JobRow:
        return self.ledger.require(job_id)

    def events(self, job_id: str, kind: str | None = None) -> list[EventRow]:
        return [e for e in self.ledger.events(job_id) if kind is None or e.kind == kind]

    def kinds(self, job_id: str) -> list[str]:
        return [e.kind for e in self.ledger.events(job_id)]

    def path_of(self, job_id: str) -> list[str]:
        """The stages the job went through, in order (from the events table)."""
        out: list[str] = []
        for e in self.ledger.events(job_id):
            if e.to_state and (not out or out[-1] != e.to_state):
                out.append(e.to_state)
        return out

    def detail(self, job_id: str, kind: str) -> Any:
        """The detail of the job's last event of ``kind`` (decoded)."""
        found = self.events(job_id, kind)
        assert found, f"no {kind!r} event for {job_id}: {self.kinds(job_id)}"
        raw = found[-1].detail
        return json.loads(raw) if raw else None

    def assert_parked(self, job_id: str, *, left: str, resume: str, reason: str) -> JobRow:
        """The job left ``left`` for parked, to resume at ``resume``, with a reason starting
        with ``reason`` in the ledger and in its ``parked`` event."""
        j = self.job(job_id)
        assert (j.state, j.resume_stage) == ("parked", resume), (j.state, j.error)
        assert j.park_reason and j.park_reason.startswith(reason), j.park_reason
        ev = self.events(job_id, "parked")[-1]
        assert (ev.from_state, ev.to_state) == (left, "parked")
        assert json.loads(ev.detail or "") == {"reason": j.park_reason}
        return j

    def assert_failed(self, job_id: str, *, left: str, code: str, resume: str) -> JobRow:
        """The job left ``left`` for failed with ``code`` (ledger and ``failed`` event), and a
        ``watchd retry`` resumes it at ``resume``."""
        j = self.job(job_id)
        assert (j.state, j.error_code, j.resume_stage) == ("failed", code, resume), j.error
        ev = self.events(job_id, "failed")[-1]
        assert (ev.from_state, ev.to_state) == (left, "failed")
        assert json.loads(ev.detail or "")["code"] == code
        return j

    def assert_delivered_once(
        self, job_id: str, *, replaced: str | None = None, deleted: bool = True
    ) -> JobRow:
        """The job is delivered and only its own project stands billed; ``replaced``, a project
        it gave up on the way, had its minutes refunded (and was deleted, unless it had failed
        on the service's side)."""
        j = self.job(job_id)
        assert j.state == "delivered", (j.state, j.error)
        if replaced is not None:
            gone = next(pr for pr in self.projects(j.marker) if pr["id"] == replaced)
            assert gone["refunded"] and gone["deleted"] is deleted
            assert j.project_id != replaced
        assert [pr["id"] for pr in self.billed(j.marker)] == [j.project_id]
        return j

    def snapshot(self) -> dict[str, Any]:
        return self.emu.snapshot()

    def projects(self, marker: str) -> list[dict[str, Any]]:
        """The emulator's projects whose title carries ``marker``."""
        return [p for p in self.snapshot()["projects"] if marker in str(p["title"])]

    def billed(self, marker: str) -> list[dict[str, Any]]:
        """Projects of ``marker`` whose ingest charge stands (not refunded)."""
        return [p for p in self.projects(marker) if p["billed"] and not p["refunded"]]

    def manifest(self, job_id: str) -> dict[str, Any]:
        folder = self.job(job_id).outbox_dir
        assert folder, f"job {job_id} has no outbox folder"
        data = json.loads((Path(folder) / "manifest.json").read_text())
        assert isinstance(data, dict)
        return data


def crash_at(p: Pipeline, stage: Stage) -> list[str]:
    """Make ``p`` "crash" as soon as a job enters ``stage``: the job's task ends cancelled
    before the stage does any work, as if the process had been killed there. Returns the ids
    of the jobs that crashed."""
    crashed: list[str] = []

    async def crash(_: Pipeline, job: JobRow) -> None:
        crashed.append(job.id)
        raise asyncio.CancelledError

    p.handlers[stage] = crash
    return crashed


@pytest.fixture
def emu_settings() -> dict[str, Any]:
    """Overrides for the emulator's settings (a test or module may override this fixture)."""
    return {}


@pytest.fixture
def emu(emu_settings: dict[str, Any]) -> Iterator[Emulator]:
    settings: dict[str, Any] = {
        "inspect": True,
        "creates_per_minute": 0,
        "exports_per_minute": 0,
        "auth_rate_limits": False,
        "tier": "BUSINESS",
        **emu_settings,
    }
    with Emulator(EmulatorSettings(**settings), clock=FakeClock(start=time.time())) as e:
        yield e


@pytest.fixture(scope="session")
def ledger_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty ledger with every migration applied, copied into each test's state folder:
    running the migrations costs more than most of these tests."""
    path = tmp_path_factory.mktemp("ledger-template") / DB_NAME
    Ledger(path).close()
    return path


@functools.cache
def _shared_tls() -> ssl.SSLContext:
    return ssl_context()


@pytest.fixture
async def world(
    tmp_path: Path,
    emu: Emulator,
    samples: list[Path],
    ledger_template: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[World]:
    # Every client builds the same verifying TLS context from the system trust store (~30 ms
    # each, most of these tests' CPU); they only speak plain HTTP to loopback: share one.
    monkeypatch.setattr(carmic_http, "ssl_context", lambda ca_file="": _shared_tls())
    w = World(tmp_path, emu, samples, template=ledger_template)
    try:
        yield w
    finally:
        for p in w.pipelines:
            await p.stop()
        for c in w.clients:
            await c.aclose()
        for ledger in w.ledgers:
            ledger.close()

"""Two daemons on one inbox, one workspace and one PostgreSQL ledger ([cluster]): each file is
taken once, billed once and delivered once; a stopped daemon's jobs are carried on."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomli_w

from tests.e2e.harness import Env, billed_projects, iter_manifests, wait_for
from watchd.emulator import Emulator


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    yield pg_url


def node_env(root: Path, emu: Emulator, shared: Env | None, name: str, db: str) -> Env:
    e = Env(root=root / name, emu=emu)
    if shared is not None:
        e.inbox, e.outbox = shared.inbox, shared.outbox
    e.write_config()
    cfg = tomllib.loads(e.config_path.read_text())
    cfg["cluster"] = {"database": db, "node": name, "lease_seconds": 10}
    cfg["inbox"][0]["name"] = "studio"
    e.config_path.write_bytes(tomli_w.dumps(cfg).encode())
    return e


def test_two_daemons_take_each_file_once(
    tmp_path: Path, emulator: Emulator, sample_videos: list[Path], db: str
) -> None:
    a = node_env(tmp_path, emulator, None, "n1", db)
    b = node_env(tmp_path, emulator, a, "n2", db)
    try:
        a.start()
        b.start()
        for i, src in enumerate(sample_videos[:4]):
            a.drop(src, f"ep{i}.mp4")

        def done() -> list[Path] | None:
            moved = sorted((a.inbox / "_done").rglob("*.mp4"))
            return moved if len(moved) == 4 else None

        wait_for(done, timeout=120, interval=0.2, what="4 files delivered and moved")
        manifests = list(iter_manifests(a.outbox))
        assert len(manifests) == 4
        billed = billed_projects(emulator.snapshot())
        assert sorted(len(v) for v in billed.values()) == [1, 1, 1, 1]
        assert sorted(p.name for p in (a.inbox / "_done").rglob("*.mp4")) == [
            f"ep{i}.mp4" for i in range(4)
        ]
        assert a.stop() == 0
        assert b.stop() == 0
    finally:
        for e in (a, b):
            if e.proc is not None and e.proc.poll() is None:
                e.kill()
    for e in (a, b):
        assert "Traceback" not in e.log(), e.log()[-3000:]


def test_a_killed_daemons_jobs_are_carried_on_by_the_other(
    tmp_path: Path, emulator: Emulator, sample_videos: list[Path], db: str
) -> None:
    a = node_env(tmp_path, emulator, None, "n1", db)
    b = node_env(tmp_path, emulator, a, "n2", db)
    try:
        a.start()
        wait_for(lambda: "joined the cluster" in a.log() or None, timeout=60, what="n1 up")
        for i, src in enumerate(sample_videos[:2]):
            a.drop(src, f"ep{i}.mp4")
        wait_for(
            lambda: len(emulator.snapshot()["projects"]) == 2 or None,
            timeout=60,
            interval=0.05,
            what="two projects created by n1",
        )
        a.kill()
        b.start()

        def done() -> list[Path] | None:
            moved = sorted((a.inbox / "_done").rglob("*.mp4"))
            return moved if len(moved) == 2 else None

        wait_for(done, timeout=90, interval=0.2, what="both files delivered by n2")
        billed = billed_projects(emulator.snapshot())
        assert sorted(len(v) for v in billed.values()) == [1, 1]
        assert "claimed job" in b.log()
        assert b.stop() == 0
    finally:
        for e in (a, b):
            if e.proc is not None and e.proc.poll() is None:
                e.kill()

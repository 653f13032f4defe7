"""Two daemons on one inbox, one workspace and one PostgreSQL ledger ([cluster]): each file is
taken once, billed once and delivered once; a stopped daemon's jobs are carried on."""

from __future__ import annotations

import json
import re
import time
import tomllib
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.e2e.harness import Env, billed_projects, iter_manifests, wait_for
from tests.e2e.test_dashboard import start_with_dashboard
from tests.e2e.test_notify import SECRET, secret_file, types_by_job
from tests.notify.receiver import Receiver, verify
from tests.pg import PgServer
from tests.ports import free_port
from watchd.emulator import Emulator


@pytest.fixture
def db(pg_url: str) -> Iterator[str]:
    yield pg_url


def node_env(
    root: Path,
    emu: Emulator,
    shared: Env | None,
    name: str,
    db: str,
    *,
    mount: bool = False,
    notify: list[dict[str, Any]] | None = None,
) -> Env:
    """A host's daemon; with ``shared``, on the same inbox and outbox (with ``mount``, reached
    through paths of its own, as a host that mounts the share elsewhere)."""
    e = Env(root=root / name, emu=emu)
    if shared is not None and mount:
        here = root / name / "mnt"
        here.mkdir()
        (here / "inbox").symlink_to(shared.inbox)
        (here / "outbox").symlink_to(shared.outbox)
        e.inbox, e.outbox = here / "inbox", here / "outbox"
    elif shared is not None:
        e.inbox, e.outbox = shared.inbox, shared.outbox
    e.write_config(notify=notify)
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
        url = start_with_dashboard(b)
        for i, src in enumerate(sample_videos[:4]):
            a.drop(src, f"ep{i}.mp4")

        def done() -> list[Path] | None:
            moved = sorted((a.inbox / "_done").rglob("*.mp4"))
            return moved if len(moved) == 4 else None

        wait_for(done, timeout=120, interval=0.2, what="4 files delivered and moved")
        manifests = list(iter_manifests(a.outbox))
        assert len(manifests) == 4
        rows = b.status()  # every host's jobs, from either host
        assert len(rows) == 4 and {r["state"] for r in rows} == {"delivered"}
        assert {r["node"] for r in rows} <= {"n1", "n2"}
        assert "NODE" in b.cli("status").stdout
        with urllib.request.urlopen(url + "api/jobs", timeout=10) as r:
            served = json.loads(r.read())
        assert sorted(j["node"] for j in served) == sorted(r["node"] for r in rows)
        for page in ("", "jobs/" + rows[0]["id"]):  # the pages read the cluster's ledger too
            with urllib.request.urlopen(url + page, timeout=10) as r:
                assert r.status == 200 and rows[0]["source"] in r.read().decode()
        snap = emulator.snapshot()
        billed = billed_projects(snap)
        assert sorted(len(v) for v in billed.values()) == [1, 1, 1, 1]
        agents = {r["user_agent"] for r in snap["requests"] if r["origin"] == "api"}
        assert agents and all(re.fullmatch(r"carmic-watchd/\S+ \(node n[12]\)", a) for a in agents)
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
    """The heir mounts the share at another path: it finds the sources and the delivery
    folders under its own paths."""
    a = node_env(tmp_path, emulator, None, "n1", db)
    b = node_env(tmp_path, emulator, a, "n2", db, mount=True)
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
        assert "claimed by node n2, carried on from" in b.log()
        assert len(list(iter_manifests(a.outbox))) == 2
        assert not [p for p in a.outbox.rglob("*") if "(2)" in p.name]
        assert b.stop() == 0
    finally:
        for e in (a, b):
            if e.proc is not None and e.proc.poll() is None:
                e.kill()


def test_a_database_not_there_yet_is_waited_for_and_a_missing_one_refused(
    tmp_path: Path, emulator: Emulator, pg_server: PgServer
) -> None:
    down = f"postgresql://watchd:Db-s3cret@127.0.0.1:{free_port()}/watchd"
    a = node_env(tmp_path, emulator, None, "n1", down)
    a.start()
    wait_for(
        lambda: "waiting for it" in a.log() or None, timeout=60, what="the wait for the database"
    )
    assert a.stop() == 0  # a stop while waiting is a clean stop
    assert "Db-s3cret" not in a.log() and "Traceback" not in a.log()

    missing = node_env(tmp_path, emulator, None, "n2", pg_server.url("no_such_db"))
    missing.start()
    assert missing.proc is not None and missing.proc.wait(timeout=60) == 2
    assert 'database "no_such_db" does not exist' in missing.log()


def test_each_event_is_sent_once_by_the_node_that_made_it(
    tmp_path: Path, emulator: Emulator, sample_videos: list[Path], db: str
) -> None:
    """Both nodes notify the same webhook: one job.queued and one job.delivered per file, sent
    by whichever node made the change."""
    with Receiver() as rx:
        hook = [{"url": rx.url, "secret_file": secret_file(Env(root=tmp_path, emu=emulator))}]
        a = node_env(tmp_path, emulator, None, "n1", db, notify=hook)
        b = node_env(tmp_path, emulator, a, "n2", db, notify=hook)
        try:
            a.start()
            b.start()
            for i, src in enumerate(sample_videos[:3]):
                a.drop(src, f"ep{i}.mp4")
            wait_for(
                lambda: len(rx.events("job.delivered")) >= 3 or None,
                timeout=120,
                what="three job.delivered events",
            )
            time.sleep(0.5)  # a duplicate would arrive now
            counts = types_by_job(rx.events())
            assert counts == Counter(
                {(t, f"ep{i}.mp4"): 1 for t in ("job.queued", "job.delivered") for i in range(3)}
            ), counts
            for req in rx.received():
                verify(SECRET, req)
            assert a.stop() == 0 and b.stop() == 0
        finally:
            for e in (a, b):
                if e.proc is not None and e.proc.poll() is None:
                    e.kill()

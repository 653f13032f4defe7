"""Several hosts on one inbox and one workspace (contract §4): real ``watchd run`` daemons with
``[cluster]`` on one PostgreSQL database, the emulator over loopback (tests/e2e/cluster.py).

Select them with ``-m cluster``. The emulator is fast (0.4 s of processing) but keeps a
BUSINESS workspace's processing limit (2) and a per-minute create limit that the daemons'
shared pace must meet without a single 429; leases are 10 s (the least the config takes).
"""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import (
    Cluster,
    billed_by_filename,
    job_of,
    jobs,
    node_of,
    peak_processing,
    refusals,
)
from tests.e2e.harness import padded_video, unique_copy, wait_for
from tests.pg import PgServer, fresh_database, running_server
from watchd.emulator import Emulator, EmulatorSettings, Timings


def _cluster_built() -> bool:
    try:
        return importlib.util.find_spec("watchd.cluster.ledger") is not None
    except ModuleNotFoundError:  # no watchd.cluster package at all
        return False


pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        not _cluster_built(), reason="watchd run does not run [cluster] yet (no ClusterLedger)"
    ),
]

LEASE = 10.0  # the config's minimum
# Above the reference's 5 so that 60 files take about a minute, below 60 so that the pace binds:
# three daemons that each paced themselves would send 60 creates in the first window.
CREATES_PER_MINUTE = 50
BASE_CARMIC = {"creates_per_minute": CREATES_PER_MINUTE, "exports_per_minute": 50}
BASE_INBOX: dict[str, Any] = {"render": {"min_score": 0, "max_clips": 1}}


def cluster_emulator(**timings: float) -> Emulator:
    settings = EmulatorSettings(
        port=0,
        storage_port=0,
        inspect=True,
        auth_rate_limits=False,
        tier="BUSINESS",
        minutes=10_000_000,
        creates_per_minute=CREATES_PER_MINUTE,
        exports_per_minute=50,
        store_uploads=False,
        timings=Timings(**{"step": 0.1, "render": 0.05, "export": 0.05, "keepalive": 1, **timings}),
    )
    return Emulator(settings)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with cluster_emulator() as e:
        yield e


@pytest.fixture
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from watchd.media import make_sample_video

    path = tmp_path_factory.mktemp("cluster-sample") / "sample.mp4"
    make_sample_video(path, seconds=6.0, width=160, height=90, fps=10)
    return path


def make_files(sample: Path, folder: Path, n: int, prefix: str = "f") -> list[Path]:
    return [unique_copy(sample, folder / f"{prefix}{i:03d}.mp4", f"{prefix}{i}") for i in range(n)]


def make_cluster(
    root: Path, emu: Emulator, database: str, names: tuple[str, ...] = ("n1", "n2", "n3"), **kw: Any
) -> Cluster:
    rig = Cluster(root, emu, database, names=names, lease_seconds=LEASE)
    rig.configure(
        carmic=BASE_CARMIC,
        daemon={"rescan_seconds": 2, **kw.pop("daemon", {})},
        inbox={**BASE_INBOX, **kw.pop("inbox", {})},
        **kw,
    )
    return rig


def about(request: dict[str, Any], project_id: str, clip_ids: set[str]) -> bool:
    """Whether a request concerns this project (its API routes, its storage objects) or one
    of its clips."""
    path = str(request["path"])
    return project_id in path or any(c in path for c in clip_ids)


def assert_once_each(rig: Cluster, emu: Emulator, names: list[str]) -> dict[str, Any]:
    """Every file: one project at the emulator (billed), one manifest, one move to _done/."""
    snap = emu.snapshot()
    projects = Counter(p["filename"] for p in snap["projects"])
    billed = billed_by_filename(snap)
    manifests = rig.manifests()
    done = rig.done()
    twice = {f: projects[f] for f in names if projects[f] != 1 or len(billed.get(f, [])) != 1}
    assert not twice, f"files without exactly one billed project: {twice}\n{rig.tail()}"
    bad = {f: len(manifests.get(f, [])) for f in names if len(manifests.get(f, [])) != 1}
    assert not bad, f"files without exactly one manifest: {bad}"
    assert all(m[0]["status"] == "delivered" for f, m in manifests.items() if f in names)
    moved = {f: done[f] for f in names if done[f] != 1}
    assert not moved, f"files not moved to _done/ exactly once: {moved}"
    return snap


# ---- (a) three daemons, one inbox, one workspace ----------------------------------------------


def test_three_daemons_take_each_file_once_within_the_shared_limits(
    tmp_path: Path, emu: Emulator, pg_url: str, sample: Path
) -> None:
    n = 60
    files = make_files(sample, tmp_path / "staging", n)
    rig = make_cluster(tmp_path / "rig", emu, pg_url)
    try:
        rig.start()
        names = [f.name for f in files]
        rig.drop_all(files)
        rig.wait_delivered(names, timeout=180)
        snap = assert_once_each(rig, emu, names)
        refused = [
            (
                node_of(q),
                q["method"],
                q["path"],
                round(q["t"] - snap["projects"][0]["created_at"], 1),
            )
            for q in snap["requests"]
            if q["status"] == 429
        ]
        assert refusals(snap) == {"rate_limited": 0, "tier_limited": 0, "429": 0}, refused
        assert peak_processing(snap) <= 2
        creates = Counter(
            node_of(q)
            for q in snap["requests"]
            if q["path"].endswith("/projects/create") and q["status"] == 200
        )
        assert sum(creates.values()) == n and set(creates) <= {"n1", "n2", "n3"}, creates
        rows = jobs(pg_url)
        assert len(rows) == n and {r["state"] for r in rows} == {"delivered"}
        assert {r["node"] for r in rows} <= {"n1", "n2", "n3"}
        status = rig.nodes["n2"].status()
        assert len(status) == n and all(j["node"] in ("n1", "n2", "n3") for j in status)
        assert rig.stop() == {"n1": 0, "n2": 0, "n3": 0}
    finally:
        rig.kill_all()


# ---- (b) a daemon SIGKILLed mid-upload ----------------------------------------------------------


def test_a_daemon_killed_mid_upload_is_carried_on_without_a_second_project(
    tmp_path: Path, emu: Emulator, pg_url: str, sample: Path
) -> None:
    big = padded_video(sample, tmp_path / "big.mp4", 1 << 30)  # sparse: seconds to upload
    rig = make_cluster(tmp_path / "rig", emu, pg_url, names=("n1", "n2"))
    try:
        rig.start()
        rig.drop_all([big])
        held = wait_for(
            lambda: (j := job_of(pg_url, "big.mp4")) and j["state"] == "uploading" and j,
            timeout=60,
            interval=0.02,
            what="the upload to start",
        )
        victim = held["node"]
        heir = "n2" if victim == "n1" else "n1"
        assert victim in ("n1", "n2"), held
        rig.kill(victim)
        killed_at = time.time()
        project_id = held["project_id"]
        assert project_id, held

        def carried_on() -> float | None:
            seen = [
                q["t"]
                for q in emu.snapshot()["requests"]
                if q["t"] > killed_at and node_of(q) == heir and project_id in str(q["path"])
            ]
            return min(seen) if seen else None

        first = wait_for(carried_on, timeout=LEASE + 30, interval=0.1, what="the heir to go on")
        assert first - killed_at <= LEASE + 30
        rig.wait_delivered(["big.mp4"], timeout=120)
        assert_once_each(rig, emu, ["big.mp4"])
        row = job_of(pg_url, "big.mp4")
        assert row is not None and (row["state"], row["node"], row["project_id"]) == (
            "delivered",
            heir,
            project_id,
        )
        assert rig.stop() == {victim: -9, heir: 0}
    finally:
        rig.kill_all()


# ---- (c) a daemon frozen past its lease ---------------------------------------------------------


def test_a_daemon_frozen_past_its_lease_sends_nothing_for_the_job_it_lost(
    tmp_path: Path, pg_url: str, sample: Path
) -> None:
    # 4 x 4 s of processing: the job is still processing at Carmic when the heir takes it.
    with cluster_emulator(step=4.0) as emu:
        rig = make_cluster(tmp_path / "rig", emu, pg_url, names=("n1", "n2"))
        try:
            rig.start()
            [src] = make_files(sample, tmp_path / "staging", 1, prefix="frozen")
            rig.drop_all([src])
            held = wait_for(
                lambda: (j := job_of(pg_url, src.name)) and j["state"] == "processing" and j,
                timeout=60,
                interval=0.05,
                what="the job to be processing",
            )
            sleeper = held["node"]
            heir = "n2" if sleeper == "n1" else "n1"
            rig.freeze(sleeper)
            frozen_at = time.time()
            taken = wait_for(
                lambda: (j := job_of(pg_url, src.name)) and j["node"] == heir and j,
                timeout=LEASE + 30,
                interval=0.1,
                what="the heir to take the job",
            )
            # Renewed every lease/3: the lease had at least 2/3 of its length left at the freeze.
            assert time.time() - frozen_at >= LEASE * 2 / 3 - 0.5, "taken before the lease ended"
            thawed_at = time.time()
            rig.thaw(sleeper)
            rig.wait_delivered([src.name], timeout=60)
            snap = assert_once_each(rig, emu, [src.name])
            project_id = taken["project_id"]
            assert project_id == held["project_id"]
            clips = {c["id"] for p in snap["projects"] if p["id"] == project_id for c in p["clips"]}
            late = [
                (q["method"], q["path"], q["status"])
                for q in snap["requests"]
                if (q["started"] or q["t"]) > thawed_at
                and node_of(q) == sleeper
                and about(q, project_id, clips)
            ]
            assert not late, f"{sleeper} sent requests for the job it lost: {late}\n{rig.tail()}"
            assert job_of(pg_url, src.name)["node"] == heir  # type: ignore[index]
            assert rig.running() == ["n1", "n2"], rig.tail()  # the sleeper woke up and went on
            assert rig.stop() == {"n1": 0, "n2": 0}
        finally:
            rig.kill_all()


# ---- (d) the database restarted mid-run ---------------------------------------------------------


@pytest.fixture
def own_pg() -> Iterator[tuple[PgServer, str]]:
    """A server of this test's own: restarting the session's would disturb other tests."""
    with running_server() as server:
        for url in fresh_database(server):
            yield server, url


def test_the_database_restarted_mid_run_loses_and_doubles_nothing(
    tmp_path: Path, own_pg: tuple[PgServer, str], sample: Path
) -> None:
    server, url = own_pg
    n = 16
    with cluster_emulator(step=0.3) as emu:
        files = make_files(sample, tmp_path / "staging", n)
        rig = make_cluster(tmp_path / "rig", emu, url, names=("n1", "n2"))
        try:
            rig.start()
            names = [f.name for f in files]
            rig.drop_all(files)
            wait_for(lambda: len(rig.manifests()) >= 3, timeout=60, what="some deliveries")
            # Down until a daemon has noticed (its next lease renewal), then up again.
            server.stop()
            try:
                wait_for(
                    lambda: [n for n in rig.names if "cannot be reached" in rig.log(n)],
                    timeout=LEASE + 5,
                    what="a daemon to notice the database is gone",
                )
            except AssertionError as e:
                raise AssertionError(f"{e}\n{rig.tail(60)}") from None
            finally:
                server.start()
            rig.wait_delivered(names, timeout=120)
            snap = assert_once_each(rig, emu, names)
            assert refusals(snap)["429"] == 0
            assert rig.running() == ["n1", "n2"], rig.tail()
            assert rig.stop() == {"n1": 0, "n2": 0}
        finally:
            rig.kill_all()


# ---- (e) from one host on SQLite to a cluster ---------------------------------------------------


@pytest.mark.parametrize("config_first", [True, False], ids=["cluster-config", "single-config"])
def test_after_ledger_migrate_a_cluster_takes_nothing_twice(
    tmp_path: Path, emu: Emulator, pg_url: str, sample: Path, config_first: bool
) -> None:
    """Either order: [cluster] and the names into the config, then migrate (as docs/cluster.md
    says); or migrate with the single host's config (jobs named by path), then [cluster]: the
    first cluster start renames them."""
    old = make_files(sample, tmp_path / "staging", 4, prefix="old")
    new = make_files(sample, tmp_path / "staging", 1, prefix="new")
    rig = Cluster(tmp_path / "rig", emu, pg_url, names=("n1", "n2"), lease_seconds=LEASE)
    # n1 first runs alone on SQLite; "keep" leaves its delivered sources in the inbox.
    rig.configure(carmic=BASE_CARMIC, inbox={**BASE_INBOX, "on_success": "keep"})
    single = rig.nodes["n1"]
    single.write_config(carmic=BASE_CARMIC, inbox={**BASE_INBOX, "on_success": "keep"})
    try:
        rig.start("n1")
        rig.drop_all(old)
        rig.wait_delivered([f.name for f in old], timeout=60)
        assert rig.stop() == {"n1": 0}
        before = len(emu.snapshot()["projects"])
        # As docs/cluster.md says: [cluster] and the inbox names into the config, then migrate
        # (the names are what the cluster knows its inboxes by).
        if config_first:
            rig.join("n1")
        migrated = single.cli("ledger", "migrate", "--to", pg_url, "-c", str(single.config_path))
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        if not config_first:
            rig.join("n1")
        rig.start("n1", "n2")
        rig.drop_all(new)
        # Once the new file is delivered, both daemons have scanned (and settled) the old ones.
        rig.wait_delivered([new[0].name], timeout=60)
        snap = emu.snapshot()
        assert len(snap["projects"]) == before + 1, rig.tail()
        manifests = rig.manifests()
        assert {f: len(m) for f, m in manifests.items()} == {
            **{f.name: 1 for f in old},
            new[0].name: 1,
        }
        assert all((rig.inbox / f.name).exists() for f in old)  # kept, not taken again
        assert rig.stop() == {"n1": 0, "n2": 0}
    finally:
        rig.kill_all()

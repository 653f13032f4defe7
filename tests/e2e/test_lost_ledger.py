"""A lost ledger is read back from the outbox manifests: delivered content is never billed
again, nor delivered to `name (2)/`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.e2e.harness import Env, billed_projects, wait_for
from watchd.ledger.db import DB_NAME

RULE = {"render": {"min_score": 0, "max_clips": 1}}


def _projects(env: Env) -> int:
    return len(env.emu.snapshot()["projects"])


def _deliver_once(env: Env, sample: Path, rel: str, *, on_success: str) -> None:
    env.write_config({"podcasts": RULE}, inbox={"on_success": on_success})
    env.start()
    env.drop(sample, rel)
    env.wait_states({rel: "delivered"})
    assert env.stop() == 0
    assert _projects(env) == 1


def _lose_ledger(env: Env) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{env.state / DB_NAME}{suffix}").unlink(missing_ok=True)
    os.truncate(env.state / DB_NAME, 0)


def test_truncated_ledger_with_a_kept_source_bills_nothing_again(
    env: Env, sample_videos: list[Path]
) -> None:
    _deliver_once(env, sample_videos[0], "podcasts/ep1.mp4", on_success="keep")
    _lose_ledger(env)

    env.start()
    jobs = env.wait_states({"podcasts/ep1.mp4": "delivered"})
    wait_for(lambda: "ready:" in env.log().rsplit("===== run", 1)[-1], what="ready")
    # A rescan or two later, still nothing new.
    env.drop(sample_videos[1], "podcasts/marker.mp4")
    env.wait_states({"podcasts/marker.mp4": "delivered"})
    assert env.stop() == 0

    assert len(jobs) == 1 and jobs[0]["project_id"]
    snapshot = env.emu.snapshot()
    assert len(snapshot["projects"]) == 2  # ep1 once, marker once
    assert all(len(ids) == 1 for ids in billed_projects(snapshot).values())
    assert not (env.outbox / "podcasts/ep1 (2)").exists()
    assert "2 deliveries read back" not in env.log()
    assert "1 deliveries read back from the outbox manifests" in env.log()


@pytest.mark.parametrize("on_success", ["move", "delete"])
def test_the_same_content_dropped_again_after_a_lost_ledger_is_a_duplicate(
    env: Env, sample_videos: list[Path], on_success: str
) -> None:
    """Its source moved to _done/ (fingerprint from the file) or deleted (full SHA-256)."""
    _deliver_once(env, sample_videos[2], "podcasts/ep2.mp4", on_success=on_success)
    _lose_ledger(env)

    env.start()
    env.drop(sample_videos[2], "podcasts/ep2 again.mp4")
    jobs = env.wait_states({"podcasts/ep2 again.mp4": "delivered"})
    assert env.stop() == 0

    assert _projects(env) == 1
    again = env.manifest("podcasts/ep2 again")
    assert again["duplicate_of"]["outbox_folder"] == "podcasts/ep2"
    first = next(j for j in jobs if j["source"] == "podcasts/ep2.mp4")
    assert again["project_id"] == first["project_id"]


def test_ledger_rebuild_by_hand(env: Env, sample_videos: list[Path]) -> None:
    _deliver_once(env, sample_videos[3], "podcasts/ep3.mp4", on_success="move")
    (env.state / DB_NAME).rename(env.root / "ledger.db.damaged")

    r = env.cli("ledger", "rebuild", "-c", str(env.config_path))
    assert r.returncode == 0, r.stderr
    assert "1 deliveries read back" in r.stdout and "1 delivered" in r.stdout
    jobs = env.status()
    assert [(j["source"], j["state"]) for j in jobs] == [("podcasts/ep3.mp4", "delivered")]
    assert jobs[0]["project_id"] == env.manifest("podcasts/ep3")["project_id"]
    # Twice records nothing new.
    r = env.cli("ledger", "rebuild", "-c", str(env.config_path))
    assert r.returncode == 0 and "0 deliveries read back" in r.stdout, r.stdout
    assert "1 already in the ledger" in r.stdout
    assert len(env.status()) == 1


def test_ledger_rebuild_is_refused_while_the_daemon_runs(env: Env) -> None:
    env.write_config({"podcasts": RULE})
    env.start()
    wait_for(lambda: "ready:" in env.log(), what="ready")
    r = env.cli("ledger", "rebuild", "-c", str(env.config_path))
    assert r.returncode == 2 and f"PID {env.proc.pid if env.proc else ''}" in r.stderr, r.stderr
    assert env.stop() == 0

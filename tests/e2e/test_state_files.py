"""Secrets at rest: what `watchd run` creates in state_dir is its user's only, under umask 022."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.e2e.harness import Env, wait_for

RULE = {"render": {"min_score": 0, "max_clips": 1}}


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_state_dir_0700_and_every_file_in_it_0600_under_umask_022(
    env: Env, sample_videos: list[Path]
) -> None:
    state = env.root / "fresh-state"
    env.write_config({"podcasts": RULE}, daemon={"state_dir": str(state)})
    old = os.umask(0o022)
    try:
        env.start()
    finally:
        os.umask(old)
    env.drop(sample_videos[0], "podcasts/ep1.mp4")
    env.wait_states({"podcasts/ep1.mp4": "delivered"})
    # While it runs: the WAL and its index exist (and held presigned URLs).
    names = {p.name for p in state.iterdir()}
    assert {"ledger.db", "ledger.db-wal", "ledger.db-shm", "watchd.lock"} <= names, names
    assert _mode(state) == 0o700
    for p in state.iterdir():
        assert _mode(p) == 0o600, (p, oct(_mode(p)))
    assert "may be read by" not in env.log()
    assert env.stop() == 0


def test_a_wide_state_dir_and_ledger_are_warned_about_once(env: Env) -> None:
    env.write_config()
    env.state.chmod(0o755)
    old = os.umask(0o022)
    try:
        env.start()
        wait_for(lambda: "ready:" in env.log(), what="ready")
        assert env.stop() == 0
    finally:
        os.umask(old)
    (env.state / "ledger.db").chmod(0o644)
    env.start()
    wait_for(lambda: env.log().count("ready:") == 2, what="ready again")
    assert env.stop() == 0
    second = env.log().rsplit("===== run 2", 1)[1]
    lines = [line for line in second.splitlines() if "may be read by" in line]
    assert len(lines) == 2, lines  # the folder and ledger.db, each once
    assert any(f"{env.state} may be read by group and others" in line for line in lines)
    assert any("ledger.db may be read by group and others (mode 0644)" in line for line in lines)

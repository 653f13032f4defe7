"""An inbox that vanishes or suddenly empties pauses; a remount starts nothing twice."""

from __future__ import annotations

import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from tests.e2e.harness import Env, wait_for


def _paused(env: Env, reason: str = "") -> bool:
    lines = env.cli("status").stdout.splitlines()
    return any(line.startswith("! PAUSED inbox") and reason in line for line in lines)


def test_unmounted_share_pauses_and_remount_starts_nothing_twice(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config(
        {"podcasts": {"render": {"max_clips": 1}}},
        inbox={"on_success": "keep"},
        daemon={"rescan_seconds": 1},
    )
    env.drop(sample_videos[0], "podcasts/a.mp4")
    env.drop(sample_videos[1], "b.mp4")
    env.start()
    env.wait_states({"podcasts/a.mp4": "delivered", "b.mp4": "delivered"})
    creates = env.emu.snapshot()["counters"]["creates"]

    # "Unmount": the share's files disappear and an empty mount point stays behind.
    away = env.root / "share-offline"
    env.inbox.rename(away)
    env.inbox.mkdir()
    wait_for(lambda: _paused(env, "suddenly empty"), timeout=30, what="paused: suddenly empty")
    assert all(j["state"] == "delivered" for j in env.status())

    # "Remount" as a new filesystem would: same names, sizes and mtimes, new inodes.
    env.inbox.rmdir()
    shutil.copytree(away, env.inbox, copy_function=shutil.copy2)
    wait_for(lambda: not _paused(env), timeout=30, what="inbox resumed")
    # A rescan or two later, still nothing new.
    env.drop(sample_videos[2], "podcasts/new.mp4")
    env.wait_states({"podcasts/new.mp4": "delivered"})
    jobs = env.status()
    assert sorted(j["source"] for j in jobs) == ["b.mp4", "podcasts/a.mp4", "podcasts/new.mp4"]
    assert env.emu.snapshot()["counters"]["creates"] == creates + 1
    assert env.stop() == 0


def test_missing_inbox_at_start_pauses_instead_of_failing(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({})
    env.inbox.rmdir()
    env.start()
    wait_for(lambda: _paused(env, "missing"), timeout=30, what="paused: missing")
    env.inbox.mkdir()
    env.drop(sample_videos[3], "late.mp4")
    env.wait_states({"late.mp4": "delivered"})
    assert env.stop() == 0


def test_an_inbox_the_daemon_emptied_itself_is_not_paused(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({}, inbox={"on_success": "delete"}, daemon={"rescan_seconds": 0.5})
    env.drop(sample_videos[0], "only.mp4")
    env.start()
    env.wait_states({"only.mp4": "delivered"})
    assert not (env.inbox / "only.mp4").exists()
    # Two rescans of the now empty inbox: no pause, and the next file is taken as usual.
    emptied = time.time()
    wait_for(lambda: _last_scan(env) > emptied + 0.6, timeout=30, what="two rescans")
    assert "pausing inbox" not in env.log() and not _paused(env)
    env.drop(sample_videos[1], "next.mp4")
    env.wait_states({"next.mp4": "delivered"})
    assert "pausing inbox" not in env.log()
    assert env.stop() == 0


def _last_scan(env: Env) -> float:
    with closing(sqlite3.connect(f"file:{env.state / 'ledger.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT max(last_scan_at) FROM inboxes").fetchone()
    return float(row[0] or 0)

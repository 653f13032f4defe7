"""Stops and crashes: every job continues from its recorded state, and nothing is billed,
delivered or lost twice."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Env, OutboxWatcher, billed_projects, iter_manifests, wait_for
from watchd.emulator import Timings

RULES = {
    "podcasts": {"render": {"min_score": 0, "max_clips": 2}, "exports": ["premiere"]},
    "tutorials": {"render": "all", "caption_style": "KARAOKE"},
}


def _assert_exactly_once(env: Env, files: list[str]) -> None:
    jobs = env.status()
    assert sorted(j["source"] for j in jobs) == sorted(files)
    assert all(j["state"] == "delivered" for j in jobs), jobs
    billed = billed_projects(env.emu.snapshot())
    by_project = {j["project_id"] for j in jobs}
    assert len(by_project) == len(files)
    for ids in billed.values():
        assert len(ids) == 1, billed
    assert sorted(p for ids in billed.values() for p in ids) == sorted(by_project)
    manifests = list(iter_manifests(env.outbox))
    assert len(manifests) == len(files)
    folders = sorted(str(f.relative_to(env.outbox)) for f, _ in manifests)
    assert folders == sorted(f.rsplit(".", 1)[0] for f in files)
    for folder, m in manifests:
        assert m["status"] == "delivered"
        for c in m["clips"]:
            assert (folder / c["file"]).exists()
    leftovers = [p for p in env.outbox.rglob("*") if p.name.startswith(".")]
    assert leftovers == [], leftovers
    for f in files:
        assert (env.inbox / "_done" / f).exists(), f


def test_sigterm_stops_within_10s_and_restart_continues(
    env: Env, sample_videos: list[Path]
) -> None:
    env.emu.update(timings=Timings(step=0.3, render=0.3, export=0.2, keepalive=1))
    env.write_config(RULES)
    env.start()
    files = ["podcasts/a.mp4", "tutorials/b.mp4"]
    env.drop(sample_videos[0], files[0])
    env.drop(sample_videos[1], files[1])
    wait_for(
        lambda: any(j["state"] in ("processing", "rendering") for j in env.status()),
        timeout=60,
        what="a job in flight",
    )
    t0 = time.monotonic()
    assert env.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - t0 < 10
    assert any(j["state"] not in ("delivered", "failed") for j in env.status())
    env.start()
    env.wait_states({f: "delivered" for f in files})
    _assert_exactly_once(env, files)
    assert env.stop() == 0


@pytest.mark.slow
def test_sigkill_at_random_moments_never_double_bills(env: Env, sample_videos: list[Path]) -> None:
    rng = random.Random(20261129)
    # Slow enough that the pipeline spans several kills even on a fast machine.
    env.emu.update(timings=Timings(step=0.6, render=1.0, export=0.3, keepalive=1))
    env.write_config(RULES, daemon={"settle_seconds": 0.3})
    files = ["podcasts/a.mp4", "podcasts/b.mp4", "tutorials/c.mp4", "tutorials/d.mp4"]
    with OutboxWatcher(env.outbox) as watcher:
        for i, f in enumerate(files):
            env.drop(sample_videos[i], f)
        kills = 0
        in_flight: list[list[str]] = []
        while kills < 8:
            env.start()
            # Let it get somewhere (the log says when it is up), then pull the plug.
            wait_for(
                lambda: "ready" in env.log().rsplit("===== run", 1)[-1], timeout=30, what="ready"
            )
            time.sleep(rng.uniform(0.3, 1.5))  # the random moment is the point of this test
            env.kill()
            kills += 1
            in_flight.append(sorted(j["state"] for j in env.status()))
            done = all(j["state"] == "delivered" for j in env.status())
            if kills >= 5 and done and len(env.status()) == 4:
                break
        env.start()
        env.wait_states({f: "delivered" for f in files}, timeout=120)
        wait_for(lambda: "ready" in env.log().rsplit("===== run", 1)[-1], timeout=30, what="ready")
        assert env.stop() == 0
    assert watcher.scans > 10
    assert watcher.partial_files() == []
    _assert_exactly_once(env, files)
    # The kills really landed mid-pipeline (not all after the work was done).
    assert kills >= 5
    busy = [s for s in in_flight if any(x not in ("delivered", "failed") for x in s)]
    assert len(busy) >= 4, in_flight


def test_sigterm_repeated_through_the_whole_shutdown_is_still_a_clean_stop(env: Env) -> None:
    """systemd, a supervisor or an impatient operator may send SIGTERM again while the daemon
    stops: at any moment of the shutdown it stays a clean stop (exit 0), never a death by the
    signal (the loop's handlers are gone for the last steps)."""
    env.write_config(RULES)
    env.start()
    wait_for(lambda: "ready:" in env.log() or None, timeout=60, what="the daemon ready")
    proc = env.proc
    assert proc is not None
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    assert proc.wait(timeout=5) == 0, env.log()[-2000:]

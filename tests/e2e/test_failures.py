"""`watchd run` as a subprocess against the emulator over loopback: the failure paths.

Each test drives a real daemon with real files; the emulator's knobs make the Carmic side go
wrong on purpose, and the emulator's inspection state says what was (not) created and billed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.e2e.harness import Env

RULE = {"video_type": "podcast", "render": {"min_score": 0, "max_clips": 2}}


def create_requests(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r
        for r in snapshot["requests"]
        if r["method"] == "POST" and r["path"].endswith("/v1/projects/create")
    ]


def job_of(jobs: list[dict[str, Any]], source: str) -> dict[str, Any]:
    return next(j for j in jobs if j["source"] == source)


def assert_failed_in_outbox(env: Env, folder: str, code_part: str) -> dict[str, Any]:
    """The failure is told in the outbox: a failed manifest with the error, a FAILED.txt."""
    m = env.manifest(folder)
    assert m["status"] == "failed", m
    assert m["clips"] == [] and m["project_id"] is None
    assert code_part in m["error"]["code"], m["error"]
    assert m["error"]["message"]
    text = (env.outbox / folder / "FAILED.txt").read_text()
    assert text.startswith("FAILED: ") and "What went wrong:" in text and "What to do:" in text
    assert m["error"]["message"].splitlines()[0][:40] in text
    return m


# ---- 1. local failures: nothing is billed ------------------------------------------------------


def test_bad_files_fail_locally_without_a_project(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": RULE})
    podcasts = env.inbox / "podcasts"
    podcasts.mkdir()
    (podcasts / "empty.mp4").write_bytes(b"")
    whole = sample_videos[0].read_bytes()
    (podcasts / "truncated.mp4").write_bytes(whole[: len(whole) * 6 // 10])
    (podcasts / "noise.mp4").write_bytes(os.urandom(200_000))
    huge = podcasts / "huge.mp4"
    with open(huge, "wb") as f:
        f.write(whole[:4096])  # a real header: only the size is wrong
        f.truncate(5_100_000_000)  # sparse: no disk used
    env.start()
    expected = {
        "podcasts/empty.mp4": "empty",
        "podcasts/truncated.mp4": "truncated",
        "podcasts/noise.mp4": "not_video",
        "podcasts/huge.mp4": "too_large",
    }
    jobs = env.wait_states(dict.fromkeys(expected, "failed"), timeout=60)
    for source, code in expected.items():
        job = job_of(jobs, source)
        assert job["error"], job
        assert job["project_id"] is None
        stem = Path(source).stem
        assert_failed_in_outbox(env, f"podcasts/{stem}", code)
        # Moved to _failed/<rule>/ (on_failure = "move"), the same size as before.
        moved = env.inbox / "_failed/podcasts" / Path(source).name
        assert moved.exists(), source
        assert not (env.inbox / source).exists()
    assert (env.inbox / "_failed/podcasts/huge.mp4").stat().st_size == 5_100_000_000
    by_source = {j["source"]: j for j in jobs}
    assert "0 bytes" in by_source["podcasts/empty.mp4"]["error"]
    snap = env.emu.snapshot()
    assert create_requests(snap) == []
    assert snap["counters"]["creates"] == 0 and snap["projects"] == []
    assert all(ws["charges"] == [] for ws in snap["billing"].values())
    assert env.stop() == 0

"""A per-file sidecar `<video>.toml` overrides the rule for that one file."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import Env


def test_sidecar_title_and_render_none(env: Env, sample_videos: list[Path]) -> None:
    env.write_config({"podcasts": {"render": "all", "captions": True}})
    (env.inbox / "podcasts").mkdir(parents=True)
    # The sidecar goes first, so it is there when the video settles.
    (env.inbox / "podcasts/ep7.mp4.toml").write_text(
        'title = "Episode Seven"\nrender = "none"\nlanguage = "fr"\n'
    )
    env.drop(sample_videos[0], "podcasts/ep7.mp4")
    env.start()
    env.wait_states({"podcasts/ep7.mp4": "delivered"})
    m = env.manifest("podcasts/ep7")
    assert m["clips"] and all(c["file"] is None for c in m["clips"])
    assert all(c["captions"] for c in m["clips"])
    state = env.emu.snapshot()
    (project,) = state["projects"]
    assert project["title"].startswith("Episode Seven [wd-")
    assert project["language"] == "fr"
    assert state["counters"]["renders"] == 0
    # The sidecar travels with its video.
    assert (env.inbox / "_done/podcasts/ep7.mp4.toml").exists()
    assert env.stop() == 0


def test_invalid_sidecar_fails_the_file_with_a_clear_error(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({})
    (env.inbox / "bad.mp4.toml").write_text('rendr = "all"\n')
    env.drop(sample_videos[1], "bad.mp4")
    env.start()
    (job,) = env.wait_states({"bad.mp4": "failed"})
    assert "rendr" in job["error"] and "render" in job["error"]
    m = env.manifest("bad")
    assert m["status"] == "failed" and m["error"]["code"] == "sidecar_invalid"
    assert (env.outbox / "bad" / "FAILED.txt").exists()
    assert env.emu.snapshot()["counters"]["creates"] == 0
    assert env.stop() == 0

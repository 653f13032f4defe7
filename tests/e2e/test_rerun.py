"""Re-running a file: after `watchd forget` the running daemon takes it again; the same content
is a duplicate only under the same rule with the same resolved preset."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.e2e.harness import Env, rendered_styles

ONE = {"min_score": 0, "max_clips": 1}


def test_a_forgotten_file_moved_back_is_taken_again_by_the_running_daemon(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": {"render": ONE}})
    env.drop(sample_videos[0], "podcasts/ep.mp4")
    env.start()
    (job,) = env.wait_states({"podcasts/ep.mp4": "delivered"})
    done = env.inbox / "_done/podcasts/ep.mp4"
    assert done.is_file()
    r = env.cli("forget", job["id"])
    assert r.returncode == 0, r.stderr
    # Back where it was, with its size and mtime (the identity the daemon remembered).
    shutil.move(done, env.inbox / "podcasts/ep.mp4")
    (again,) = env.wait_states({"podcasts/ep.mp4": "delivered"}, timeout=60)
    assert again["id"] != job["id"]
    assert env.emu.snapshot()["counters"]["creates"] == 2
    assert {m.parent.name for m in env.outbox.rglob("manifest.json")} == {"ep", "ep (2)"}
    assert env.runs == 1 and env.proc is not None and env.proc.poll() is None
    assert env.stop() == 0


def test_the_same_video_in_two_rules_is_two_pieces_of_work(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config(
        {
            "karaoke": {"caption_style": "KARAOKE", "render": ONE},
            "bubble": {"caption_style": "BUBBLE", "render": ONE},
        }
    )
    env.drop(sample_videos[0], "karaoke/ep.mp4")
    env.drop(sample_videos[0], "bubble/ep.mp4")
    env.start()
    jobs = {
        j["source"]: j
        for j in env.wait_states({"karaoke/ep.mp4": "delivered", "bubble/ep.mp4": "delivered"})
    }
    styles = rendered_styles(env.emu.snapshot())
    assert len(styles) == 2
    assert styles[jobs["karaoke/ep.mp4"]["project_id"]] == {"KARAOKE"}
    assert styles[jobs["bubble/ep.mp4"]["project_id"]] == {"BUBBLE"}
    for rule, style in (("karaoke", "KARAOKE"), ("bubble", "BUBBLE")):
        m = env.manifest(f"{rule}/ep")
        assert m["status"] == "delivered" and len(m["clips"]) == 1 and "duplicate_of" not in m
        assert m["preset"]["caption_style"] == style
    assert env.stop() == 0


def test_the_same_video_twice_in_one_rule_is_a_duplicate(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({"podcasts": {"render": ONE}})
    env.drop(sample_videos[0], "podcasts/ep.mp4")
    env.start()
    (first,) = env.wait_states({"podcasts/ep.mp4": "delivered"})
    env.drop(sample_videos[0], "podcasts/ep copy.mp4")
    jobs = {j["source"]: j for j in env.wait_states(2)}
    copy = jobs["podcasts/ep copy.mp4"]
    assert copy["state"] == "delivered" and copy["duplicate_of"] == first["id"]
    assert len(env.emu.snapshot()["projects"]) == 1
    m = env.manifest("podcasts/ep copy")
    assert m["duplicate_of"]["job_id"] == first["id"] and m["clips"] == []
    table = env.cli("status").stdout
    assert f"duplicate of {first['id']}, delivered to {env.outbox / 'podcasts/ep'}" in table
    assert env.stop() == 0

"""A preset the API would refuse is caught before anything is paid for; `watchd retry` gives a
job that has not rendered yet its rule's current preset."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Env, rendered_styles, wait_for
from tests.emulator.helpers import Api

TYPO = {"caption_style": "HORMOSI", "render": {"min_score": 0, "max_clips": 1}}


@pytest.fixture
def api(env: Env) -> Iterator[Api]:
    with Api(env.emu) as a:
        a.login()
        yield a


def wait_ready(env: Env) -> None:
    wait_for(lambda: "ready: " in env.log(), timeout=60, what="the daemon to be ready")


def clip_styles(env: Env, project_id: str) -> set[str]:
    return rendered_styles(env.emu.snapshot())[project_id]


def test_check_refuses_a_misspelt_caption_style(env: Env) -> None:
    env.write_config({"podcasts": TYPO})
    r = env.cli("check")
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        'inbox[0].rules.podcasts.caption_style: "HORMOSI" is neither a built-in caption style '
        'nor a template of the workspace; did you mean "HORMOZI"?'
    ) in r.stderr
    offline = env.cli("check", "--offline")
    assert offline.returncode == 0
    assert "was not verified offline" in offline.stdout and "HORMOZI" in offline.stdout


def test_the_daemon_does_not_start_on_a_misspelt_caption_style(env: Env) -> None:
    env.write_config({"podcasts": TYPO})
    proc = env.start()
    assert proc.wait(timeout=60) == 2
    assert 'inbox[0].rules.podcasts.caption_style: "HORMOSI"' in env.log()
    assert env.emu.snapshot()["counters"]["creates"] == 0


def test_a_reload_with_a_misspelt_caption_style_keeps_the_old_preset(
    env: Env, sample_videos: list[Path]
) -> None:
    good = {"caption_style": "KARAOKE", "render": {"min_score": 0, "max_clips": 1}}
    env.write_config({"podcasts": good})
    env.start()
    wait_ready(env)
    env.write_config({"podcasts": TYPO})
    mark = len(env.log())
    assert env.proc is not None
    env.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in env.log()[mark:], timeout=30, what="the refusal")
    assert "HORMOSI" in env.log()[mark:] and '"HORMOZI"' in env.log()[mark:]
    env.drop(sample_videos[0], "podcasts/ep.mp4")
    (job,) = env.wait_states({"podcasts/ep.mp4": "delivered"})
    assert clip_styles(env, job["project_id"]) == {"KARAOKE"}
    assert env.stop() == 0


def test_a_sidecar_with_an_unknown_caption_style_fails_before_the_create(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config({})
    (env.inbox / "a.mp4.toml").write_text('caption_style = "HORMOSI"\n')
    (env.inbox / "b.mp4.toml").write_text("[template.style]\nfontSize = 1000\n")
    env.drop(sample_videos[0], "a.mp4")
    env.drop(sample_videos[1], "b.mp4")
    env.start()
    jobs = {j["source"]: j for j in env.wait_states({"a.mp4": "failed", "b.mp4": "failed"})}
    assert jobs["a.mp4"]["error_code"] == "preset_invalid"
    assert jobs["a.mp4"]["error"].startswith(
        'the preset (inbox root or sidecar a.mp4.toml) cannot be used: caption_style: "HORMOSI" '
        "is neither a built-in caption style nor a template of the workspace; did you mean "
        '"HORMOZI"?'
    )
    assert jobs["b.mp4"]["error_code"] == "sidecar_invalid"
    assert "template.style.fontSize: must be between 8 and 400" in jobs["b.mp4"]["error"]
    assert env.emu.snapshot()["counters"]["creates"] == 0
    assert env.stop() == 0


def failed_at_render(env: Env, api: Api, video: Path) -> dict[str, Any]:
    """A job that failed at its render's preset PUT: its rule names the workspace template
    BRAND, deleted in the web app after the daemon looked at the templates (a 422). The rule
    is then fixed (HORMOZI)."""
    r = api.post("/v1/templates", json={"name": "BRAND", "template_config": {}})
    assert r.status_code == 201, r.text
    env.write_config({"podcasts": {"caption_style": "BRAND", "render": "all"}})
    env.start()
    wait_ready(env)
    assert api.delete(f"/v1/templates/{r.json()['data']['id']}").status_code in (200, 204)
    env.drop(video, "podcasts/ep.mp4")
    (job,) = env.wait_states({"podcasts/ep.mp4": "failed"})
    assert "BRAND" in job["error"] and "takes the rule's preset as it is then" in job["error"]
    env.write_config({"podcasts": {"caption_style": "HORMOZI", "render": "all"}})
    return job


def test_retry_renders_with_the_fixed_preset(env: Env, api: Api, sample_videos: list[Path]) -> None:
    job = failed_at_render(env, api, sample_videos[0])
    r = env.cli("retry", job["id"])
    assert r.returncode == 0, r.stderr
    assert 'takes the rule\'s current preset (caption_style "BRAND" -> "HORMOZI")' in r.stdout
    (job,) = env.wait_states({"podcasts/ep.mp4": "delivered"})
    assert clip_styles(env, job["project_id"]) == {"HORMOZI"}
    assert env.emu.snapshot()["counters"]["creates"] == 1  # the same project, not a new one
    assert env.stop() == 0


def test_retry_keep_preset_keeps_the_old_one(env: Env, api: Api, sample_videos: list[Path]) -> None:
    job = failed_at_render(env, api, sample_videos[0])
    r = env.cli("retry", "--keep-preset", job["id"])
    assert r.returncode == 0 and "keeps its preset (--keep-preset)" in r.stdout
    (again,) = env.wait_states({"podcasts/ep.mp4": "failed"})
    assert "BRAND" in again["error"]
    assert clip_styles(env, job["project_id"]) == set()  # nothing rendered
    assert env.stop() == 0

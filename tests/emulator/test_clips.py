"""Clips (§3.5): detection, hydration, TemplateConfig PUT, renders and the rendered video."""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api, wait_for
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Faults, Timings, Variants
from watchd.emulator.content import HOSTILE_TITLES, clip_count, plan_clips
from watchd.emulator.templates import (
    TemplateError,
    default_template_config,
    validate_template_config,
)
from watchd.media import is_playable, media_info


def _shot(start: float, end: float) -> dict[str, float]:
    return {"start_time": start, "end_time": end}


@pytest.fixture
def clip(api: Api, sample_video: Path) -> dict[str, Any]:
    """The best clip of a processed 20 s sample."""
    return api.clips(api.ready_project(sample_video))[0]


# ---- detection ---------------------------------------------------------------------------------


def test_clips_of_a_20_s_video(api: Api, sample_video: Path) -> None:
    clips = api.clips(api.ready_project(sample_video))
    assert len(clips) == 3
    for c in clips:
        assert 0 <= c["start_time"] < c["end_time"] <= 20.0
        assert 0 <= c["virality_score"] <= 100 and c["reasoning"] and c["title"]
        assert c["status"] == "DETECTED"
        for key in ("thumbnail_url", "video_url", "source_video_url", "proxy_url"):
            assert c[key].startswith(api.emu.storage_url), key
    scores = [c["virality_score"] for c in clips]
    assert scores == sorted(scores, reverse=True)
    thumb = httpx.get(clips[0]["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"
    assert thumb.headers["Content-Type"] == "image/jpeg"


def test_clips_are_deterministic_per_seed(make_emu: MakeEmu, sample_video: Path) -> None:
    def titles_and_times(emu: Emulator) -> list[tuple[str, float, float]]:
        with Api(emu) as api:
            api.login()
            clips = api.clips(api.ready_project(sample_video))
        return [(c["title"], c["start_time"], c["end_time"]) for c in clips]

    first = titles_and_times(make_emu(seed=7))
    assert titles_and_times(make_emu(seed=7)) == first
    assert titles_and_times(make_emu(seed=8)) != first


def test_trim_limits_where_clips_come_from(api: Api, sample_video: Path) -> None:
    clips = api.clips(api.ready_project(sample_video, trim_start=6, trim_end=18))
    assert clips and all(c["start_time"] >= 6 and c["end_time"] <= 18 for c in clips)


# ---- hydration -----------------------------------------------------------------------------------


def test_hydration_payload(api: Api, clip: dict[str, Any]) -> None:
    data = api.get(f"/v1/clips/{clip['id']}").json()["data"]
    assert data["template_config"]["layout"]["layoutType"] == "face-track"
    assert set(data["template_config"]) >= {"layout", "audio", "elements", "style", "b_roll"}
    words = data["transcript"]["words"]
    length = clip["end_time"] - clip["start_time"]
    assert words and all({"word", "start", "end"} <= set(w) for w in words)
    assert words[0]["start"] >= 0 and words[-1]["end"] <= length + 1e-6
    for key in ("ai_suggested_layout_timeline", "advanced_spatial_matrix", "shots"):
        assert data[key], key
    shots = data["shots"]
    assert shots[0]["start_time"] == 0
    assert all(a["end_time"] == b["start_time"] for a, b in itertools.pairwise(shots))


def test_transcript_times_variant(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(variants=Variants(transcript_times="source"))
    with Api(emu) as api:
        api.login()
        c = api.clips(api.ready_project(sample_video))[0]
        words = api.get(f"/v1/clips/{c['id']}").json()["data"]["transcript"]["words"]
    assert c["start_time"] <= words[0]["start"] and words[-1]["end"] <= c["end_time"] + 1e-6


# ---- PUT TemplateConfig --------------------------------------------------------------------------


def test_put_stores_the_config_and_is_recorded(
    emu: Emulator, api: Api, clip: dict[str, Any]
) -> None:
    config = api.get(f"/v1/clips/{clip['id']}").json()["data"]["template_config"]
    config["caption_style"] = "KARAOKE"
    config["style"]["linesPerScreen"] = "auto"
    r = api.put(f"/v1/clips/{clip['id']}", json=config)
    assert r.status_code == 200
    stored = api.get(f"/v1/clips/{clip['id']}").json()["data"]["template_config"]
    assert stored["caption_style"] == "KARAOKE" and stored["style"]["linesPerScreen"] == "auto"
    # A partial body: missing keys take their defaults.
    assert api.put(f"/v1/clips/{clip['id']}", json={"caption_style": "MINIMAL"}).status_code == 200
    api.post(f"/v1/clips/{clip['id']}/render")
    snap = emu.snapshot()
    assert [e["kind"] for e in snap["clip_puts"]] == ["put", "put", "render"]
    assert snap["clip_puts"][0]["template_config"]["caption_style"] == "KARAOKE"
    recorded = next(c for c in snap["projects"][0]["clips"] if c["id"] == clip["id"])
    assert recorded["put_count"] == 2 and recorded["render_count"] == 1
    assert recorded["template_config"]["caption_style"] == "MINIMAL"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"shots": [{"start_time": 0, "end_time": 2}, {"start_time": 2.5, "end_time": 4}]},
            "shots[1]",
        ),
        (
            {"shots": [{"start_time": 0, "end_time": 3}, {"start_time": 2, "end_time": 4}]},
            "shots[1]",
        ),
        ({"shots": [{"start_time": 2, "end_time": 1}]}, "shots[0].end_time"),
        ({"layout": {"layoutType": "zoom"}}, "layout.layoutType"),
        ({"style": {"captionPosition": "left"}}, "style.captionPosition"),
        ({"style": {"linesPerScreen": "many"}}, "style.linesPerScreen"),
        ({"style": {"fontSize": 9000}}, "style.fontSize"),
        ({"style": {"uppercase": "yes"}}, "style.uppercase"),
        ({"audio": {"musicVolume": -1}}, "audio.musicVolume"),
        ({"caption_style": "COMIC_SANS"}, "caption_style"),
        ({"b_roll": [{"startTime": 1}]}, "b_roll[0].duration"),
        ({"layout": "split"}, "layout"),
    ],
)
def test_put_rejects_bad_configs_with_422(
    api: Api, clip: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    r = api.put(f"/v1/clips/{clip['id']}", json=change)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == 422 and r.json()["error"].startswith(field)


def test_a_custom_template_name_is_a_caption_style(api: Api, clip: dict[str, Any]) -> None:
    assert api.put(f"/v1/clips/{clip['id']}", json={"caption_style": "Studio"}).status_code == 422
    r = api.post("/v1/templates/", json={"name": "Studio", "ratio": "9_16", "template_config": {}})
    assert r.status_code == 201
    assert api.put(f"/v1/clips/{clip['id']}", json={"caption_style": "Studio"}).status_code == 200


# ---- render --------------------------------------------------------------------------------------


def test_video_is_404_before_render_then_302_to_a_playable_mp4(
    api: Api, clip: dict[str, Any], tmp_path: Path
) -> None:
    cid = clip["id"]
    before = api.get(f"/v1/clips/{cid}/video")
    assert before.status_code == 404 and before.json()["code"] == 404
    r = api.post(f"/v1/clips/{cid}/render")
    assert r.status_code == 200
    job = r.json()["data"]
    assert job["status"] == "QUEUED" and job["clip_id"] == cid and job["render_job_id"]
    progress = api.get(f"/v1/clips/{cid}/render-progress").json()["data"]
    assert progress == {
        "status": "RENDERED",
        "progress": 100,
        "render_job_id": job["render_job_id"],
        "error_message": None,
    }
    video = api.get(f"/v1/clips/{cid}/video")
    assert video.status_code == 302
    location = video.headers["Location"]
    assert location.startswith(api.emu.storage_url) and "X-Amz-Signature=" in location
    mp4 = httpx.get(location)
    assert mp4.status_code == 200 and mp4.headers["Content-Type"] == "video/mp4"
    out = tmp_path / "clip.mp4"
    out.write_bytes(mp4.content)
    assert is_playable(out)
    info = media_info(out)
    stream = next(s for s in info["streams"] if s["type"] == "video")
    assert stream["height"] > stream["width"]  # the final render is 9:16
    length = clip["end_time"] - clip["start_time"]
    assert abs(info["duration"] - length) < 1.5


def test_render_is_402_without_minutes(api: Api, clip: dict[str, Any]) -> None:
    api.emu.update(minutes=0)
    r = api.post(f"/v1/clips/{clip['id']}/render")
    assert r.status_code == 402 and "minutes" in r.json()["error"]
    api.emu.add_minutes(5)
    assert api.post(f"/v1/clips/{clip['id']}/render").status_code == 200


def test_render_charges_the_clip_minutes(emu: Emulator, api: Api, clip: dict[str, Any]) -> None:
    api.post(f"/v1/clips/{clip['id']}/render")
    api.post(f"/v1/clips/{clip['id']}/render")  # a re-render after edits is charged again
    charges = emu.snapshot()["billing"][emu.workspace_id]["charges"]
    assert [(c["kind"], c["minutes"]) for c in charges] == [
        ("ingest", 1),
        ("render", 1),
        ("render", 1),
    ]


def test_render_over_time(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, timings=Timings(render=10))
    with Api(emu) as api:
        api.login()
        cid = api.clips(api.ready_project(sample_video))[0]["id"]
        assert api.post(f"/v1/clips/{cid}/render").status_code == 200
        first = api.get(f"/v1/clips/{cid}/render-progress").json()["data"]
        assert first["status"] == "QUEUED" and first["progress"] == 0
        assert api.post(f"/v1/clips/{cid}/render").status_code == 409
        assert api.get(f"/v1/clips/{cid}/video").status_code == 404
        seen = {first["status"]}
        for _ in range(12):
            clock.advance(1)
            p = wait_for(
                lambda: api.get(f"/v1/clips/{cid}/render-progress").json()["data"],
                lambda p: p["status"] != "QUEUED",
                timeout=5,
            )
            seen.add(p["status"])
        done = wait_for(
            lambda: api.get(f"/v1/clips/{cid}/render-progress").json()["data"],
            lambda p: p["status"] == "RENDERED",
        )
    assert seen >= {"QUEUED", "RENDERING"} and done["progress"] == 100


def test_render_fail_first_then_retry_refunds(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(faults=Faults(render_fail_first=1), inspect=True)
    with Api(emu) as api:
        api.login()
        cid = api.clips(api.ready_project(sample_video))[0]["id"]
        assert api.post(f"/v1/clips/{cid}/retry-render").status_code == 409  # nothing failed yet
        api.post(f"/v1/clips/{cid}/render")
        failed = api.get(f"/v1/clips/{cid}/render-progress").json()["data"]
        assert failed["status"] == "FAILED_RENDER" and failed["error_message"]
        assert api.get(f"/v1/clips/{cid}/video").status_code == 404
        r = api.post(f"/v1/clips/{cid}/retry-render")
        assert r.status_code == 200 and r.json()["data"]["status"] == "QUEUED"
        done = api.get(f"/v1/clips/{cid}/render-progress").json()["data"]
        assert done["status"] == "RENDERED"
        assert api.post(f"/v1/clips/{cid}/retry-render").status_code == 409
    charges = emu.snapshot()["billing"][emu.workspace_id]["charges"]
    renders = [c for c in charges if c["kind"] == "render"]
    assert [c["refunded"] for c in renders] == [True, False]


def test_render_fail_rate(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(faults=Faults(render_fail_rate=1.0))
    with Api(emu) as api:
        api.login()
        cid = api.clips(api.ready_project(sample_video))[0]["id"]
        api.post(f"/v1/clips/{cid}/render")
        assert (
            api.get(f"/v1/clips/{cid}/render-progress").json()["data"]["status"] == "FAILED_RENDER"
        )


def test_render_fail_clips_fails_every_render_of_the_first_clips(
    make_emu: MakeEmu, sample_video: Path
) -> None:
    emu = make_emu(faults=Faults(render_fail_clips=1))
    with Api(emu) as api:
        api.login()
        first, second = [c["id"] for c in api.clips(api.ready_project(sample_video))][:2]

        def status(cid: str) -> str:
            return str(api.get(f"/v1/clips/{cid}/render-progress").json()["data"]["status"])

        api.post(f"/v1/clips/{first}/render")
        api.post(f"/v1/clips/{second}/render")
        assert (status(first), status(second)) == ("FAILED_RENDER", "RENDERED")
        assert api.post(f"/v1/clips/{first}/retry-render").status_code == 200
        assert status(first) == "FAILED_RENDER"


def test_undecodable_source_renders_a_synthetic_clip(make_emu: MakeEmu, tmp_path: Path) -> None:
    emu = make_emu(store_uploads=False)
    with Api(emu) as api:
        api.login()
        created = api.create(filesize=10, duration=20).json()["data"]
        api.upload(created["upload_url"], b"0123456789")
        api.post(f"/v1/projects/{created['project_id']}/process")
        cid = api.clips(created["project_id"])[0]["id"]
        api.post(f"/v1/clips/{cid}/render")
        location = api.get(f"/v1/clips/{cid}/video").headers["Location"]
    out = tmp_path / "synthetic.mp4"
    out.write_bytes(httpx.get(location).content)
    assert is_playable(out)


def test_editor_helpers(api: Api, clip: dict[str, Any]) -> None:
    cid = clip["id"]
    assert api.post(f"/v1/clips/{cid}/rebuild-layout").status_code == 200
    assert api.post(f"/v1/clips/{cid}/emoji-fill").json()["data"]["emojis"]
    captions = api.post(f"/v1/clips/{cid}/subtitle-dry-run").json()["data"]["captions"]
    assert captions and captions[0]["start"] >= 0
    assert len(api.post(f"/v1/clips/{cid}/generate-broll").json()["data"]) == 2
    assert api.get(f"/v1/clips/{cid}/broll").json()["data"] == []
    source = api.get(f"/v1/clips/{cid}/source-video")
    assert source.status_code == 302


# ---- units ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "n"), [(3, 1), (20, 3), (60, 10), (3600, 12)])
def test_clip_count(seconds: float, n: int) -> None:
    assert clip_count(seconds) == n


@pytest.mark.parametrize("span", [(0.0, 20.0), (5.0, 9.0), (0.0, 3600.0), (100.0, 100.4)])
def test_plans_stay_inside_the_span(span: tuple[float, float]) -> None:
    plans = plan_clips(random.Random(1), *span)
    for p in plans:
        assert span[0] <= p.start_time < p.end_time <= span[1]
        assert p.end_time - p.start_time <= 60
        assert all(p.start_time <= w["start"] < w["end"] <= p.end_time for w in p.words)
        validate_template_config({"shots": p.shots})  # contiguous: does not raise
        assert p.shots[-1]["end_time"] == pytest.approx(p.end_time - p.start_time, abs=1e-3)


def test_default_config_validates_and_errors_name_the_field() -> None:
    config = default_template_config([{"start_time": 0, "end_time": 1.5}])
    assert validate_template_config(config) == config
    with pytest.raises(TemplateError, match=r"^style\.fontSize"):
        validate_template_config({"style": {"fontSize": True}})
    with pytest.raises(TemplateError, match=r"^body"):
        validate_template_config([])


# ---- every accepted container ------------------------------------------------------------------

CONTAINERS = {
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpg": "video/mpeg",
    "flv": "video/x-flv",
}


@pytest.mark.parametrize("suffix", list(CONTAINERS))
def test_every_accepted_container_renders(make_emu: MakeEmu, tmp_path: Path, suffix: str) -> None:
    from watchd.media import make_sample_video

    source = tmp_path / f"source.{suffix}"
    make_sample_video(source, seconds=6.0, width=160, height=90, fps=25)
    emu = make_emu()
    with Api(emu) as api:
        api.login()
        pid = api.ready_project(source, content_type=CONTAINERS[suffix])
        assert api.get(f"/v1/projects/{pid}/status").json()["data"]["status"] == "CLIPS_READY"
        clip = api.clips(pid)[0]
        api.post(f"/v1/clips/{clip['id']}/render")
        location = api.get(f"/v1/clips/{clip['id']}/video").headers["Location"]
        rendered, preview = tmp_path / "rendered.mp4", tmp_path / "preview.mp4"
        rendered.write_bytes(httpx.get(location).content)
        preview.write_bytes(httpx.get(clip["video_url"]).content)
    assert is_playable(rendered) and is_playable(preview)


def test_hostile_titles_variant(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(variants=Variants(hostile_titles=True))
    with Api(emu) as api:
        api.login()
        first = [c["title"] for c in api.clips(api.ready_project(sample_video))]
        second = [c["title"] for c in api.clips(api.ready_project(sample_video))]
    # Handed out in turn across projects, so a few projects see every one of them.
    n = len(first)
    assert first == list(HOSTILE_TITLES[:n])
    assert second == list(HOSTILE_TITLES[n : 2 * n])
    assert "../../etc/passwd" in first and any("\n" in t for t in first + second)
    assert max(len(t.encode()) for t in HOSTILE_TITLES) > 255

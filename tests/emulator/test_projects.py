"""Projects (§3.3, §3.4): workspace scoping, create validation, limits, billing, listing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api, wait_for
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Faults, Timings, Variants


def _billing(emu: Emulator) -> dict[str, Any]:
    billing: dict[str, Any] = emu.snapshot()["billing"][emu.workspace_id]
    return billing


# ---- workspace scoping ---------------------------------------------------------------------------


def test_missing_workspace_header_is_403_with_the_reference_message(api: Api) -> None:
    for method, path in (
        ("GET", "/v1/projects"),
        ("POST", "/v1/projects/create"),
        ("POST", "/v1/sse-ticket"),
        ("GET", "/v1/templates/"),
        ("POST", "/v1/storage/upload-url"),
        ("GET", "/v1/clips/x"),
        ("GET", "/v1/exports/x"),
    ):
        r = api.request(method, path, ws=False)
        assert r.status_code == 403, (method, path)
        assert r.json() == {"error": "Workspace context required (X-Workspace-ID)", "code": 403}


def test_a_workspace_of_someone_else_is_403_and_its_records_404(
    emu: Emulator, sample_video: Path
) -> None:
    emu.register_user("other@example.com", "Other-pass-1")
    with Api(emu) as mine, Api(emu, "other@example.com", "Other-pass-1") as theirs:
        mine.login()
        theirs.login()
        pid = mine.ready_project(sample_video)
        cid = mine.clips(pid)[0]["id"]
        # Their token with my workspace id: not a member.
        r = theirs.get("/v1/projects", headers={"X-Workspace-ID": mine.ws})
        assert r.status_code == 403 and r.json()["code"] == 403
        # In their own workspace my records do not exist.
        assert theirs.get(f"/v1/projects/{pid}").status_code == 404
        assert theirs.get(f"/v1/projects/{pid}/status").status_code == 404
        assert theirs.post(f"/v1/projects/{pid}/process").status_code == 404
        assert theirs.delete(f"/v1/projects/{pid}").status_code == 404
        assert theirs.get(f"/v1/clips/{cid}").status_code == 404
        assert theirs.post(f"/v1/clips/{cid}/render").status_code == 404
        assert theirs.get("/v1/projects").json()["meta"]["total"] == 0
        assert mine.get(f"/v1/projects/{pid}").status_code == 200


# ---- create --------------------------------------------------------------------------------------


def test_create_returns_the_reference_shape_and_defaults_the_title(api: Api) -> None:
    r = api.create(filename="Episode 12.final.mp4", filesize=5000, duration=90)
    assert r.status_code == 200
    data = r.json()["data"]
    assert set(data) == {"project_id", "upload_url", "object_key"}
    assert "X-Amz-Signature=" in data["upload_url"]
    status = api.get(f"/v1/projects/{data['project_id']}/status").json()["data"]
    assert status["title"] == "Episode 12.final"
    assert status["status"] == "PENDING_UPLOAD" and status["progress"] == 0
    assert set(status) >= {"id", "status", "title", "progress", "current_step", "clip_count"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filename": None}, "filename"),
        ({"filename": ""}, "filename"),
        ({"filesize": None}, "filesize"),
        ({"filesize": "big"}, "filesize"),
        ({"filesize": 0}, "filesize"),
        ({"filesize": True}, "filesize"),
        ({"language_mode": "several"}, "language_mode"),
        ({"video_type": "cooking-show"}, "video_type"),
        ({"language": "english"}, "language"),
        ({"duration": -1}, "duration"),
        ({"trim_start": 10, "trim_end": 5}, "trim_end"),
        ({"duration": 30, "trim_end": 40}, "trim_end"),
        ({"enable_multimodal": "yes"}, "enable_multimodal"),
    ],
)
def test_create_validation_is_400(api: Api, body: dict[str, Any], field: str) -> None:
    r = api.create(**body) if "filename" not in body or body["filename"] is not None else None
    if r is None:
        r = api.post("/v1/projects/create", json={"filesize": 100})
    assert r.status_code == 400, r.text
    assert field in r.json()["error"]


def test_create_body_must_be_json(api: Api) -> None:
    r = api.post(
        "/v1/projects/create", content=b"filename=x", headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 400


def test_over_5_gib_is_413(api: Api) -> None:
    assert api.create(filesize=5 * 1024**3).status_code == 200
    api.emu.update(variants=Variants(tier_limit_status=429), tier="ENTERPRISE")
    r = api.create(filesize=5 * 1024**3 + 1)
    assert r.status_code == 413 and r.json()["code"] == 413


@pytest.mark.parametrize(
    "content_type",
    [
        "video/mp4",
        "mp4",
        "mov",
        "video/quicktime",
        "avi",
        "video/x-msvideo",
        "webm",
        "mkv",
        "video/x-matroska",
        "mpeg",
        "video/mpeg",
        "flv",
        "video/x-flv",
    ],
)
def test_accepted_content_types(make_emu: MakeEmu, content_type: str) -> None:
    emu = make_emu(tier="ENTERPRISE")
    with Api(emu) as api:
        api.login()
        assert api.create(content_type=content_type).status_code == 200


@pytest.mark.parametrize(
    "content_type", ["video/ogg", "image/png", "application/octet-stream", "ogv"]
)
def test_other_content_types_are_415(api: Api, content_type: str) -> None:
    r = api.create(content_type=content_type)
    assert r.status_code == 415 and r.json()["code"] == 415


def test_missing_content_type_follows_the_file_name(api: Api) -> None:
    assert api.create(filename="clip.mkv", content_type=None).status_code == 200
    assert api.create(filename="notes.txt", content_type=None).status_code == 415


def test_create_rate_limit_is_5_per_minute_per_workspace(make_emu: MakeEmu) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, tier="ENTERPRISE")
    with Api(emu) as api:
        api.login()
        codes = [api.create().status_code for _ in range(5)]
        limited = api.create()
        clock.advance(61)
        after = api.create()
    assert codes == [200] * 5
    assert limited.status_code == 429 and limited.json()["code"] == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert after.status_code == 200


@pytest.mark.parametrize(
    ("tier", "allowed"), [("FREE", 1), ("STANDARD", 1), ("PROFESSIONAL", 1), ("BUSINESS", 2)]
)
def test_tier_concurrency_limit_at_create(make_emu: MakeEmu, tier: str, allowed: int) -> None:
    emu = make_emu(tier=tier)
    with Api(emu) as api:
        api.login()
        codes = [api.create().status_code for _ in range(allowed)]
        refused = api.create()
    assert codes == [200] * allowed
    assert refused.status_code == 429
    assert "concurrent" in refused.json()["error"].lower()
    assert refused.headers["Retry-After"] == "5"  # the slot waits for an upload: a guess


def test_enterprise_is_unlimited(make_emu: MakeEmu) -> None:
    emu = make_emu(tier="ENTERPRISE")
    with Api(emu) as api:
        api.login()
        assert [api.create().status_code for _ in range(4)] == [200] * 4


@pytest.mark.parametrize("status", [402, 403, 409])
def test_tier_limit_status_variant(make_emu: MakeEmu, status: int) -> None:
    emu = make_emu(variants=Variants(tier_limit_status=status))
    with Api(emu) as api:
        api.login()
        api.create()
        r = api.create()
    assert r.status_code == status and "concurrent" in r.json()["error"].lower()


def test_tier_limit_at_process(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(variants=Variants(tier_limit_at="process", tier_limit_status=409))
    emu.update(timings={"step": 60})  # the first project stays in processing
    with Api(emu) as api:
        api.login()
        a = api.create_for(sample_video)
        b = api.create_for(sample_video)  # creating is not limited in this variant
        for created in (a, b):
            assert api.upload(created["upload_url"], sample_video.read_bytes()).status_code == 200
        assert api.post(f"/v1/projects/{a['project_id']}/process").status_code == 200
        r = api.post(f"/v1/projects/{b['project_id']}/process")
        assert r.status_code == 409 and "concurrent" in r.json()["error"].lower()
        # Four 60 s steps of the first project are left: that is the hint.
        assert 230 <= int(r.headers["Retry-After"]) <= 240
        # Still waiting for upload-to-process: the refused project can be processed later.
        assert api.post(f"/v1/projects/{a['project_id']}/cancel").status_code == 200
        assert api.post(f"/v1/projects/{b['project_id']}/process").status_code == 200


def test_tier_limit_at_process_holds_for_concurrent_calls(
    make_emu: MakeEmu, sample_video: Path
) -> None:
    # Two /process calls at once: the first one's upload is still being probed (its status is
    # still PENDING_UPLOAD) when the second asks; the claimed project must count already.
    emu = make_emu(variants=Variants(tier_limit_at="process", tier_limit_status=409))
    emu.update(timings={"step": 60})
    with Api(emu) as api, Api(emu) as other:
        api.login()
        other.login()
        ids = []
        for _ in range(2):
            created = api.create_for(sample_video)
            assert api.upload(created["upload_url"], sample_video.read_bytes()).status_code == 200
            ids.append(created["project_id"])
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda pair: pair[0].post(f"/v1/projects/{pair[1]}/process"),
                    zip((api, other), ids, strict=True),
                )
            )
    assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]


# ---- billing -------------------------------------------------------------------------------------


def test_create_pre_deducts_once_and_402_when_short(make_emu: MakeEmu) -> None:
    emu = make_emu(minutes=10, tier="ENTERPRISE")
    with Api(emu) as api:
        api.login()
        ok = api.create(duration=301)  # 5 min 1 s: six started minutes
        short = api.create(duration=301)
    assert ok.status_code == 200
    assert short.status_code == 402 and short.json() == {
        "error": "Insufficient processing minutes (6 needed, 4 left)",
        "code": 402,
    }
    billing = _billing(emu)
    assert billing["minutes_left"] == 4
    assert [(c["kind"], c["minutes"]) for c in billing["charges"]] == [("ingest", 6)]


def test_processing_does_not_charge_again(emu: Emulator, api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    charges = _billing(emu)["charges"]
    assert [c["project_id"] for c in charges] == [pid]
    assert charges[0]["minutes"] == 1
    assert emu.snapshot()["projects"][0]["billed"] == 1


def test_delete_before_processing_refunds_once(emu: Emulator, api: Api) -> None:
    pid = api.create(duration=120).json()["data"]["project_id"]
    assert _billing(emu)["minutes_left"] == 598
    r = api.delete(f"/v1/projects/{pid}")
    assert r.status_code == 200
    assert api.delete(f"/v1/projects/{pid}").status_code == 404
    billing = _billing(emu)
    assert billing["minutes_left"] == 600
    assert billing["charges"][0]["refunded"] is True


def test_cancel_before_processing_refunds_and_after_processing_does_not(
    emu: Emulator, api: Api, sample_video: Path
) -> None:
    pid = api.create(duration=60).json()["data"]["project_id"]
    r = api.post(f"/v1/projects/{pid}/cancel")
    assert r.status_code == 200 and r.json()["data"]["status"] == "FAILED"
    assert api.request("DELETE", f"/v1/projects/{pid}/cancel").status_code == 409
    assert _billing(emu)["minutes_left"] == 600
    emu.update(timings={"step": 60})
    created = api.create_for(sample_video)
    api.upload(created["upload_url"], sample_video.read_bytes())
    api.post(f"/v1/projects/{created['project_id']}/process")
    r = api.request("DELETE", f"/v1/projects/{created['project_id']}/cancel")
    assert r.status_code == 200
    assert _billing(emu)["minutes_left"] == 599


def test_missing_duration_is_billed_from_the_media_at_process(
    emu: Emulator, api: Api, sample_video: Path
) -> None:
    created = api.create(filename="s.mp4", filesize=sample_video.stat().st_size).json()["data"]
    assert _billing(emu)["charges"] == []
    api.upload(created["upload_url"], sample_video.read_bytes())
    assert api.post(f"/v1/projects/{created['project_id']}/process").status_code == 200
    assert [c["minutes"] for c in _billing(emu)["charges"]] == [1]


# ---- process and lifecycle -----------------------------------------------------------------------


def test_process_before_upload_and_twice_is_409(api: Api, sample_video: Path) -> None:
    created = api.create_for(sample_video)
    pid = created["project_id"]
    before = api.post(f"/v1/projects/{pid}/process")
    assert before.status_code == 409 and before.json()["code"] == 409
    api.upload(created["upload_url"], sample_video.read_bytes())
    assert api.post(f"/v1/projects/{pid}/process").status_code == 200
    again = api.post(f"/v1/projects/{pid}/process")
    assert again.status_code == 409


def test_process_refuses_an_upload_of_another_size(api: Api, sample_video: Path) -> None:
    created = api.create(filename="x.mp4", filesize=999, duration=5).json()["data"]
    api.upload(created["upload_url"], sample_video.read_bytes())
    r = api.post(f"/v1/projects/{created['project_id']}/process")
    assert r.status_code == 409 and "999" in r.json()["error"]


def test_instant_timings_reach_clips_ready_inside_process(api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    status = api.get(f"/v1/projects/{pid}/status").json()["data"]
    assert status["status"] == "CLIPS_READY" and status["progress"] == 100
    assert status["clip_count"] == 3
    project = api.get(f"/v1/projects/{pid}").json()["data"]
    assert project["visual_pipeline_ready"] is True and project["clips_ready_at"].endswith("Z")
    assert len(project["clips"]) == project["clip_count"] == 3


def test_lifecycle_steps_on_the_emulator_clock(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, timings=Timings(step=10))
    seen: list[tuple[str, int]] = []
    with Api(emu) as api:
        api.login()
        created = api.create_for(sample_video)
        api.upload(created["upload_url"], sample_video.read_bytes())
        pid = created["project_id"]
        r = api.post(f"/v1/projects/{pid}/process")
        assert r.json()["data"]["status"] == "UPLOADING"

        def status() -> dict[str, Any]:
            data: dict[str, Any] = api.get(f"/v1/projects/{pid}/status").json()["data"]
            return data

        for _ in range(5):
            s = wait_for(status, lambda s: (s["status"], s["progress"]) not in seen[-1:])
            seen.append((s["status"], s["progress"]))
            if s["status"] == "CLIPS_READY":
                break
            clock.advance(10)
    assert [s for s, _ in seen] == [
        "UPLOADING",
        "TRANSCRIBING",
        "PROCESSING",
        "FACE_TRACKING",
        "CLIPS_READY",
    ]
    progress = [p for _, p in seen]
    assert progress == sorted(progress) and progress[-1] == 100


def test_clips_lag_and_complete_after(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, timings=Timings(clips_lag=5, complete_after=20))
    with Api(emu) as api:
        api.login()
        pid = api.ready_project(sample_video)
        project = api.get(f"/v1/projects/{pid}").json()["data"]
        assert project["status"] == "CLIPS_READY"
        assert project["visual_pipeline_ready"] is False and project["clips"] == []
        clock.advance(5)
        wait_for(lambda: api.get(f"/v1/projects/{pid}").json()["data"], lambda p: bool(p["clips"]))
        clock.advance(15)
        done = wait_for(
            lambda: api.get(f"/v1/projects/{pid}/status").json()["data"],
            lambda s: s["status"] == "COMPLETED",
        )
    assert done["clip_count"] == 3


@pytest.mark.parametrize(
    "failure", ["FAILED", "FAILED_NO_SPEECH", "FAILED_CORRUPT_VIDEO", "FAILED_BILLING"]
)
def test_fail_project_fault(make_emu: MakeEmu, sample_video: Path, failure: str) -> None:
    emu = make_emu(faults=Faults(fail_project=failure))
    with Api(emu) as api:
        api.login()
        pid = api.ready_project(sample_video)
        status = api.get(f"/v1/projects/{pid}/status").json()["data"]
        project = api.get(f"/v1/projects/{pid}").json()["data"]
    assert status["status"] == failure and status["error_message"]
    assert project["clips"] == []
    assert _billing(emu)["minutes_left"] == 600  # failed ingestion is not charged


def test_undecodable_upload_is_failed_corrupt_video(make_emu: MakeEmu) -> None:
    junk = b"\x00\x00\x00\x18ftypmp42" + bytes(5000)
    for strict, expected in ((True, "FAILED_CORRUPT_VIDEO"), (False, "CLIPS_READY")):
        emu = make_emu(strict_media=strict)
        with Api(emu) as api:
            api.login()
            created = api.create(filesize=len(junk), duration=20).json()["data"]
            api.upload(created["upload_url"], junk)
            api.post(f"/v1/projects/{created['project_id']}/process")
            status = api.get(f"/v1/projects/{created['project_id']}/status").json()["data"]
        assert status["status"] == expected


def test_not_stored_uploads_are_not_judged(make_emu: MakeEmu) -> None:
    emu = make_emu(store_uploads=False)
    with Api(emu) as api:
        api.login()
        created = api.create(filesize=100, duration=20).json()["data"]
        api.upload(created["upload_url"], b"x" * 100)
        r = api.post(f"/v1/projects/{created['project_id']}/process")
    assert r.json()["data"]["status"] == "CLIPS_READY"


# ---- reading -------------------------------------------------------------------------------------


def test_list_paginates_searches_and_filters(make_emu: MakeEmu) -> None:
    emu = make_emu(tier="ENTERPRISE", auth_rate_limits=False)
    with Api(emu) as api:
        api.login()
        for title in ("Alpha one", "Beta two", "Gamma three"):
            api.create(title=title, filename=f"{title.split()[0].lower()}.mp4")
        page = api.get("/v1/projects", params={"limit": 2, "offset": 0}).json()
        page2 = api.get("/v1/projects", params={"limit": 2, "offset": 2}).json()
        by_title = api.get("/v1/projects", params={"search": "BETA"}).json()
        by_file = api.get("/v1/projects", params={"search": "gamma.mp4"}).json()
        by_status = api.get("/v1/projects", params={"status": "CLIPS_READY"}).json()
        pending = api.get("/v1/projects", params={"status": "PENDING_UPLOAD"}).json()
        bad = api.get("/v1/projects", params={"limit": "many"})
    assert page["meta"] == {"total": 3, "limit": 2, "offset": 0, "has_more": True}
    assert [p["title"] for p in page["data"]] == ["Gamma three", "Beta two"]  # newest first
    assert page2["meta"]["has_more"] is False and len(page2["data"]) == 1
    assert [p["title"] for p in by_title["data"]] == ["Beta two"]
    assert [p["title"] for p in by_file["data"]] == ["Gamma three"]
    assert by_status["meta"]["total"] == 0 and pending["meta"]["total"] == 3
    assert bad.status_code == 400


def test_delete_purges_objects(emu: Emulator, api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    project = api.get(f"/v1/projects/{pid}").json()["data"]
    source_url = project["clips"][0]["source_video_url"]
    assert httpx.get(source_url).status_code == 200
    assert api.delete(f"/v1/projects/{pid}").status_code == 200
    assert api.get(f"/v1/projects/{pid}").status_code == 404
    assert api.get(f"/v1/clips/{project['clips'][0]['id']}").status_code == 404
    assert httpx.get(source_url).status_code == 404
    assert emu.snapshot()["projects"][0]["deleted"] is True


def test_caption_templates(api: Api) -> None:
    data = api.get("/v1/projects/caption-templates").json()["data"]
    assert {t["id"] for t in data} >= {"HORMOZI", "KARAOKE", "WHISPER"}


def test_create_from_url(api: Api) -> None:
    r = api.post("/v1/projects/create-from-url", json={"url": "https://example.com/v/talk.mp4"})
    assert r.status_code == 200
    pid = r.json()["data"]["project_id"]
    status = api.get(f"/v1/projects/{pid}/status").json()["data"]
    assert status["status"] == "CLIPS_READY" and status["title"] == "talk"
    assert api.post("/v1/projects/create-from-url", json={"url": "ftp://x"}).status_code == 400

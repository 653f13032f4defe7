"""Clips and the editor (§3.5, §3.6 clip parts): hydration, PUT TemplateConfig, renders,
the rendered video, and the small editor helpers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from watchd.emulator.call import Call, Handler
from watchd.emulator.engine import minutes_for
from watchd.emulator.envelope import ApiError, ok, req_str
from watchd.emulator.router import Access, Router
from watchd.emulator.state import Clip, InsufficientMinutes, RenderJob
from watchd.emulator.templates import TemplateError, system_templates, validate_template_config
from watchd.emulator.views import clip_detail, render_progress

__all__ = ["register"]


async def _get_clip(call: Call) -> web.StreamResponse:
    clip, p = call.clip()
    variant = call.core.settings.variants.transcript_times
    return ok(clip_detail(clip, p, call.urls, transcript_times=variant))


def _custom_styles(call: Call) -> set[str]:
    names = {t["name"] for t in call.ws.templates.values()}
    names |= {t["name"] for t in system_templates()}
    return names


async def _put_clip(call: Call) -> web.StreamResponse:
    clip, p = call.clip()
    body = await call.json()
    try:
        config = validate_template_config(body, custom_styles=_custom_styles(call))
    except TemplateError as e:
        raise ApiError(422, str(e)) from None
    clip.template_config = config
    clip.put_count += 1
    core = call.core
    core.inspection.count("puts")
    core.inspection.record_clip(
        "put", clip.id, call.now(), template_config=config, put=clip.put_count
    )
    variant = core.settings.variants.transcript_times
    return ok(clip_detail(clip, p, call.urls, transcript_times=variant))


def _new_job(call: Call, clip: Clip) -> RenderJob:
    """Charge the clip's minutes (402 when short) and make the next render attempt."""
    minutes = max(1, minutes_for(clip.duration))
    try:
        charge = call.core.state.charge(
            call.ws, minutes, "render", now=call.now(), project_id=clip.project_id, clip_id=clip.id
        )
    except InsufficientMinutes as e:
        raise ApiError(
            402, f"Insufficient processing minutes ({e.needed} needed, {e.left} left)"
        ) from None
    clip.render_count += 1
    return RenderJob(
        id=call.core.state.new_id(),
        clip_id=clip.id,
        attempt=clip.render_count,
        charge=charge,
        created_at=call.now(),
    )


async def _start(call: Call, kind: str) -> web.StreamResponse:
    clip, p = call.clip()
    if kind == "render" and clip.rendering:
        raise ApiError(409, f"A render of this clip is already in progress ({clip.status})")
    if kind == "retry":
        if clip.render is None or clip.render.status != "FAILED_RENDER":
            raise ApiError(409, f"Only a FAILED_RENDER clip can be retried (status {clip.status})")
        # The failed attempt is refunded; the retry is charged like any render.
        call.core.state.refund(clip.render.charge)
    job = _new_job(call, clip)
    core = call.core
    core.inspection.count("renders")
    core.inspection.record_clip(
        kind, clip.id, call.now(), render_job_id=job.id, attempt=job.attempt
    )
    await call.engine.start_render(p, clip, job)
    return ok({"render_job_id": job.id, "status": "QUEUED", "clip_id": clip.id})


async def _render(call: Call) -> web.StreamResponse:
    return await _start(call, "render")


async def _retry_render(call: Call) -> web.StreamResponse:
    return await _start(call, "retry")


async def _progress(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    return ok(render_progress(clip))


def _redirect(call: Call, key: str | None, missing: str) -> web.StreamResponse:
    """302 to a presigned GET of ``key`` (what "streams the MP4" means here), else 404."""
    url = call.urls.get(key)
    if url is None:
        raise ApiError(404, missing)
    return web.Response(status=302, headers={"Location": url})


async def _video(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    return _redirect(call, clip.video_key, "Clip has not been rendered yet")


async def _source_video(call: Call) -> web.StreamResponse:
    _, p = call.clip()
    return _redirect(call, p.object_key, "Source video not found")


async def _rebuild_layout(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    if not clip.spatial_matrix.get("frames"):
        raise ApiError(409, "No spatial matrix for this clip yet")
    return ok({"clip_id": clip.id, "ai_suggested_layout_timeline": clip.layout_timeline})


async def _emoji_fill(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    emojis = [
        {"emoji": "🔥", "time": round(clip.duration * f, 2), "speaker": "A"} for f in (0.2, 0.6)
    ]
    return ok({"clip_id": clip.id, "emojis": emojis})


def _caption_lines(clip: Clip) -> list[dict[str, Any]]:
    lines = []
    words = clip.words
    for i in range(0, len(words), 4):
        group = words[i : i + 4]
        lines.append(
            {
                "text": " ".join(w["word"] for w in group),
                "start": round(group[0]["start"] - clip.start_time, 3),
                "end": round(group[-1]["end"] - clip.start_time, 3),
            }
        )
    return lines


async def _subtitle_dry_run(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    return ok({"clip_id": clip.id, "captions": _caption_lines(clip)})


async def _generate_broll(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    suggestions = [
        {
            "id": f"{clip.id}-broll-{i}",
            "sourceId": f"pexels:{1000000 + i}",
            "startTime": round(clip.duration * (0.25 + 0.4 * i), 2),
            "duration": 2.0,
            "query": "city skyline" if i == 0 else "people talking",
        }
        for i in range(2)
    ]
    return ok(suggestions)


async def _get_broll(call: Call) -> web.StreamResponse:
    call.clip()
    return ok([])


async def _custom_media_presign(call: Call) -> web.StreamResponse:
    clip, p = call.clip()
    body = await call.json()
    filename = req_str(body, "filename", max_len=255)
    content_type = req_str(body, "content_type", max_len=255).lower()
    return ok(call.presign_upload(f"{p.prefix}clips/{clip.id}/media/", filename, content_type))


async def _custom_media(call: Call) -> web.StreamResponse:
    clip, p = call.clip()
    prefix = f"{p.prefix}clips/{clip.id}/media/"
    store = call.core.store
    items = [
        {**obj.describe(), "url": call.urls.get(key)}
        for key in sorted(store.keys())
        if key.startswith(prefix) and (obj := store.get(key)) is not None
    ]
    return ok(items)


def register(router: Router[Handler]) -> None:
    w = Access.WORKSPACE
    router.add("GET", "/v1/clips/{clip_id}", _get_clip, w)
    router.add("PUT", "/v1/clips/{clip_id}", _put_clip, w)
    router.add("POST", "/v1/clips/{clip_id}/render", _render, w)
    router.add("POST", "/v1/clips/{clip_id}/retry-render", _retry_render, w)
    router.add("GET", "/v1/clips/{clip_id}/render-progress", _progress, w)
    router.add("GET", "/v1/clips/{clip_id}/video", _video, w)
    router.add("GET", "/v1/clips/{clip_id}/source-video", _source_video, w)
    router.add("POST", "/v1/clips/{clip_id}/rebuild-layout", _rebuild_layout, w)
    router.add("POST", "/v1/clips/{clip_id}/emoji-fill", _emoji_fill, w)
    router.add("POST", "/v1/clips/{clip_id}/subtitle-dry-run", _subtitle_dry_run, w)
    router.add("POST", "/v1/clips/{clip_id}/generate-broll", _generate_broll, w)
    router.add("GET", "/v1/clips/{clip_id}/broll", _get_broll, w)
    router.add("POST", "/v1/clips/{clip_id}/custom-media/presign", _custom_media_presign, w)
    router.add("GET", "/v1/clips/{clip_id}/custom-media", _custom_media, w)

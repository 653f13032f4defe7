"""Ingestion and projects (§3.3, §3.4): create, process, status, list, get, delete, cancel."""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from watchd.emulator.call import Call, Handler
from watchd.emulator.engine import PROCESS_STEPS, minutes_for
from watchd.emulator.envelope import (
    ApiError,
    drop,
    ok,
    opt_bool,
    opt_number,
    opt_str,
    req_str,
)
from watchd.emulator.ratelimit import Limit
from watchd.emulator.router import Access, Router
from watchd.emulator.state import (
    ACTIVE_AT_CREATE,
    ACTIVE_AT_PROCESS,
    InsufficientMinutes,
    Project,
    UploadSlot,
    Workspace,
)
from watchd.emulator.templates import caption_templates
from watchd.emulator.views import project_full, project_out, project_status
from watchd.vocabulary import VIDEO_TYPES

__all__ = ["CONTENT_TYPES", "MAX_FILESIZE", "VIDEO_TYPES", "register"]

MAX_FILESIZE = 5 * 1024**3
_PENDING_GUESS = 5.0  # Retry-After when the slot is held by a project waiting for its upload
CREATE_LIMIT = Limit(5, 60)
# Accepted content types (§3.3): the short names of the reference and their MIME types.
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "video/mp4": "video/mp4",
    "mov": "video/quicktime",
    "quicktime": "video/quicktime",
    "video/quicktime": "video/quicktime",
    "avi": "video/x-msvideo",
    "video/x-msvideo": "video/x-msvideo",
    "video/avi": "video/x-msvideo",
    "video/msvideo": "video/x-msvideo",
    "webm": "video/webm",
    "video/webm": "video/webm",
    "mkv": "video/x-matroska",
    "video/x-matroska": "video/x-matroska",
    "mpeg": "video/mpeg",
    "mpg": "video/mpeg",
    "video/mpeg": "video/mpeg",
    "flv": "video/x-flv",
    "video/x-flv": "video/x-flv",
}
_SUFFIXES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".avi": "video/x-msvideo",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mpeg": "video/mpeg",
    ".mpg": "video/mpeg",
    ".flv": "video/x-flv",
}
_KEY_SUFFIX = {mime: suffix for suffix, mime in reversed(_SUFFIXES.items())}
_LANGUAGE = re.compile(r"^[A-Za-z]{2}$")


# ---- create ------------------------------------------------------------------------------------


def _content_type(body: dict[str, Any], filename: str) -> tuple[str, str | None]:
    """(canonical MIME type, the declared string) or 415."""
    declared = body.get("content_type")
    if declared is None or declared == "":
        guessed = _SUFFIXES.get(PurePosixPath(filename).suffix.lower())
        if guessed is None:
            raise ApiError(
                415,
                "Unsupported content type: send content_type (mp4, mov, avi, webm, mkv, mpeg, flv)",
            )
        return guessed, None
    if not isinstance(declared, str):
        raise ApiError(400, "content_type: must be a string")
    canonical = CONTENT_TYPES.get(declared.split(";")[0].strip().lower())
    if canonical is None:
        raise ApiError(
            415,
            f"Unsupported content_type {declared!r}: accepted are mp4, mov, avi, webm, mkv, "
            "mpeg and flv (or their video/* MIME types)",
        )
    return canonical, declared


def _options(body: dict[str, Any]) -> dict[str, Any]:
    """The optional processing options shared by create and create-from-url (400 if bad)."""
    video_type = body.get("video_type") or "auto"
    if video_type not in VIDEO_TYPES:
        raise ApiError(
            400, f"video_type: must be one of {', '.join(VIDEO_TYPES)}, not {video_type!r}"
        )
    language_mode = body.get("language_mode") or "single"
    if language_mode not in ("single", "multi"):
        raise ApiError(400, f"language_mode: must be single or multi, not {language_mode!r}")
    language = opt_str(body, "language", max_len=8) or None
    if language is not None and not _LANGUAGE.match(language):
        raise ApiError(400, f"language: must be an ISO 639-1 code such as 'en', not {language!r}")
    trim_start = opt_number(body, "trim_start", minimum=0)
    trim_end = opt_number(body, "trim_end", minimum=0)
    if trim_start is not None and trim_end is not None and trim_end <= trim_start:
        raise ApiError(400, "trim_end: must be greater than trim_start")
    return {
        "video_type": video_type,
        "language_mode": language_mode,
        "language": language.lower() if language else None,
        "enable_multimodal": opt_bool(body, "enable_multimodal"),
        "custom_instructions": opt_str(body, "custom_instructions", max_len=2000) or "",
        "trim_start": trim_start,
        "trim_end": trim_end,
    }


def _check_concurrency(
    call: Call, ws: Workspace, statuses: frozenset[str], exclude: str | None
) -> None:
    limit = ws.concurrency
    if limit is None:
        return
    active = call.core.state.active_projects(ws.id, statuses, exclude=exclude)
    if len(active) >= limit:
        call.core.inspection.count("tier_limited")
        raise ApiError(
            call.core.settings.variants.tier_limit_status,
            f"Concurrent processing limit reached: the {ws.tier} tier allows {limit} "
            f"concurrent video{'s' if limit != 1 else ''} per workspace",
            headers={"Retry-After": str(_slot_wait(call, active))},
        )


def _slot_wait(call: Call, active: list[Project]) -> int:
    """Seconds until the first of ``active`` should be done (a hint: Retry-After)."""
    step, now = call.core.settings.timings.step, call.now()
    waits = [
        # Waiting for the client's upload and /process: nobody knows; a short guess.
        _PENDING_GUESS
        if p.process_requested_at is None
        else p.process_requested_at + len(PROCESS_STEPS) * step - now
        for p in active
    ]
    return max(1, math.ceil(min(waits)))


def _throttle_create(call: Call) -> None:
    per_minute = call.core.settings.creates_per_minute
    if not per_minute:
        return
    call.throttle(
        [("create", call.ws.id, Limit(per_minute, CREATE_LIMIT.window))],
        f"Rate limit exceeded: at most {per_minute} project creations per minute per workspace",
    )


def _object_key(ws: Workspace, project_id: str, content_type: str) -> str:
    return f"workspaces/{ws.id}/projects/{project_id}/source{_KEY_SUFFIX.get(content_type, '.bin')}"


async def _create_project(call: Call) -> web.StreamResponse:
    ws, core = call.ws, call.core
    body = await call.json()
    _throttle_create(call)
    filename = req_str(body, "filename", max_len=255)
    if "filesize" not in body or body["filesize"] is None:
        raise ApiError(400, "filesize: field required")
    filesize = opt_number(body, "filesize", integer=True)
    assert filesize is not None
    if filesize <= 0:
        raise ApiError(400, "filesize: must be greater than 0")
    if filesize > MAX_FILESIZE:
        raise ApiError(413, "File too large: the maximum upload size is 5 GB")
    content_type, declared = _content_type(body, filename)
    duration = opt_number(body, "duration", minimum=0)
    options = _options(body)
    if duration is not None:
        for name in ("trim_start", "trim_end"):
            if options[name] is not None and options[name] > duration:
                raise ApiError(
                    400, f"{name}: must not be past the end of the video ({duration:g} s)"
                )
    title = opt_str(body, "title", max_len=255) or PurePosixPath(filename.replace("\\", "/")).stem
    if core.settings.variants.tier_limit_at == "create":
        _check_concurrency(call, ws, ACTIVE_AT_CREATE, None)
    project_id = core.state.new_id()
    minutes = minutes_for(duration)
    try:
        charge = (
            core.state.charge(ws, minutes, "ingest", now=call.now(), project_id=project_id)
            if duration is not None
            else None
        )
    except InsufficientMinutes as e:
        raise ApiError(
            402, f"Insufficient processing minutes ({e.needed} needed, {e.left} left)"
        ) from None
    p = Project(
        id=project_id,
        workspace_id=ws.id,
        user_id=call.me.id,
        title=title,
        filename=filename,
        filesize=int(filesize),
        content_type=content_type,
        object_key=_object_key(ws, project_id, content_type),
        created_at=call.now(),
        duration=duration,
        charge=charge,
        **options,
    )
    core.state.projects[p.id] = p
    accepted = {content_type} | (
        {declared.strip().lower()} if declared and "/" in declared else set()
    )
    core.state.upload_slots[p.object_key] = UploadSlot(p.object_key, frozenset(accepted), p.id)
    core.inspection.count("creates")
    upload_url = core.presign_put(p.object_key, call.urls.storage_base)
    _maybe_fail_after_commit(call)
    return ok({"project_id": p.id, "upload_url": upload_url, "object_key": p.object_key})


def _maybe_fail_after_commit(call: Call) -> None:
    faults = call.core.settings.faults
    if not call.core.draw(faults.create_commit_then_fail):
        return
    call.core.inspection.count("commit_then_fail")
    mode = faults.commit_fail_mode
    if mode == "random":
        mode = call.core.fault_rng.choice(("500", "drop"))
    if mode == "drop":
        raise drop(call.request)
    raise ApiError(500, "Internal server error")


async def _create_from_url(call: Call) -> web.StreamResponse:
    ws, core = call.ws, call.core
    body = await call.json()
    _throttle_create(call)
    url = req_str(body, "url", max_len=2048)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError(400, "url: must be an http(s) URL")
    options = _options(body)
    # A URL ingest starts processing at once: whichever place the limit is enforced, here.
    at_create = core.settings.variants.tier_limit_at == "create"
    _check_concurrency(call, ws, ACTIVE_AT_CREATE if at_create else ACTIVE_AT_PROCESS, None)
    name = PurePosixPath(parts.path).name or "video.mp4"
    project_id = core.state.new_id()
    p = Project(
        id=project_id,
        workspace_id=ws.id,
        user_id=call.me.id,
        title=opt_str(body, "title", max_len=255) or PurePosixPath(name).stem,
        filename=name,
        filesize=0,
        content_type="video/mp4",
        object_key=_object_key(ws, project_id, "video/mp4"),
        created_at=call.now(),
        source_url=url,
        **options,
    )
    core.state.projects[p.id] = p
    core.inspection.count("creates")
    await call.engine.start_url_ingest(p)
    return ok({"project_id": p.id, "status": p.status})


# ---- lifecycle ---------------------------------------------------------------------------------


async def _process(call: Call) -> web.StreamResponse:
    p, core = call.project(), call.core
    if p.started or p.status != "PENDING_UPLOAD":
        raise ApiError(409, f"Project is already past PENDING_UPLOAD (status {p.status})")
    if p.upload is None:
        raise ApiError(409, "Upload not complete: PUT the video to the upload_url first")
    if p.upload.size != p.filesize:
        raise ApiError(
            409,
            f"Uploaded object is {p.upload.size} bytes but the project declared filesize "
            f"{p.filesize}",
        )
    if core.settings.variants.tier_limit_at == "process":
        _check_concurrency(call, call.ws, ACTIVE_AT_PROCESS, p.id)
    # Claim the project before the first await: a second /process must see it taken.
    p.process_requested_at = call.now()
    probe = await call.engine.probe(p)
    if p.charge is None:
        seconds = p.media_duration or 60.0
        try:
            p.charge = core.state.charge(
                call.ws, minutes_for(seconds), "ingest", now=call.now(), project_id=p.id
            )
        except InsufficientMinutes as e:
            p.process_requested_at = None
            raise ApiError(
                402, f"Insufficient processing minutes ({e.needed} needed, {e.left} left)"
            ) from None
    core.inspection.count("processes")
    await call.engine.start_processing(p, probe)
    return ok({**project_status(p), "message": "Processing started"})


async def _status(call: Call) -> web.StreamResponse:
    return ok(project_status(call.project()))


async def _cancel(call: Call) -> web.StreamResponse:
    p = call.project()
    if p.finished:
        raise ApiError(409, f"Project is not in progress (status {p.status})")
    call.engine.cancel(p)
    call.core.inspection.count("cancels")
    return ok({**project_status(p), "message": "Cancelled"})


async def _delete(call: Call) -> web.StreamResponse:
    p = call.project()
    call.engine.cancel(p, deleting=True)
    call.core.inspection.count("deletes")
    return ok({"ok": True, "id": p.id})


# ---- reading -----------------------------------------------------------------------------------


def _int_param(call: Call, name: str, default: int, lo: int, hi: int) -> int:
    raw = call.request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name}: must be a whole number") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name}: must be between {lo} and {hi}")
    return value


async def _list_projects(call: Call) -> web.StreamResponse:
    limit = _int_param(call, "limit", 20, 1, 100)
    offset = _int_param(call, "offset", 0, 0, 10**9)
    search = call.request.query.get("search", "").strip().lower()
    wanted = {
        s.strip().upper() for s in call.request.query.get("status", "").split(",") if s.strip()
    }
    rows = [
        p
        for p in call.core.state.projects.values()
        if p.workspace_id == call.ws.id
        and not p.deleted
        and (not search or search in p.title.lower() or search in p.filename.lower())
        and (not wanted or p.status in wanted)
    ]
    rows.sort(key=lambda p: p.created_at, reverse=True)
    page = rows[offset : offset + limit]
    urls = call.urls
    return ok(
        [project_out(p, urls) for p in page],
        meta={
            "total": len(rows),
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(page) < len(rows),
        },
    )


async def _get_project(call: Call) -> web.StreamResponse:
    return ok(project_full(call.project(), call.urls))


async def _list_caption_templates(call: Call) -> web.StreamResponse:
    return ok(caption_templates())


def register(router: Router[Handler]) -> None:
    w = Access.WORKSPACE
    router.add("POST", "/v1/projects/create", _create_project, w)
    router.add("POST", "/v1/projects/create-from-url", _create_from_url, w)
    router.add("GET", "/v1/projects/caption-templates", _list_caption_templates, w)
    router.add("GET", "/v1/projects", _list_projects, w)
    router.add("POST", "/v1/projects/{project_id}/process", _process, w)
    router.add("GET", "/v1/projects/{project_id}/status", _status, w)
    router.add("POST", "/v1/projects/{project_id}/cancel", _cancel, w)
    router.add("DELETE", "/v1/projects/{project_id}/cancel", _cancel, w)
    router.add("GET", "/v1/projects/{project_id}", _get_project, w)
    router.add("DELETE", "/v1/projects/{project_id}", _delete, w)

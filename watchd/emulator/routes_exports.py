"""NLE exports (§3.8): start (idempotent per clip and format), poll, list."""

from __future__ import annotations

from aiohttp import web

from watchd.emulator.bundles import FORMATS
from watchd.emulator.call import Call, Handler
from watchd.emulator.envelope import ApiError, ok, opt_bool
from watchd.emulator.ratelimit import Limit
from watchd.emulator.router import Access, Router
from watchd.emulator.state import Export
from watchd.emulator.views import export_out

__all__ = ["register"]

EXPORT_LIMIT = Limit(5, 60)


async def _create_export(call: Call) -> web.StreamResponse:
    clip, p = call.clip()
    body = await call.json(required=False)
    fmt = body.get("target_format")
    if fmt is None or fmt == "":
        raise ApiError(400, "target_format: field required")
    if fmt not in FORMATS:
        raise ApiError(400, f"target_format: must be one of {', '.join(FORMATS)}, not {fmt!r}")
    include_proxy = opt_bool(body, "include_proxy")
    if call.ws.tier == "FREE":
        raise ApiError(402, "NLE export requires a Pro plan: upgrade the workspace to export")
    per_minute = call.core.settings.exports_per_minute
    if per_minute:
        call.throttle(
            [("export", call.ws.id, Limit(per_minute, EXPORT_LIMIT.window))],
            f"Rate limit exceeded: at most {per_minute} NLE exports per minute per workspace",
        )
    core = call.core
    existing = next((e for e in core.state.exports_of(clip.id) if e.target_format == fmt), None)
    if existing is not None:
        if existing.status == "FAILED":
            # Same id back, and the failed export is tried again.
            existing.status, existing.progress, existing.error_message = "PENDING", 0, None
            await call.engine.start_export(p, clip, existing)
            return ok({"export_id": existing.id, "status": "PENDING"}, status=202)
        return ok({"export_id": existing.id, "status": existing.status}, status=202)
    export = Export(
        id=core.state.new_id(),
        clip_id=clip.id,
        project_id=p.id,
        workspace_id=call.ws.id,
        target_format=fmt,
        include_proxy=include_proxy,
        created_at=call.now(),
    )
    core.state.exports[export.id] = export
    core.inspection.count("exports")
    await call.engine.start_export(p, clip, export)
    return ok({"export_id": export.id, "status": "PENDING"}, status=202)


async def _get_export(call: Call) -> web.StreamResponse:
    return ok(export_out(call.export(), call.urls))


async def _list_exports(call: Call) -> web.StreamResponse:
    clip, _ = call.clip()
    urls = call.urls
    return ok([export_out(e, urls) for e in call.core.state.exports_of(clip.id)])


def register(router: Router[Handler]) -> None:
    w = Access.WORKSPACE
    router.add("POST", "/v1/clips/{clip_id}/exports", _create_export, w)
    router.add("GET", "/v1/clips/{clip_id}/exports", _list_exports, w)
    router.add("GET", "/v1/exports/{export_id}", _get_export, w)

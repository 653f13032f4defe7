"""The rest of the reference, answered minimally but correctly shaped: templates (§3.9),
storage (§3.7), media library (§3.10), social accounts (§3.11), stock media (§3.6) and
workspace members (§3.2)."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp import web

from watchd.emulator.auth import email_problem
from watchd.emulator.call import Call, Handler
from watchd.emulator.envelope import ApiError, ok, opt_bool, opt_str, req_str
from watchd.emulator.router import Access, Router
from watchd.emulator.templates import (
    RATIOS,
    TemplateError,
    system_templates,
    validate_template_config,
)
from watchd.emulator.views import iso

__all__ = ["register"]

PLATFORMS = ("youtube", "facebook", "instagram")
STORAGE_CAPS = {
    "FREE": 1 * 1024**3,
    "STANDARD": 10 * 1024**3,
    "PROFESSIONAL": 50 * 1024**3,
    "BUSINESS": 100 * 1024**3,
    "ENTERPRISE": 500 * 1024**3,
}

# ---- templates ---------------------------------------------------------------------------------


def _ratio(value: Any, name: str = "ratio") -> str:
    if value not in RATIOS:
        raise ApiError(400, f"{name}: must be one of {', '.join(RATIOS)}, not {value!r}")
    return str(value)


async def _list_templates(call: Call) -> web.StreamResponse:
    ratio = call.request.query.get("ratio") or None
    if ratio is not None:
        _ratio(ratio)
    items = [*system_templates(), *call.ws.templates.values()]
    return ok([t for t in items if ratio is None or t["ratio"] == ratio])


async def _save_template(call: Call) -> web.StreamResponse:
    body = await call.json()
    name = req_str(body, "name", max_len=100)
    ratio = _ratio(body.get("ratio", "9_16"))
    try:
        config = validate_template_config(body.get("template_config", {}))
    except TemplateError as e:
        raise ApiError(422, f"template_config.{e}") from None
    template: dict[str, Any] = {
        "id": call.core.state.new_id(),
        "name": name,
        "ratio": ratio,
        "is_system": False,
        "caption_style": config.get("caption_style"),
        "template_config": config,
        "preview_url": None,
        "created_at": iso(call.now()),
    }
    call.ws.templates[template["id"]] = template
    return ok(template, status=201)


def _template_id(call: Call) -> str:
    tid = call.params["template_id"]
    if any(t["id"] == tid for t in system_templates()):
        raise ApiError(403, "System templates are immutable")
    if tid not in call.ws.templates:
        raise ApiError(404, "Template not found")
    return tid


async def _delete_template(call: Call) -> web.StreamResponse:
    del call.ws.templates[_template_id(call)]
    return ok({"ok": True})


async def _regenerate_previews(call: Call) -> web.StreamResponse:
    tid = call.params["template_id"]
    known = tid in call.ws.templates or any(t["id"] == tid for t in system_templates())
    if not known:
        raise ApiError(404, "Template not found")
    return ok({"ok": True, "id": tid})


async def _get_defaults(call: Call) -> web.StreamResponse:
    defaults = {r: f"system-hormozi-{r}" for r in RATIOS}
    defaults.update(call.ws.defaults)
    return ok(defaults)


async def _put_default(call: Call) -> web.StreamResponse:
    ratio = _ratio(call.params["ratio"])
    if call.ws.tier == "FREE":
        raise ApiError(402, "Custom default templates require a paid plan")
    body = await call.json()
    tid = req_str(body, "template_id", max_len=100)
    if tid not in call.ws.templates and not any(t["id"] == tid for t in system_templates()):
        raise ApiError(404, "Template not found")
    call.ws.defaults[ratio] = tid
    return ok({"ratio": ratio, "template_id": tid})


async def _delete_default(call: Call) -> web.StreamResponse:
    call.ws.defaults.pop(_ratio(call.params["ratio"]), None)
    return ok({"ok": True})


# ---- storage and media ---------------------------------------------------------------------------


async def _upload_url(call: Call) -> web.StreamResponse:
    body = await call.json()
    filename = req_str(body, "filename", max_len=255)
    content_type = req_str(body, "content_type", max_len=255).lower()
    prefix = f"workspaces/{call.ws.id}/uploads/"
    return ok(call.presign_upload(prefix, filename, content_type))


async def _playback_url(call: Call) -> web.StreamResponse:
    body = await call.json()
    key = req_str(body, "object_key", max_len=1024)
    if not key.startswith(f"workspaces/{call.ws.id}/"):
        raise ApiError(403, "The object does not belong to this workspace")
    url = call.urls.get(key)
    if url is None:
        raise ApiError(404, "Object not found")
    return ok({"url": url, "playback_url": url, "expires_in": call.core.settings.download_url_ttl})


def _media_type(content_type: str) -> str:
    kind = content_type.split("/", 1)[0]
    return kind if kind in ("image", "video", "audio", "font") else "image"


async def _list_media(call: Call) -> web.StreamResponse:
    q = call.request.query
    kind, search = q.get("media_type") or None, (q.get("search") or "").lower()
    try:
        limit, offset = int(q.get("limit") or 20), int(q.get("offset") or 0)
    except ValueError:
        raise ApiError(400, "limit and offset must be whole numbers") from None
    rows = [
        m
        for m in call.ws.media.values()
        if (kind is None or m["media_type"] == kind) and search in m["filename"].lower()
    ]
    page = rows[offset : offset + limit]
    meta = {
        "total": len(rows),
        "limit": limit,
        "offset": offset,
        "has_more": offset + len(page) < len(rows),
    }
    urls = call.urls
    return ok([{**m, "url": urls.get(m["object_key"])} for m in page], meta=meta)


async def _presign_media(call: Call) -> web.StreamResponse:
    body = await call.json()
    filename = req_str(body, "filename", max_len=255)
    content_type = req_str(body, "content_type", max_len=255).lower()
    out = call.presign_upload(f"workspaces/{call.ws.id}/media/", filename, content_type)
    return ok({**out, "method": "PUT", "fields": {}})


async def _confirm_media(call: Call) -> web.StreamResponse:
    body = await call.json()
    key = req_str(body, "object_key", max_len=1024)
    if not key.startswith(f"workspaces/{call.ws.id}/"):
        raise ApiError(403, "The object does not belong to this workspace")
    obj = call.core.store.get(key)
    if obj is None:
        raise ApiError(404, "Upload not found: PUT the file first")
    record: dict[str, Any] = {
        "id": call.core.state.new_id(),
        "filename": opt_str(body, "filename", max_len=255) or key.rsplit("/", 1)[-1],
        "media_type": body.get("media_type") or _media_type(obj.content_type),
        "content_type": obj.content_type,
        "size": obj.size,
        "object_key": key,
        "created_at": iso(call.now()),
    }
    call.ws.media[record["id"]] = record
    return ok(record, status=201)


async def _media_stats(call: Call) -> web.StreamResponse:
    used = sum(int(m["size"]) for m in call.ws.media.values())
    return ok(
        {
            "used_bytes": used,
            "cap_bytes": STORAGE_CAPS[call.ws.tier],
            "tier": call.ws.tier,
            "file_count": len(call.ws.media),
        }
    )


async def _delete_media(call: Call) -> web.StreamResponse:
    record = call.ws.media.pop(call.params["media_id"], None)
    if record is None:
        raise ApiError(404, "Media not found")
    call.core.store.delete_prefix(record["object_key"])
    return ok({"ok": True})


# ---- social --------------------------------------------------------------------------------------


def _platform(call: Call) -> str:
    platform = call.params["platform"]
    if platform not in PLATFORMS:
        raise ApiError(400, f"platform: must be one of {', '.join(PLATFORMS)}")
    return platform


def _accounts(call: Call) -> dict[str, dict[str, Any]]:
    return call.ws.social


async def _social_accounts(call: Call) -> web.StreamResponse:
    return ok(list(_accounts(call).values()))


async def _social_connect(call: Call) -> web.StreamResponse:
    platform = _platform(call)
    state = secrets.token_urlsafe(16)
    call.ws.oauth_states[state] = platform
    url = f"https://accounts.example.invalid/oauth/{platform}?state={state}"
    return ok({"url": url, "state": state})


async def _social_callback(call: Call) -> web.StreamResponse:
    platform = _platform(call)
    body = await call.json()
    req_str(body, "code")
    state = req_str(body, "state")
    if call.ws.oauth_states.pop(state, None) != platform:
        raise ApiError(400, "Invalid OAuth state")
    account: dict[str, Any] = {
        "id": call.core.state.new_id(),
        "platform": platform,
        "name": f"{platform.title()} channel",
        "enabled": True,
        "connected_at": iso(call.now()),
    }
    _accounts(call)[account["id"]] = account
    return ok(account, status=201)


def _account(call: Call, name: str) -> dict[str, Any]:
    account = _accounts(call).get(call.params[name])
    if account is None:
        raise ApiError(404, "Account not found")
    return account


async def _social_disconnect(call: Call) -> web.StreamResponse:
    account = _account(call, "account_id")
    del _accounts(call)[account["id"]]
    return ok({"ok": True})


async def _social_toggle(call: Call) -> web.StreamResponse:
    account = _account(call, "account_id")
    body = await call.json(required=False)
    account["enabled"] = opt_bool(body, "enabled", not account["enabled"])
    return ok(account)


async def _social_refresh(call: Call) -> web.StreamResponse:
    return ok({**_account(call, "platform_id"), "refreshed_at": iso(call.now())})


# ---- stock media ---------------------------------------------------------------------------------


def _stock(call: Call, kind: str) -> list[dict[str, Any]]:
    q = call.request.query.get("q", "")
    try:
        per_page = max(1, min(80, int(call.request.query.get("per_page") or 10)))
    except ValueError:
        raise ApiError(400, "per_page: must be a whole number") from None
    return [
        {
            "id": f"pexels:{2000000 + i}",
            "type": kind,
            "query": q,
            "url": f"https://videos.example.invalid/{kind}/{i}",
            "thumbnail_url": f"https://images.example.invalid/{kind}/{i}.jpg",
            "duration": 8 if kind == "video" else None,
        }
        for i in range(min(per_page, 3))
    ]


async def _stock_videos(call: Call) -> web.StreamResponse:
    return ok({"videos": _stock(call, "video")})


async def _stock_search(call: Call) -> web.StreamResponse:
    kind = call.request.query.get("type") or "all"
    videos = _stock(call, "video") if kind in ("all", "video") else []
    images = _stock(call, "image") if kind in ("all", "image") else []
    return ok({"videos": videos, "images": images})


# ---- workspace members ---------------------------------------------------------------------------


def _owned_workspace(call: Call) -> Any:
    ws = call.core.state.workspaces.get(call.params["workspace_id"])
    if ws is None or call.me.id not in ws.members:
        raise ApiError(403, "You do not have access to this workspace")
    if ws.members[call.me.id] != "OWNER":
        raise ApiError(403, "Only the workspace OWNER can do this")
    return ws


async def _invite(call: Call) -> web.StreamResponse:
    ws = _owned_workspace(call)
    body = await call.json()
    email = body.get("email")
    problem = email_problem(email)
    if problem is not None:
        raise ApiError(400, problem)
    role = body.get("role") or "EDITOR"
    if role not in ("OWNER", "EDITOR"):
        raise ApiError(400, "role: must be OWNER or EDITOR")
    user = call.core.state.user_by_email(str(email))
    if user is not None:
        ws.members.setdefault(user.id, role)
    else:
        ws.invites.append({"email": email, "role": role, "invited_at": iso(call.now())})
    return ok({"ok": True, "email": email, "role": role, "member": user is not None})


async def _change_member(call: Call) -> web.StreamResponse:
    ws = _owned_workspace(call)
    uid = call.params["user_id"]
    if uid not in ws.members:
        raise ApiError(404, "Member not found")
    body = await call.json()
    role = body.get("role")
    if role not in ("OWNER", "EDITOR"):
        raise ApiError(400, "role: must be OWNER or EDITOR")
    if role == "EDITOR" and _last_owner(ws, uid):
        raise ApiError(409, "A workspace needs at least one OWNER")
    ws.members[uid] = role
    return ok({"user_id": uid, "role": role})


def _last_owner(ws: Any, uid: str) -> bool:
    owners = [u for u, r in ws.members.items() if r == "OWNER"]
    return owners == [uid]


async def _remove_member(call: Call) -> web.StreamResponse:
    ws = _owned_workspace(call)
    uid = call.params["user_id"]
    if uid not in ws.members:
        raise ApiError(404, "Member not found")
    if _last_owner(ws, uid):
        raise ApiError(409, "A workspace needs at least one OWNER")
    del ws.members[uid]
    return ok({"ok": True})


def register(router: Router[Handler]) -> None:
    w, u, public = Access.WORKSPACE, Access.USER, Access.PUBLIC
    router.add("GET", "/v1/templates", _list_templates, w)
    router.add("POST", "/v1/templates", _save_template, w)
    router.add("GET", "/v1/templates/defaults", _get_defaults, w)
    router.add("PUT", "/v1/templates/defaults/{ratio}", _put_default, w)
    router.add("DELETE", "/v1/templates/defaults/{ratio}", _delete_default, w)
    router.add("DELETE", "/v1/templates/{template_id}", _delete_template, w)
    router.add("POST", "/v1/templates/{template_id}/regenerate-previews", _regenerate_previews, w)
    router.add("POST", "/v1/storage/upload-url", _upload_url, w)
    router.add("POST", "/v1/storage/playback-url", _playback_url, w)
    router.add("GET", "/v1/media", _list_media, w)
    router.add("POST", "/v1/media/presign", _presign_media, w)
    router.add("POST", "/v1/media/confirm", _confirm_media, w)
    router.add("GET", "/v1/media/stats", _media_stats, w)
    router.add("DELETE", "/v1/media/{media_id}", _delete_media, w)
    router.add("POST", "/v1/workspaces/media", _presign_media, w)
    router.add("GET", "/v1/social/accounts", _social_accounts, w)
    router.add("POST", "/v1/social/connect/{platform}", _social_connect, w)
    router.add("POST", "/v1/social/callback/{platform}", _social_callback, w)
    router.add("DELETE", "/v1/social/disconnect/{account_id}", _social_disconnect, w)
    router.add("PATCH", "/v1/social/toggle/{account_id}", _social_toggle, w)
    router.add("POST", "/v1/social/refresh/{platform_id}", _social_refresh, w)
    router.add("GET", "/v1/stock-videos", _stock_videos, public)
    router.add("GET", "/v1/stock-search", _stock_search, public)
    router.add("GET", "/v1/stock-videos-pexels", _stock_videos, w)
    # Last: these templates would match other two- and three-segment paths.
    router.add("POST", "/v1/{workspace_id}/invite", _invite, u)
    router.add("PATCH", "/v1/{workspace_id}/members/{user_id}", _change_member, u)
    router.add("DELETE", "/v1/{workspace_id}/members/{user_id}", _remove_member, u)

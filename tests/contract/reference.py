"""The Carmic API reference as a MockTransport backend.

The module-level payloads are the reference's literal examples, copied as they stand (comments
dropped; the two places the reference elides with ``...`` inside an array are noted). The
handler serves them with the fewest changes a working flow needs: the ``"..."`` placeholders of
ids and URLs are filled in (each object needs its own id), and statuses move along the
lifecycle of §3.3. Everything else (field names, envelope shapes, the bare SSE ticket of the
Node sample, error envelopes and statuses of §4.2) is the reference's own.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

API = "https://api.carmic.pro/api"
STORAGE = "https://r2-presigned.example"
EMAIL = "user@example.com"
PASSWORD = "Passw0rd-example"

# §1.2 Obtaining a token: response.
LOGIN_RESPONSE: dict[str, Any] = {
    "data": {
        "access": "eyJhbGciOi...",
        "refresh": "eyJhbGciOi...",
        "user": {"id": "...", "email": "...", "first_name": "", "last_name": ""},
    }
}

# §3.1: refresh returns {access}.
REFRESH_RESPONSE: dict[str, Any] = {"data": {"access": "eyJhbGciOi..."}}

# §1.3 / §2: "the user profile and the list of workspaces"; the quickstart reads
# `.data.workspaces[0].id`. The reference prints no whole body: this is the part it relies on.
ME_RESPONSE: dict[str, Any] = {"data": {"id": "...", "email": "...", "workspaces": [{"id": "..."}]}}

# §3.3 POST /v1/projects/create request body (the comments of the reference dropped).
CREATE_REQUEST: dict[str, Any] = {
    "filename": "podcast.mp4",
    "filesize": 524288000,
    "content_type": "video/mp4",
    "title": "Episode 12",
    "duration": 1800,
    "video_type": "podcast",
    "language": "en",
    "language_mode": "single",
    "enable_multimodal": False,
    "custom_instructions": "Focus on segments where the guest is laughing",
    "trim_start": 60,
    "trim_end": 1740,
}

# §3.3: "Returns {project_id, upload_url, object_key}".
CREATE_RESPONSE: dict[str, Any] = {
    "data": {"project_id": "...", "upload_url": "...", "object_key": "..."}
}

# §3.3 GET /projects/{project_id}/status: {id, status, title, progress (0-100), current_step,
# clip_count}.
STATUS_RESPONSE: dict[str, Any] = {
    "data": {
        "id": "...",
        "status": "PENDING_UPLOAD",
        "title": "...",
        "progress": 0,
        "current_step": "",
        "clip_count": 0,
    }
}

LIFECYCLE = (
    "PENDING_UPLOAD",
    "UPLOADING",
    "TRANSCRIBING",
    "PROCESSING",
    "FACE_TRACKING",
    "CLIPS_READY",
    "COMPLETED",
)

# §3.4 GET /v1/projects/{id} (the reference's `"broll_suggestions": [...]` elided to []).
PROJECT_RESPONSE: dict[str, Any] = {
    "data": {
        "id": "...",
        "title": "...",
        "status": "CLIPS_READY",
        "duration": 1800,
        "thumbnail_url": "...",
        "visual_pipeline_ready": True,
        "clips_ready_at": "2026-05-09T12:34:56Z",
        "clip_count": 12,
        "clips": [
            {
                "id": "...",
                "title": "...",
                "start_time": 142.4,
                "end_time": 187.9,
                "virality_score": 87,
                "reasoning": "...",
                "status": "DETECTED",
                "thumbnail_url": "...",
                "video_url": "...",
                "source_video_url": "https://r2-presigned...",
                "proxy_url": "https://r2-presigned...720p.mp4",
                "broll_suggestions": [],
            }
        ],
    }
}

# §3.5.1 TemplateConfig (comments dropped; `b_roll` and `shots` as printed, the "..." keys of
# the shots elided).
TEMPLATE_CONFIG: dict[str, Any] = {
    "layout": {
        "layoutType": "face-track",
        "padding": 0,
        "backgroundBlur": 20,
        "splitTopSpeaker": "A",
        "safeZoneOverlay": False,
        "aiSpeakerSwitch": True,
    },
    "audio": {
        "autoSfxEnabled": False,
        "musicTrack": "none",
        "activeTrack": None,
        "musicVolume": 30,
        "voiceVolume": 100,
        "removePauses": False,
    },
    "elements": {
        "progressBar": {"enabled": False, "color": "#8b5cf6", "position": "bottom"},
        "watermark": {"enabled": False, "imageUrl": "", "opacity": 70},
        "hookTitle": {"enabled": False, "text": "", "durationSec": 3.0},
    },
    "style": {
        "captionFont": "Inter",
        "fontSize": 72,
        "lineHeight": 1.2,
        "strokeThickness": 3,
        "captionColor": "#ffffff",
        "highlightColor": "#FFD700",
        "dropShadow": True,
        "shadowIntensity": 50,
        "uppercase": True,
        "captionPosition": "bottom",
        "yAxisCustomPct": 75,
        "linesPerScreen": 2,
        "animationStyle": "pop",
        "animationIntensity": 50,
        "captionBg": "rgba(0,0,0,0)",
    },
    "b_roll": [
        {
            "id": "...",
            "sourceId": "pexels:1234567",
            "videoUrl": "https://...",
            "thumbnailUrl": "https://...",
            "startTime": 12.5,
            "duration": 4.0,
            "sourceStart": 0,
            "sourceDuration": 0,
        }
    ],
    "caption_style": "HORMOZI",
    "shots": [{"start_time": 0.0, "end_time": 5.0}, {"start_time": 5.0, "end_time": 10.0}],
}

# §3.5 / §6: GET /clips/{id} is the "full editor hydration payload (template_config, transcript
# words, layout timeline, spatial matrix, shots)"; §6 names `transcript.words[]`,
# `advanced_spatial_matrix` and `ai_suggested_layout_timeline`. No body is printed: these are
# the named parts, around the clip fields of §3.4.
CLIP_RESPONSE: dict[str, Any] = {
    "data": {
        "id": "...",
        "title": "...",
        "start_time": 142.4,
        "end_time": 187.9,
        "status": "DETECTED",
        "template_config": TEMPLATE_CONFIG,
        "transcript": {"words": [{"word": "...", "start": 0.0, "end": 0.5}]},
        "ai_suggested_layout_timeline": [],
        "advanced_spatial_matrix": [],
        "shots": TEMPLATE_CONFIG["shots"],
    }
}

# §3.5 POST /clips/{id}/render: {render_job_id, status: "QUEUED", clip_id}.
RENDER_RESPONSE: dict[str, Any] = {
    "data": {"render_job_id": "...", "status": "QUEUED", "clip_id": "..."}
}
# §3.5 GET /clips/{id}/render-progress: {status, progress, render_job_id?}; §2 polls for RENDERED.
RENDER_PROGRESS_RESPONSE: dict[str, Any] = {
    "data": {"status": "RENDERED", "progress": 100, "render_job_id": "..."}
}

# §3.8: 202 {export_id, status:"PENDING"}; GET /exports/{id}: {id, status, download_url,
# file_size, error_message}.
EXPORT_CREATED_RESPONSE: dict[str, Any] = {"data": {"export_id": "...", "status": "PENDING"}}
EXPORT_RESPONSE: dict[str, Any] = {
    "data": {
        "id": "...",
        "status": "PENDING",
        "download_url": None,
        "file_size": None,
        "error_message": None,
    }
}

# §3.4: `{data:[ProjectOut], meta:{total,limit,offset,has_more}}`; §4.1's example meta.
LIST_META: dict[str, Any] = {"total": 99, "limit": 20, "offset": 0, "has_more": True}

# §3.12, the Node sample: `.then(r => r.json()).then(j => j.ticket)`: a bare ticket.
SSE_TICKET_RESPONSE: dict[str, Any] = {"ticket": "..."}

# §4.2 Error envelope.
ERROR_RESPONSE: dict[str, Any] = {
    "error": "Workspace context required (X-Workspace-ID)",
    "code": 403,
}

WORKSPACE_SCOPED = ("/v1/projects", "/v1/clips", "/v1/exports", "/v1/templates", "/v1/sse-ticket")
ACTIVE = frozenset(LIFECYCLE[:5])
EXPORT_FORMATS = ("premiere", "davinci", "fcpx", "after_effects")


def error(status: int, message: str, **headers: str) -> httpx.Response:
    body = copy.deepcopy(ERROR_RESPONSE)
    body.update(error=message, code=status)
    return httpx.Response(status, json=body, headers=headers)


def _served(template: dict[str, Any], http_status: int = 200, **data: Any) -> httpx.Response:
    """A literal payload with its ``"..."`` placeholders filled in from ``data``."""
    body = copy.deepcopy(template)
    body["data"].update(data)
    return httpx.Response(http_status, json=body)


@dataclass
class _Project:
    id: str
    title: str
    filename: str
    content_type: str
    object_key: str
    status: str = "PENDING_UPLOAD"
    uploaded: bytes | None = None
    processed: bool = False
    deleted: bool = False
    clip_ids: list[str] = field(default_factory=list)


@dataclass
class ReferenceBackend:
    """API and storage handlers over one state. Knobs are the behaviours the reference states
    (tier concurrency of §3.3/§5.3, minutes of §4.2's 402) set up directly."""

    tier_limit: int | None = 1  # PROFESSIONAL: 1 concurrent processing video
    tier_limit_status: int = 429
    minutes: float = 600
    ticket_shape: str = "bare"
    password: str = PASSWORD
    projects: dict[str, _Project] = field(default_factory=dict)
    clips: dict[str, dict[str, Any]] = field(default_factory=dict)
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    tickets: dict[str, bool] = field(default_factory=dict)
    access: set[str] = field(default_factory=set)
    refresh: set[str] = field(default_factory=set)
    log: list[httpx.Request] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    workspace_id: str = "ws-0001"

    def _id(self, kind: str) -> str:
        return f"{kind}-{next(self._ids):04d}"

    # ---- storage origin ------------------------------------------------------------------

    def presigned(self, method: str, key: str) -> str:
        return f"{STORAGE}/carmic/{key}?X-Amz-Credential=k%2Fauto&X-Amz-Signature={method.lower()}"

    def storage(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        if "Authorization" in request.headers:
            return httpx.Response(400, text="<Error><Code>InvalidArgument</Code></Error>")
        key = request.url.path.removeprefix("/carmic/")
        if request.method == "PUT":
            self.objects[key] = request.content
            for p in self.projects.values():
                if p.object_key == key:
                    p.uploaded = request.content
            return httpx.Response(200)
        if key in self.objects:
            return httpx.Response(200, content=self.objects[key])
        return httpx.Response(404, text="<Error><Code>NoSuchKey</Code></Error>")

    # ---- API origin ----------------------------------------------------------------------

    def api(self, request: httpx.Request) -> httpx.Response:
        self.log.append(request)
        path = request.url.path.removeprefix("/api")
        method = request.method
        body = json.loads(request.content) if request.content else {}
        if (method, path) == ("POST", "/v1/auth/login"):
            if body.get("email") != EMAIL or body.get("password") != self.password:
                return error(401, "Invalid credentials")
            return self._tokens(LOGIN_RESPONSE)
        if (method, path) == ("POST", "/v1/auth/refresh"):
            if body.get("refresh") not in self.refresh:
                return error(401, "Token is invalid or expired")
            return self._tokens(REFRESH_RESPONSE)
        if (method, path) == ("GET", "/v1/health"):
            return httpx.Response(200, json={"data": {"status": "ok"}})
        if path.endswith("/stream"):
            return self._stream(request, path)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.access:
            return error(401, "Missing or invalid JWT")
        if (method, path) == ("GET", "/v1/me"):
            me = copy.deepcopy(ME_RESPONSE)
            me["data"].update(id="user-1", email=EMAIL)
            me["data"]["workspaces"][0]["id"] = self.workspace_id
            return httpx.Response(200, json=me)
        if path.startswith(WORKSPACE_SCOPED):
            if request.headers.get("X-Workspace-ID") is None:
                return httpx.Response(403, json=ERROR_RESPONSE)
            if request.headers["X-Workspace-ID"] != self.workspace_id:
                return error(403, "You are not a member of this workspace")
        return self._route(method, path, body, request)

    def _tokens(self, template: dict[str, Any]) -> httpx.Response:
        body = copy.deepcopy(template)
        n = next(self._ids)
        # The literal token, made unique: a refreshed token must differ from the stale one.
        body["data"]["access"] = f"{body['data']['access']}{n}"
        self.access.add(body["data"]["access"])
        if "refresh" in body["data"]:
            body["data"]["refresh"] = f"{body['data']['refresh']}r{n}"
            self.refresh.add(body["data"]["refresh"])
        return httpx.Response(200, json=body)

    def expire_tokens(self) -> None:
        self.access.clear()

    def _project(self, pid: str) -> _Project | None:
        p = self.projects.get(pid)
        return None if p is None or p.deleted else p

    def _route(
        self, method: str, path: str, body: dict[str, Any], request: httpx.Request
    ) -> httpx.Response:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        match (method, parts):
            case ("POST", ["projects", "create"]):
                return self._create(body)
            case ("GET", ["projects"]):
                return self._list(request)
            case ("GET", ["projects", "caption-templates"]):
                styles = ("HORMOZI", "DEFAULT", "MINIMAL", "IMPACT", "KARAOKE", "BUBBLE", "WHISPER")
                return httpx.Response(200, json={"data": [{"name": s} for s in styles]})
            case ("POST", ["projects", pid, "process"]):
                return self._process(pid)
            case ("GET", ["projects", pid, "status"]):
                p = self._project(pid)
                if p is None:
                    return error(404, "Project not found")
                return _served(
                    STATUS_RESPONSE,
                    id=p.id,
                    status=p.status,
                    title=p.title,
                    progress=100 if p.status in ("CLIPS_READY", "COMPLETED") else 0,
                    clip_count=len(p.clip_ids),
                )
            case ("GET", ["projects", pid]):
                return self._get_project(pid)
            case ("DELETE", ["projects", pid]):
                p = self._project(pid)
                if p is None:
                    return error(404, "Project not found")
                p.deleted = True
                return httpx.Response(200, json={"data": {"ok": True}})
            case ("POST" | "DELETE", ["projects", pid, "cancel"]):
                p = self._project(pid)
                if p is None:
                    return error(404, "Project not found")
                p.status = "FAILED"
                return httpx.Response(200, json={"data": {"ok": True}})
            case ("GET", ["clips", cid]):
                clip = self.clips.get(cid)
                if clip is None:
                    return error(404, "Clip not found")
                return _served(CLIP_RESPONSE, id=cid, template_config=clip["template_config"])
            case ("PUT", ["clips", cid]):
                if cid not in self.clips:
                    return error(404, "Clip not found")
                self.clips[cid]["template_config"] = body
                return httpx.Response(200, json={"data": {"ok": True}})
            case ("POST", ["clips", cid, "render"]):
                return self._render(cid)
            case ("GET", ["clips", cid, "render-progress"]):
                clip = self.clips.get(cid)
                if clip is None:
                    return error(404, "Clip not found")
                if not clip["rendered"]:
                    return _served(RENDER_PROGRESS_RESPONSE, status="DETECTED", progress=0)
                return _served(RENDER_PROGRESS_RESPONSE, render_job_id=clip["render_job_id"])
            case ("GET", ["clips", cid, "video"]):
                clip = self.clips.get(cid)
                if clip is None or not clip["rendered"]:
                    return error(404, "Clip has not been rendered")
                return httpx.Response(
                    302, headers={"Location": self.presigned("GET", f"{cid}.mp4")}
                )
            case ("POST", ["clips", cid, "exports"]):
                return self._export(cid, body)
            case ("GET", ["clips", cid, "exports"]):
                items = [e for e in self.exports.values() if e["clip_id"] == cid]
                return httpx.Response(200, json={"data": [self._export_view(e) for e in items]})
            case ("GET", ["exports", eid]):
                ex = self.exports.get(eid)
                if ex is None:
                    return error(404, "Export not found")
                return httpx.Response(200, json={"data": self._export_view(ex)})
            case ("POST", ["sse-ticket"]):
                ticket = f"tkt-{next(self._ids)}"
                self.tickets[ticket] = False
                if self.ticket_shape == "bare":
                    return httpx.Response(200, json={**SSE_TICKET_RESPONSE, "ticket": ticket})
                return httpx.Response(200, json={"data": {**SSE_TICKET_RESPONSE, "ticket": ticket}})
            case ("GET", ["templates", ""] | ["templates"]):
                return httpx.Response(200, json={"data": [{"id": "tpl-1", "name": "Default"}]})
        return error(404, "Not Found")

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        if not body.get("filename") or not body.get("filesize"):
            return error(400, "filename and filesize are required")
        if body["filesize"] > 5 * 1024**3:
            return error(413, "Upload exceeds 5 GB")
        active = sum(1 for p in self.projects.values() if not p.deleted and p.status in ACTIVE)
        if self.tier_limit is not None and active >= self.tier_limit:
            return error(
                self.tier_limit_status,
                "Concurrent processing limit reached for your plan (PROFESSIONAL: 1)",
            )
        minutes = -(-float(body.get("duration") or 0) // 60)
        if minutes > self.minutes:
            return error(402, "Insufficient processing minutes")
        self.minutes -= minutes
        pid = self._id("prj")
        key = f"projects/{pid}/{body['filename']}"
        title = body.get("title") or body["filename"].rsplit(".", 1)[0]
        self.projects[pid] = _Project(
            pid, title, body["filename"], body.get("content_type", "video/mp4"), key
        )
        return _served(
            CREATE_RESPONSE, project_id=pid, upload_url=self.presigned("PUT", key), object_key=key
        )

    def _process(self, pid: str) -> httpx.Response:
        p = self._project(pid)
        if p is None:
            return error(404, "Project not found")
        if p.uploaded is None or p.processed:
            return error(
                409,
                f"Project is past PENDING_UPLOAD ({p.status})"
                if p.processed
                else "Upload not complete",
            )
        p.processed = True
        p.status = "CLIPS_READY"
        for n in range(3):
            cid = self._id("clip")
            p.clip_ids.append(cid)
            self.clips[cid] = {
                "project": pid,
                "n": n,
                "rendered": False,
                "render_job_id": None,
                "template_config": copy.deepcopy(TEMPLATE_CONFIG),
            }
        return httpx.Response(200, json={"data": {"id": pid, "status": p.status}})

    def _get_project(self, pid: str) -> httpx.Response:
        p = self._project(pid)
        if p is None:
            return error(404, "Project not found")
        body = copy.deepcopy(PROJECT_RESPONSE)
        data = body["data"]
        literal_clip = data["clips"][0]
        ready = p.status in ("CLIPS_READY", "COMPLETED")
        data.update(
            id=p.id,
            title=p.title,
            status=p.status,
            visual_pipeline_ready=ready,
            clip_count=len(p.clip_ids),
            thumbnail_url=self.presigned("GET", "thumb.jpg"),
        )
        data["clips"] = (
            [
                {
                    **literal_clip,
                    "id": cid,
                    "title": f"Clip {i + 1}",
                    "start_time": 10.0 * i,
                    "end_time": 10.0 * i + 8.5,
                    "virality_score": 90 - i,
                    "thumbnail_url": self.presigned("GET", f"{cid}.jpg"),
                    "video_url": f"{API}/v1/clips/{cid}/video",
                }
                for i, cid in enumerate(p.clip_ids)
            ]
            if ready
            else []
        )
        return httpx.Response(200, json=body)

    def _render(self, cid: str) -> httpx.Response:
        clip = self.clips.get(cid)
        if clip is None:
            return error(404, "Clip not found")
        if self.minutes < 1:
            return error(402, "Insufficient processing minutes")
        self.minutes -= 1
        clip["rendered"] = True
        clip["render_job_id"] = self._id("rj")
        self.objects[f"{cid}.mp4"] = b"\x00\x00\x00\x18ftypmp42" + cid.encode() * 100
        return _served(RENDER_RESPONSE, render_job_id=clip["render_job_id"], clip_id=cid)

    def _export(self, cid: str, body: dict[str, Any]) -> httpx.Response:
        if cid not in self.clips:
            return error(404, "Clip not found")
        fmt = body.get("target_format")
        if fmt not in EXPORT_FORMATS:
            return error(400, f"Invalid target_format {fmt!r}")
        for ex in self.exports.values():  # §4.4: idempotent on (clip_id, target_format)
            if (ex["clip_id"], ex["format"]) == (cid, fmt):
                return _served(EXPORT_CREATED_RESPONSE, 202, export_id=ex["id"])
        eid = self._id("exp")
        zipped = b"PK\x05\x06" + b"\x00" * 18  # an empty zip archive
        self.objects[f"{eid}.zip"] = zipped
        self.exports[eid] = {"id": eid, "clip_id": cid, "format": fmt, "size": len(zipped)}
        return _served(EXPORT_CREATED_RESPONSE, 202, export_id=eid)

    def _export_view(self, ex: dict[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = copy.deepcopy(EXPORT_RESPONSE["data"])
        # Done at the first look: the reference does not say how long an export takes.
        view.update(
            id=ex["id"],
            status="COMPLETED",
            target_format=ex["format"],
            download_url=self.presigned("GET", f"{ex['id']}.zip"),
            file_size=ex["size"],
        )
        return view

    def _list(self, request: httpx.Request) -> httpx.Response:
        q = request.url.params
        limit, offset = int(q.get("limit", 20)), int(q.get("offset", 0))
        search = q.get("search", "").lower()
        items = [
            p
            for p in self.projects.values()
            if not p.deleted and (search in p.title.lower() or search in p.filename.lower())
        ]
        page = items[offset : offset + limit]
        meta = {
            **LIST_META,
            "total": len(items),
            "limit": limit,
            "offset": offset,
            "has_more": offset + limit < len(items),
        }
        data = [{"id": p.id, "title": p.title, "status": p.status} for p in page]
        return httpx.Response(200, json={"data": data, "meta": meta})

    def _stream(self, request: httpx.Request, path: str) -> httpx.Response:
        ticket = request.url.params.get("ticket", "")
        if self.tickets.get(ticket, True):
            return error(401, "Invalid or expired ticket")
        self.tickets[ticket] = True
        parts = path.strip("/").split("/")
        p = self._project(parts[2]) if parts[1] == "projects" else None
        if parts[1] == "projects" and p is None:
            return error(404, "Project not found")
        payload = (
            {"id": p.id, "status": p.status, "progress": 100, "current_step": ""}
            if p is not None
            else {"id": parts[2], "status": "COMPLETED"}
        )
        text = f": keepalive\n\ndata: {json.dumps(payload)}\n\n"
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, text=text)

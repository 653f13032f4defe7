"""What tests may look at: a log of requests on both origins, counters, the ordered log of
clip edits and renders, and a snapshot of the whole state (``GET /api/_emulator/state``).

Nothing secret is recorded: request paths lose their query strings (presigned signatures,
SSE tickets), and only whether an ``Authorization`` header was present.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from watchd.emulator.core import Core
    from watchd.emulator.state import Clip, Project

__all__ = ["COUNTERS", "Inspection", "build_snapshot"]

MAX_REQUESTS = 20_000
# Every counter the emulator keeps, present (at 0) from the start so readers need no defaults.
COUNTERS = (
    "logins",
    "login_failures",
    "logouts",
    "refreshes",
    "registers",
    "password_resets",
    "creates",
    "uploads",
    "upload_refusals",
    "upload_resets",
    "processes",
    "projects_failed",
    "cancels",
    "deletes",
    "puts",
    "renders",
    "render_failures",
    "exports",
    "export_failures",
    "sse_tickets",
    "sse_connections",
    "sse_events",
    "rate_limited",
    "tier_limited",
    "injected_errors",
    "commit_then_fail",
)


class Inspection:
    """Append-only records, bounded."""

    def __init__(self) -> None:
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_REQUESTS)
        self.counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
        self.clip_log: list[dict[str, Any]] = []

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to one of the :data:`COUNTERS`."""
        assert name in self.counters, f"unknown counter {name!r}: add it to COUNTERS"
        self.counters[name] += n

    def record_request(
        self,
        request: web.BaseRequest,
        *,
        origin: str,
        status: int,
        t: float,
        started: float | None = None,
        first_byte: float | None = None,
    ) -> None:
        """One request (its path without the query string; 0 for a dropped connection).

        ``t`` is when it ended; ``started`` when its handler began (an SSE stream ends long
        after) and ``first_byte`` when the first byte of its body arrived, where the origin
        tracks them (storage PUTs do): latency
        benchmarks measure from a file's close to its first uploaded byte."""
        headers = request.headers
        path, _, query = request.raw_path.partition("?")
        length = headers.get("Content-Length")
        self.requests.append(
            {
                "t": t,
                "origin": origin,
                "method": request.method,
                "path": path,
                "query_keys": sorted({q.split("=", 1)[0] for q in query.split("&") if q}),
                "status": status,
                "has_auth": "Authorization" in headers,
                "workspace": headers.get("X-Workspace-ID"),
                # Which daemon sent it: ours say "carmic-watchd/<version> (node <name>)".
                "user_agent": headers.get("User-Agent"),
                "content_type": headers.get("Content-Type"),
                "content_length": int(length) if length and length.isdigit() else None,
                "transfer_encoding": headers.get("Transfer-Encoding"),
                "expect": headers.get("Expect"),
                "started": started,
                "first_byte": first_byte,
            }
        )

    def record_clip(self, kind: str, clip_id: str, t: float, **details: Any) -> None:
        """A PUT of a clip's template or a render of it, in the order they happened."""
        self.clip_log.append(
            {"seq": len(self.clip_log) + 1, "t": t, "kind": kind, "clip_id": clip_id, **details}
        )


def _clip(c: Clip) -> dict[str, Any]:
    return {
        "id": c.id,
        "title": c.title,
        "start_time": c.start_time,
        "end_time": c.end_time,
        "virality_score": c.virality_score,
        "status": c.status,
        "template_config": c.template_config,
        "put_count": c.put_count,
        "render_count": c.render_count,
        "renders": [
            {
                "render_job_id": r.id,
                "attempt": r.attempt,
                "status": r.status,
                "error_message": r.error_message,
                "charged_minutes": r.charge.minutes if r.charge else 0,
                "refunded": bool(r.charge and r.charge.refunded),
            }
            for r in c.renders
        ],
        "video_key": c.video_key,
    }


def _project(p: Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "workspace_id": p.workspace_id,
        "title": p.title,
        "filename": p.filename,
        "filesize": p.filesize,
        "content_type": p.content_type,
        "duration": p.duration,
        "media_duration": p.media_duration,
        "video_type": p.video_type,
        "language": p.language,
        "language_mode": p.language_mode,
        "enable_multimodal": p.enable_multimodal,
        "custom_instructions": p.custom_instructions,
        "trim_start": p.trim_start,
        "trim_end": p.trim_end,
        "status": p.status,
        "progress": p.progress,
        "object_key": p.object_key,
        "upload": p.upload.describe() if p.upload is not None else None,
        "billed": p.charge.minutes if p.charge is not None else 0,
        "refunded": bool(p.charge and p.charge.refunded),
        "deleted": p.deleted,
        "created_at": p.created_at,
        "process_requested_at": p.process_requested_at,
        "clips_ready_at": p.clips_ready_at,
        "completed_at": p.completed_at,
        "visual_pipeline_ready": p.visual_pipeline_ready,
        "clips": [_clip(c) for c in p.clips],
    }


def build_snapshot(core: Core) -> dict[str, Any]:
    """The whole inspectable state, JSON-ready."""
    st = core.state
    s = core.settings
    return {
        "requests": list(core.inspection.requests),
        "projects": [_project(p) for p in st.projects.values()],
        "exports": [{k: v for k, v in dataclasses.asdict(e).items()} for e in st.exports.values()],
        "billing": {
            ws.id: {
                "name": ws.name,
                "tier": ws.tier,
                "minutes_left": ws.minutes_left,
                "charges": [c.describe() for c in ws.charges],
            }
            for ws in st.workspaces.values()
        },
        "users": [
            {
                "id": u.id,
                "email": u.email,
                "workspaces": [ws.id for ws in st.workspaces_of(u.id)],
            }
            for u in st.users.values()
        ],
        "counters": dict(core.inspection.counters),
        "clip_puts": list(core.inspection.clip_log),
        "password_resets": [
            {"token": token, "user_id": uid} for token, uid in st.reset_tokens.items()
        ],
        "settings": {
            "faults": dataclasses.asdict(s.faults),
            "variants": dataclasses.asdict(s.variants),
            "timings": dataclasses.asdict(s.timings),
            "tier": core.seed_workspace.tier,
            "minutes": core.seed_workspace.minutes_left,
            "access_ttl": s.access_ttl,
            "strict_media": s.strict_media,
            "auth_rate_limits": s.auth_rate_limits,
        },
        "now": core.now(),
    }

"""How records look on the wire: the payloads of the reference's endpoints.

Presigned URLs are minted per response (they expire), for the storage origin as the caller
reaches it; :class:`Urls` carries that origin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchd.emulator.state import Clip, Export, Project, RenderJob

if TYPE_CHECKING:
    from watchd.emulator.core import Core

__all__ = [
    "Urls",
    "clip_detail",
    "clip_summary",
    "export_out",
    "iso",
    "project_full",
    "project_out",
    "project_status",
    "render_progress",
]


def iso(t: float | None) -> str | None:
    """An ISO 8601 UTC timestamp (``2026-05-09T12:34:56Z``)."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(frozen=True)
class Urls:
    """Mints presigned GETs for the storage origin a caller reaches."""

    core: Core
    storage_base: str

    def get(self, key: str | None) -> str | None:
        """A presigned GET for ``key`` (None when there is no such object to serve)."""
        if key is None or not self.core.store.known(key):
            return None
        return self.core.presign_get(key, self.storage_base)


def project_status(p: Project) -> dict[str, Any]:
    """``GET /projects/{id}/status`` (and each SSE event of the project stream)."""
    return {
        "id": p.id,
        "status": p.status,
        "title": p.title,
        "progress": p.progress,
        "current_step": p.current_step,
        "clip_count": len(p.visible_clips),
        "visual_pipeline_ready": p.visual_pipeline_ready,
        "error_message": p.error_message,
    }


def project_out(p: Project, urls: Urls) -> dict[str, Any]:
    """A project in listings (ProjectOut): the record without its clips."""
    return {
        "id": p.id,
        "title": p.title,
        "filename": p.filename,
        "filesize": p.filesize,
        "content_type": p.content_type,
        "status": p.status,
        "progress": p.progress,
        "current_step": p.current_step,
        "duration": p.duration if p.duration is not None else p.media_duration,
        "language": p.language,
        "language_mode": p.language_mode,
        "video_type": p.video_type,
        "enable_multimodal": p.enable_multimodal,
        "custom_instructions": p.custom_instructions,
        "trim_start": p.trim_start,
        "trim_end": p.trim_end,
        "thumbnail_url": urls.get(p.prefix + "thumbnail.jpg"),
        "visual_pipeline_ready": p.visual_pipeline_ready,
        "clips_ready_at": iso(p.clips_ready_at) if p.visual_pipeline_ready else None,
        "clip_count": len(p.visible_clips),
        "error_message": p.error_message,
        "object_key": p.object_key,
        "created_at": iso(p.created_at),
        "updated_at": iso(p.updated_at or p.created_at),
    }


def project_full(p: Project, urls: Urls) -> dict[str, Any]:
    """``GET /projects/{id}``: the record plus its clips (once the visual pipeline is ready)."""
    return {**project_out(p, urls), "clips": [clip_summary(c, p, urls) for c in p.visible_clips]}


def clip_summary(c: Clip, p: Project, urls: Urls) -> dict[str, Any]:
    """A clip as listed in ``GET /projects/{id}``."""
    base = f"{p.prefix}clips/{c.id}/"
    return {
        "id": c.id,
        "project_id": c.project_id,
        "title": c.title,
        "start_time": c.start_time,
        "end_time": c.end_time,
        "duration": c.duration,
        "virality_score": c.virality_score,
        "reasoning": c.reasoning,
        "status": c.status,
        "thumbnail_url": urls.get(base + "thumbnail.jpg"),
        "video_url": urls.get(c.video_key) or urls.get(base + "preview.mp4"),
        "source_video_url": urls.get(p.object_key),
        "proxy_url": urls.get(p.prefix + "proxy_720p.mp4"),
        "render_job_id": c.render.id if c.render is not None else None,
        "broll_suggestions": [],
    }


def clip_detail(c: Clip, p: Project, urls: Urls, *, transcript_times: str) -> dict[str, Any]:
    """``GET /clips/{id}``: the editor hydration payload."""
    offset = 0.0 if transcript_times == "source" else c.start_time
    words = [
        {**w, "start": round(w["start"] - offset, 3), "end": round(w["end"] - offset, 3)}
        for w in c.words
    ]
    return {
        **clip_summary(c, p, urls),
        "template_config": c.template_config,
        "transcript": {"words": words, "times": transcript_times},
        "ai_suggested_layout_timeline": c.layout_timeline,
        "advanced_spatial_matrix": c.spatial_matrix,
        "shots": c.shots,
    }


def render_progress(c: Clip) -> dict[str, Any]:
    """``GET /clips/{id}/render-progress``."""
    job: RenderJob | None = c.render
    if job is None:
        return {"status": c.status, "progress": 0, "render_job_id": None}
    return {
        "status": job.status,
        "progress": job.progress,
        "render_job_id": job.id,
        "error_message": job.error_message,
    }


def export_out(e: Export, urls: Urls) -> dict[str, Any]:
    """``GET /exports/{id}`` (and each SSE event of the export stream)."""
    done = e.object_key is not None and e.status not in ("PENDING", "PROCESSING", "FAILED")
    return {
        "id": e.id,
        "export_id": e.id,
        "clip_id": e.clip_id,
        "target_format": e.target_format,
        "include_proxy": e.include_proxy,
        "status": e.status,
        "progress": e.progress,
        "download_url": urls.get(e.object_key) if done else None,
        "file_size": e.file_size if done else None,
        "error_message": e.error_message,
        "created_at": iso(e.created_at),
        "updated_at": iso(e.updated_at or e.created_at),
    }

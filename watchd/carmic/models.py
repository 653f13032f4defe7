"""Typed views of Carmic payloads.

Each model keeps the payload it came from in ``raw`` so nothing the server sends is lost, and
each parser tolerates missing optional fields: the reference is loose and the real service may
add or omit keys. Parsers take the *unwrapped* payload (the envelope's ``data``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]

# Project statuses of the reference's lifecycle (§3.3).
PROJECT_FAILED_PREFIX = "FAILED"
PROJECT_READY_STATUSES = frozenset({"CLIPS_READY", "COMPLETED"})
PROJECT_WAITING_UPLOAD = frozenset({"PENDING_UPLOAD"})

# Render statuses: the reference names QUEUED, RENDERED and FAILED_RENDER.
RENDER_DONE = "RENDERED"
RENDER_FAILED = "FAILED_RENDER"

# Export statuses: the reference says PENDING and FAILED; which status a finished export ends
# in is loose, so any of these with a download_url counts as done.
EXPORT_DONE_STATUSES = frozenset({"COMPLETED", "COMPLETE", "READY", "DONE", "SUCCESS", "SUCCEEDED"})
EXPORT_FAILED_STATUSES = frozenset({"FAILED", "ERROR", "CANCELLED", "CANCELED"})
EXPORT_PENDING_STATUSES = frozenset(
    {"PENDING", "QUEUED", "PROCESSING", "RUNNING", "IN_PROGRESS", "EXPORTING", "STARTED"}
)


def _f(d: JSON, key: str, default: float = 0.0) -> float:
    v = d.get(key)
    try:
        return float(v) if v is not None else default
    except (TypeError, ValueError):
        return default


def _s(d: JSON, key: str, default: str = "") -> str:
    v = d.get(key)
    return str(v) if v is not None else default


def _opt_s(d: JSON, key: str) -> str | None:
    v = d.get(key)
    return str(v) if v not in (None, "") else None


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str
    tier: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> Workspace:
        tier = d.get("tier") or d.get("plan") or d.get("subscription_tier")
        return cls(id=_s(d, "id"), name=_s(d, "name"), tier=str(tier) if tier else None, raw=d)


@dataclass(frozen=True)
class Me:
    id: str
    email: str
    workspaces: tuple[Workspace, ...]
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> Me:
        user = d.get("user") if isinstance(d.get("user"), dict) else d
        assert isinstance(user, dict)
        ws = d.get("workspaces") or user.get("workspaces") or []
        return cls(
            id=_s(user, "id"),
            email=_s(user, "email"),
            workspaces=tuple(Workspace.from_api(w) for w in ws if isinstance(w, dict)),
            raw=d,
        )


@dataclass(frozen=True)
class Tokens:
    access: str = field(repr=False)
    refresh: str | None = field(default=None, repr=False)

    @classmethod
    def from_api(cls, d: JSON) -> Tokens:
        return cls(access=_s(d, "access"), refresh=_opt_s(d, "refresh"))


@dataclass(frozen=True)
class ProjectCreated:
    project_id: str
    upload_url: str = field(repr=False)  # presigned: never log it whole
    object_key: str
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> ProjectCreated:
        return cls(
            project_id=_s(d, "project_id") or _s(d, "id"),
            upload_url=_s(d, "upload_url"),
            object_key=_s(d, "object_key"),
            raw=d,
        )


@dataclass(frozen=True)
class ProjectStatus:
    id: str
    status: str
    title: str = ""
    progress: float = 0.0
    current_step: str = ""
    clip_count: int = 0
    visual_pipeline_ready: bool | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> ProjectStatus:
        vpr = d.get("visual_pipeline_ready")
        return cls(
            id=_s(d, "id") or _s(d, "project_id"),
            status=_s(d, "status").upper(),
            title=_s(d, "title"),
            progress=_f(d, "progress"),
            current_step=_s(d, "current_step"),
            clip_count=int(_f(d, "clip_count")),
            visual_pipeline_ready=bool(vpr) if vpr is not None else None,
            raw=d,
        )

    @property
    def failed(self) -> bool:
        return self.status.startswith(PROJECT_FAILED_PREFIX)

    @property
    def ready(self) -> bool:
        return self.status in PROJECT_READY_STATUSES


@dataclass(frozen=True)
class ClipSummary:
    id: str
    title: str
    start_time: float
    end_time: float
    virality_score: float
    reasoning: str = ""
    status: str = ""
    thumbnail_url: str | None = None
    video_url: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> ClipSummary:
        return cls(
            id=_s(d, "id"),
            title=_s(d, "title"),
            start_time=_f(d, "start_time"),
            end_time=_f(d, "end_time"),
            virality_score=_f(d, "virality_score"),
            reasoning=_s(d, "reasoning"),
            status=_s(d, "status").upper(),
            thumbnail_url=_opt_s(d, "thumbnail_url"),
            video_url=_opt_s(d, "video_url"),
            raw=d,
        )


@dataclass(frozen=True)
class Project:
    id: str
    title: str
    status: str
    duration: float = 0.0
    visual_pipeline_ready: bool = False
    clip_count: int = 0
    clips: tuple[ClipSummary, ...] = ()
    thumbnail_url: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> Project:
        clips = d.get("clips") or []
        return cls(
            id=_s(d, "id"),
            title=_s(d, "title"),
            status=_s(d, "status").upper(),
            duration=_f(d, "duration"),
            visual_pipeline_ready=bool(d.get("visual_pipeline_ready")),
            clip_count=int(_f(d, "clip_count")),
            clips=tuple(ClipSummary.from_api(c) for c in clips if isinstance(c, dict)),
            thumbnail_url=_opt_s(d, "thumbnail_url"),
            raw=d,
        )

    @property
    def failed(self) -> bool:
        return self.status.startswith(PROJECT_FAILED_PREFIX)


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


def _words(d: JSON) -> tuple[Word, ...]:
    """Transcript words from the hydration payload: ``transcript.words`` or ``transcript_words``
    or ``words``; each word may name its text ``word``/``text``/``w`` and its times
    ``start``/``start_time``/``s`` (seconds)."""
    t = d.get("transcript")
    words: Any = None
    if isinstance(t, dict):
        words = t.get("words")
    elif isinstance(t, list):
        words = t
    if words is None:
        words = d.get("transcript_words") or d.get("words") or []
    out: list[Word] = []
    for w in words if isinstance(words, list) else []:
        if not isinstance(w, dict):
            continue
        text = w.get("word", w.get("text", w.get("w", "")))
        start = w.get("start", w.get("start_time", w.get("s")))
        end = w.get("end", w.get("end_time", w.get("e")))
        if start is None or end is None:
            continue
        try:
            out.append(Word(text=str(text), start=float(start), end=float(end)))
        except (TypeError, ValueError):
            continue
    return tuple(out)


@dataclass(frozen=True)
class ClipDetail:
    """The editor hydration payload of ``GET /clips/{id}``."""

    id: str
    title: str
    start_time: float
    end_time: float
    template_config: JSON
    words: tuple[Word, ...]
    status: str = ""
    thumbnail_url: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> ClipDetail:
        clip = d.get("clip") if isinstance(d.get("clip"), dict) else d
        assert isinstance(clip, dict)
        tc = d.get("template_config", clip.get("template_config"))
        return cls(
            id=_s(clip, "id"),
            title=_s(clip, "title"),
            start_time=_f(clip, "start_time"),
            end_time=_f(clip, "end_time"),
            template_config=dict(tc) if isinstance(tc, dict) else {},
            words=_words(d) or _words(clip),
            status=_s(clip, "status").upper(),
            thumbnail_url=_opt_s(clip, "thumbnail_url"),
            raw=d,
        )


@dataclass(frozen=True)
class RenderJob:
    render_job_id: str
    status: str
    clip_id: str
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> RenderJob:
        return cls(
            render_job_id=_s(d, "render_job_id"),
            status=_s(d, "status").upper(),
            clip_id=_s(d, "clip_id"),
            raw=d,
        )


@dataclass(frozen=True)
class RenderProgress:
    status: str
    progress: float = 0.0
    render_job_id: str | None = None
    error: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> RenderProgress:
        return cls(
            status=_s(d, "status").upper(),
            progress=_f(d, "progress"),
            render_job_id=_opt_s(d, "render_job_id"),
            error=_opt_s(d, "error_message") or _opt_s(d, "error"),
            raw=d,
        )

    @property
    def done(self) -> bool:
        return self.status == RENDER_DONE

    @property
    def failed(self) -> bool:
        return self.status == RENDER_FAILED or self.status.startswith("FAILED")


@dataclass(frozen=True)
class ExportJob:
    export_id: str
    status: str
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> ExportJob:
        return cls(
            export_id=_s(d, "export_id") or _s(d, "id"),
            status=_s(d, "status").upper(),
            raw=d,
        )


@dataclass(frozen=True)
class Export:
    id: str
    status: str
    download_url: str | None = field(default=None, repr=False)  # presigned
    file_size: int | None = None
    error_message: str | None = None
    target_format: str | None = None
    raw: JSON = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, d: JSON) -> Export:
        size = d.get("file_size")
        return cls(
            id=_s(d, "id") or _s(d, "export_id"),
            status=_s(d, "status").upper(),
            download_url=_opt_s(d, "download_url"),
            file_size=int(size) if isinstance(size, int | float) else None,
            error_message=_opt_s(d, "error_message"),
            target_format=_opt_s(d, "target_format"),
            raw=d,
        )

    @property
    def done(self) -> bool:
        if self.download_url is None or self.failed:
            return False
        return self.status in EXPORT_DONE_STATUSES or self.status not in EXPORT_PENDING_STATUSES

    @property
    def failed(self) -> bool:
        return self.status in EXPORT_FAILED_STATUSES


@dataclass(frozen=True)
class Page:
    """One page of a listing endpoint: ``{data: [...], meta: {total, limit, offset, has_more}}``."""

    items: tuple[JSON, ...]
    total: int
    limit: int
    offset: int
    has_more: bool

    @classmethod
    def from_api(cls, data: Any, meta: JSON | None) -> Page:
        items = tuple(x for x in (data or []) if isinstance(x, dict))
        m = meta or {}
        return cls(
            items=items,
            total=int(_f(m, "total", len(items))),
            limit=int(_f(m, "limit", len(items))),
            offset=int(_f(m, "offset", 0)),
            has_more=bool(m.get("has_more", False)),
        )

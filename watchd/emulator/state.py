"""The emulator's domain: users, workspaces, projects, clips, renders, exports, billing.

Plain mutable records and the rules that involve only them (membership, the tier's concurrency
count, the minute pool). No I/O and no clock: times are passed in. Everything here is touched
from the event loop thread only.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from watchd.emulator.auth import hash_password, verify_password
from watchd.emulator.objects import StoredObject
from watchd.emulator.settings import TIER_CONCURRENCY

__all__ = [
    "ACTIVE_AT_CREATE",
    "ACTIVE_AT_PROCESS",
    "Charge",
    "Clip",
    "Export",
    "InsufficientMinutes",
    "Project",
    "RenderJob",
    "State",
    "UploadSlot",
    "User",
    "Workspace",
]

# The tier's concurrency limit counts these statuses (§3.3): at create every project not yet
# finished, at process only those already processing.
ACTIVE_AT_PROCESS = frozenset(
    {"UPLOADING", "DOWNLOADING", "TRANSCRIBING", "PROCESSING", "FACE_TRACKING"}
)
ACTIVE_AT_CREATE = ACTIVE_AT_PROCESS | {"PENDING_UPLOAD"}
PROJECT_DONE = frozenset({"CLIPS_READY", "COMPLETED"})


class InsufficientMinutes(Exception):
    """The workspace's minute pool cannot cover a charge."""

    def __init__(self, needed: int, left: int) -> None:
        super().__init__(f"Insufficient processing minutes ({needed} needed, {left} left)")
        self.needed = needed
        self.left = left


@dataclass
class User:
    """An account; the password is kept hashed only."""

    id: str
    email: str
    password_hash: str = field(repr=False)
    first_name: str = ""
    last_name: str = ""
    avatar_url: str = ""
    created_at: float = 0.0

    def check_password(self, password: str) -> bool:
        return verify_password(password, self.password_hash)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
        }


@dataclass
class Charge:
    """Minutes taken from a workspace's pool (refunded at most once)."""

    id: str
    workspace_id: str
    minutes: int
    kind: str  # ingest | render
    project_id: str | None
    clip_id: str | None
    t: float
    refunded: bool = False

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "project_id": self.project_id,
            "clip_id": self.clip_id,
            "minutes": self.minutes,
            "kind": self.kind,
            "refunded": self.refunded,
            "t": self.t,
        }


@dataclass
class Workspace:
    """A tier, a minute pool, members and the workspace-owned extras."""

    id: str
    name: str
    tier: str
    minutes_left: int
    members: dict[str, str] = field(default_factory=dict)  # user id -> OWNER | EDITOR
    charges: list[Charge] = field(default_factory=list)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)  # custom templates
    defaults: dict[str, str] = field(default_factory=dict)  # ratio -> template id
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    invites: list[dict[str, Any]] = field(default_factory=list)
    social: dict[str, dict[str, Any]] = field(default_factory=dict)  # connected accounts
    oauth_states: dict[str, str] = field(default_factory=dict)  # state token -> platform

    @property
    def concurrency(self) -> int | None:
        return TIER_CONCURRENCY[self.tier]


@dataclass
class RenderJob:
    """One render attempt of a clip."""

    id: str
    clip_id: str
    attempt: int
    status: str = "QUEUED"  # QUEUED | RENDERING | RENDERED | FAILED_RENDER
    progress: int = 0
    charge: Charge | None = None
    error_message: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None


@dataclass
class Clip:
    """A detected clip, its editor state and its renders."""

    id: str
    project_id: str
    workspace_id: str
    index: int
    title: str
    start_time: float
    end_time: float
    virality_score: int
    reasoning: str
    words: list[dict[str, Any]]  # source-relative times
    layout_timeline: list[dict[str, Any]]
    spatial_matrix: dict[str, Any]
    shots: list[dict[str, Any]]
    template_config: dict[str, Any]
    status: str = "DETECTED"
    put_count: int = 0
    render_count: int = 0  # attempts, failed ones included
    render: RenderJob | None = None
    renders: list[RenderJob] = field(default_factory=list)
    video_key: str | None = None  # the rendered MP4, once RENDERED

    @property
    def duration(self) -> float:
        return round(self.end_time - self.start_time, 3)

    @property
    def rendering(self) -> bool:
        return self.render is not None and self.render.status in ("QUEUED", "RENDERING")


@dataclass
class Project:
    """An ingestion: the upload, the processing status and the clips found."""

    id: str
    workspace_id: str
    user_id: str
    title: str
    filename: str
    filesize: int
    content_type: str
    object_key: str
    created_at: float
    duration: float | None = None
    language: str | None = None
    language_mode: str = "single"
    video_type: str = "auto"
    enable_multimodal: bool = False
    custom_instructions: str = ""
    trim_start: float | None = None
    trim_end: float | None = None
    source_url: str | None = None
    status: str = "PENDING_UPLOAD"
    progress: int = 0
    current_step: str = "Waiting for upload"
    error_message: str | None = None
    updated_at: float = 0.0
    process_requested_at: float | None = None
    clips_ready_at: float | None = None
    completed_at: float | None = None
    visual_pipeline_ready: bool = False
    deleted: bool = False
    deleted_at: float | None = None
    upload: StoredObject | None = None
    media_duration: float | None = None  # probed from the upload
    charge: Charge | None = None
    clips: list[Clip] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Every storage object of the project lives under this key prefix."""
        return f"workspaces/{self.workspace_id}/projects/{self.id}/"

    @property
    def started(self) -> bool:
        return self.process_requested_at is not None

    @property
    def failed(self) -> bool:
        return self.status.startswith("FAILED")

    @property
    def finished(self) -> bool:
        return self.failed or self.status in PROJECT_DONE

    @property
    def visible_clips(self) -> list[Clip]:
        return self.clips if self.visual_pipeline_ready else []


@dataclass
class Export:
    """An NLE export of a clip in one format."""

    id: str
    clip_id: str
    project_id: str
    workspace_id: str
    target_format: str
    include_proxy: bool
    created_at: float
    status: str = "PENDING"
    progress: int = 0
    object_key: str | None = None
    file_size: int | None = None
    error_message: str | None = None
    updated_at: float = 0.0
    attempts: int = 0


@dataclass(frozen=True)
class UploadSlot:
    """What a presigned PUT URL was made for: the Content-Types it accepts, its project."""

    key: str
    content_types: frozenset[str]
    project_id: str | None = None


@dataclass
class Ticket:
    """A single-use SSE ticket."""

    user_id: str
    workspace_id: str
    expires_at: float
    used: bool = False


class State:
    """All records, with lookups that enforce workspace ownership."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(f"ids:{seed}")
        self.users: dict[str, User] = {}
        self.users_by_email: dict[str, User] = {}
        self.workspaces: dict[str, Workspace] = {}
        self.projects: dict[str, Project] = {}
        self.clips: dict[str, Clip] = {}
        self.exports: dict[str, Export] = {}
        self.tickets: dict[str, Ticket] = {}
        self.reset_tokens: dict[str, str] = {}  # token -> user id
        self.upload_slots: dict[str, UploadSlot] = {}  # object key -> what may be PUT there

    def new_id(self) -> str:
        """A UUID4 from the seeded generator: the same seed gives the same ids."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ---- users and workspaces -----------------------------------------------------------------

    def add_user(
        self,
        email: str,
        password: str,
        *,
        now: float,
        tier: str,
        minutes: int,
        first_name: str = "",
        last_name: str = "",
        workspace_name: str | None = None,
    ) -> tuple[User, Workspace]:
        """A user and a workspace of their own, where they are OWNER."""
        key = email.strip().lower()
        if key in self.users_by_email:
            raise ValueError(f"a user with the email {email!r} exists already")
        user = User(
            id=self.new_id(),
            email=email.strip(),
            password_hash=hash_password(password),
            first_name=first_name,
            last_name=last_name,
            created_at=now,
        )
        name = workspace_name or f"{first_name or key.split('@')[0]}'s Workspace"
        ws = Workspace(id=self.new_id(), name=name, tier=tier, minutes_left=minutes)
        ws.members[user.id] = "OWNER"
        self.users[user.id] = user
        self.users_by_email[key] = user
        self.workspaces[ws.id] = ws
        return user, ws

    def user_by_email(self, email: str) -> User | None:
        return self.users_by_email.get(email.strip().lower())

    def workspaces_of(self, user_id: str) -> list[Workspace]:
        return [ws for ws in self.workspaces.values() if user_id in ws.members]

    def role(self, user_id: str, workspace_id: str) -> str | None:
        ws = self.workspaces.get(workspace_id)
        return ws.members.get(user_id) if ws is not None else None

    # ---- owned records ------------------------------------------------------------------------

    def project(self, workspace_id: str, project_id: str) -> Project | None:
        """The live (not deleted) project of this workspace, else None (a 404 either way)."""
        p = self.projects.get(project_id)
        if p is None or p.deleted or p.workspace_id != workspace_id:
            return None
        return p

    def clip(self, workspace_id: str, clip_id: str) -> Clip | None:
        """A clip that is visible (its project's clips are published) in this workspace."""
        c = self.clips.get(clip_id)
        if c is None or c.workspace_id != workspace_id:
            return None
        p = self.project(workspace_id, c.project_id)
        if p is None or c not in p.visible_clips:
            return None
        return c

    def export(self, workspace_id: str, export_id: str) -> Export | None:
        e = self.exports.get(export_id)
        if e is None or e.workspace_id != workspace_id:
            return None
        if self.clip(workspace_id, e.clip_id) is None:
            return None
        return e

    def exports_of(self, clip_id: str) -> list[Export]:
        return sorted(
            (e for e in self.exports.values() if e.clip_id == clip_id), key=lambda e: e.created_at
        )

    def active_projects(
        self, workspace_id: str, statuses: frozenset[str], *, exclude: str | None = None
    ) -> list[Project]:
        """The workspace's live projects in ``statuses`` (the tier limit counts them). A project
        whose ``/process`` was accepted counts as UPLOADING while its upload is still being
        probed: two concurrent ``/process`` calls must not both find the slot free."""
        return [
            p
            for p in self.projects.values()
            if p.workspace_id == workspace_id
            and not p.deleted
            and (
                p.status in statuses
                or (p.started and p.status == "PENDING_UPLOAD" and "UPLOADING" in statuses)
            )
            and p.id != exclude
        ]

    # ---- billing ------------------------------------------------------------------------------

    def charge(
        self,
        ws: Workspace,
        minutes: int,
        kind: str,
        *,
        now: float,
        project_id: str | None = None,
        clip_id: str | None = None,
    ) -> Charge:
        """Take ``minutes`` from the pool, or raise :class:`InsufficientMinutes`."""
        if minutes > ws.minutes_left:
            raise InsufficientMinutes(minutes, ws.minutes_left)
        ws.minutes_left -= minutes
        charge = Charge(self.new_id(), ws.id, minutes, kind, project_id, clip_id, now)
        ws.charges.append(charge)
        return charge

    def refund(self, charge: Charge | None) -> bool:
        """Give a charge back (once). Returns whether anything was refunded."""
        if charge is None or charge.refunded:
            return False
        ws = self.workspaces.get(charge.workspace_id)
        if ws is None:
            return False
        charge.refunded = True
        ws.minutes_left += charge.minutes
        return True

    # ---- SSE tickets --------------------------------------------------------------------------

    def add_ticket(self, token: str, user_id: str, workspace_id: str, expires_at: float) -> None:
        self.tickets[token] = Ticket(user_id, workspace_id, expires_at)

    def redeem_ticket(self, token: str, *, now: float) -> Ticket | None:
        """The ticket, spent; None when unknown, used or expired."""
        t = self.tickets.get(token)
        if t is None or t.used or now > t.expires_at:
            return None
        t.used = True
        return t

    def rng_for(self, *parts: object) -> random.Random:
        """A generator determined by ``parts`` alone (per-project content, fault draws)."""
        return random.Random(":".join(str(p) for p in parts))

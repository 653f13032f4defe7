"""One API request as the handlers see it: who is calling, in which workspace, and helpers
that answer 404 for records of other workspaces and 429 for exhausted rate limits."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from watchd.emulator.core import Core
from watchd.emulator.engine import Engine
from watchd.emulator.envelope import ApiError, read_json
from watchd.emulator.ratelimit import Limit
from watchd.emulator.state import Clip, Export, Project, UploadSlot, User, Workspace
from watchd.emulator.views import Urls

__all__ = ["Call", "Handler"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Call:
    """The request, the emulator, the path parameters and the authenticated caller."""

    request: web.Request
    core: Core
    engine: Engine
    params: dict[str, str] = field(default_factory=dict)
    user: User | None = None
    workspace: Workspace | None = None

    @property
    def urls(self) -> Urls:
        """Presigned URLs for the storage origin as this caller reaches it."""
        return Urls(self.core, self.core.storage_base(self.request.host))

    @property
    def me(self) -> User:
        """The authenticated user (routes with Access.USER or WORKSPACE)."""
        assert self.user is not None, "route needs Access.USER"
        return self.user

    @property
    def ws(self) -> Workspace:
        """The workspace of X-Workspace-ID (routes with Access.WORKSPACE)."""
        assert self.workspace is not None, "route needs Access.WORKSPACE"
        return self.workspace

    @property
    def ip(self) -> str:
        """The client's address (the subject of per-IP rate limits)."""
        return self.request.remote or "unknown"

    def now(self) -> float:
        """The emulator clock's time."""
        return self.core.now()

    async def json(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a JSON object (400 otherwise)."""
        return await read_json(self.request, required=required)

    def project(self, project_id: str | None = None) -> Project:
        """The project of the path (or ``project_id``) in this workspace, else 404."""
        pid = project_id if project_id is not None else self.params["project_id"]
        p = self.core.state.project(self.ws.id, pid)
        if p is None:
            raise ApiError(404, "Project not found")
        return p

    def clip(self) -> tuple[Clip, Project]:
        """The published clip of the path and its project, in this workspace, else 404."""
        c = self.core.state.clip(self.ws.id, self.params["clip_id"])
        if c is None:
            raise ApiError(404, "Clip not found")
        return c, self.project(c.project_id)

    def export(self) -> Export:
        """The export of the path, in this workspace, else 404."""
        e = self.core.state.export(self.ws.id, self.params["export_id"])
        if e is None:
            raise ApiError(404, "Export not found")
        return e

    def presign_upload(self, prefix: str, filename: str, content_type: str) -> dict[str, Any]:
        """A presigned PUT for a new object under ``prefix`` (media, custom media, storage)."""
        stem = _UNSAFE.sub("_", filename).strip("._")[:120] or "file"
        key = f"{prefix}{self.core.state.new_id()}/{stem}"
        self.core.state.upload_slots[key] = UploadSlot(key, frozenset({content_type.lower()}))
        ttl = self.core.settings.upload_url_ttl
        url = self.core.presign_put(key, self.urls.storage_base)
        return {"upload_url": url, "url": url, "object_key": key, "expires_in": ttl}

    def throttle(self, checks: list[tuple[str, str, Limit]], message: str) -> None:
        """Count a hit on each (rule, subject, limit), or answer 429 with Retry-After."""
        wait = self.core.limiter.check_all(checks, now=self.now())
        if wait is not None:
            self.core.inspection.count("rate_limited")
            raise ApiError(429, message, headers={"Retry-After": str(wait)})


Handler = Callable[[Call], Awaitable[web.StreamResponse]]

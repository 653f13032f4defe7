"""CarmicClient: the only code that talks to the Carmic API.

One client per daemon. Every endpoint the pipeline uses is a method here; each returns a typed
model (or plain dicts where the reference leaves the shape open) and raises only
:mod:`watchd.carmic.errors` classes. Under the methods:

* auth (:mod:`.auth`): a token on every call, one refresh then one re-login on 401, single-flight;
* the workspace (:mod:`.workspaces`), resolved once from ``/v1/me``, sent as ``X-Workspace-ID``;
* envelope decoding (:mod:`.envelope`) into data or the exception tree;
* retries (:mod:`.retry`) for idempotent calls only: GETs, PUT clip, process, delete, cancel and
  the SSE ticket. Creating projects, rendering, retrying renders and creating exports are never
  repeated here: a lost answer may hide a success, and the pipeline reconciles those;
* pacing (:mod:`.pacing`) of project creations and exports so the per-minute limits never bite;
* storage transfers (:mod:`.transfer`) and SSE streams (:mod:`.sse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import quote

import httpx

from watchd.carmic.auth import Password, Session
from watchd.carmic.envelope import Envelope, decode, error_from_response
from watchd.carmic.errors import AuthError, CarmicError, RateLimited, ServerError
from watchd.carmic.http import (
    API_LIMITS,
    API_TIMEOUT,
    STORAGE_LIMITS,
    STORAGE_TIMEOUT,
    ResponseHook,
    build_request,
    join_url,
    make_client,
    send,
)
from watchd.carmic.models import (
    JSON,
    ClipDetail,
    Export,
    ExportJob,
    Me,
    Page,
    Project,
    ProjectCreated,
    ProjectStatus,
    RenderJob,
    RenderProgress,
    Workspace,
)
from watchd.carmic.pacing import BucketFactory, Pacer, local_bucket
from watchd.carmic.retry import RetryPolicy
from watchd.carmic.sse import StreamSettings, reconnecting_events
from watchd.carmic.transfer import (
    CHUNK_SIZE,
    DownloadResult,
    ExpectedFile,
    ProgressCallback,
    UploadResult,
    download_file,
    save_response,
    upload_file,
)
from watchd.carmic.workspaces import ME_ROUTE, choose_workspace
from watchd.clock import Clock, SystemClock
from watchd.redact import redact_url, register_secret

log = logging.getLogger("watchd.carmic")

RateLimitHook = Callable[[str, float | None], None]
T = TypeVar("T")

EXPORT_FORMATS = frozenset({"premiere", "davinci", "fcpx", "after_effects"})
# A listing walk stops here even if the server keeps saying has_more (a paging bug must not
# turn into an endless loop).
MAX_PAGES = 200
# At most this many API exchanges (SSE streams aside) and storage downloads on the wire at once;
# the rest wait here, in order. httpcore matches every queued request against every pooled
# connection on each pool operation: a thousand jobs asking at once made each request cost
# O(queue x pool), most of the daemon's CPU in a burst. Waiting on a semaphore costs nothing.
API_CONCURRENCY = 8
DOWNLOAD_CONCURRENCY = 4


def _items(data: Any, *keys: str) -> list[JSON]:
    """A list of objects from a payload that may be the list itself or wrap it under a key."""
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            lists = [v for v in data.values() if isinstance(v, list)]
            data = [x for v in lists for x in v]
    if not isinstance(data, list):
        return []
    return [x for x in data if isinstance(x, dict)]


def _obj(data: Any) -> JSON:
    return data if isinstance(data, dict) else {}


class CarmicClient:
    """An async client for the Carmic Pro API (one per daemon).

    ``http`` and ``storage_http`` may be injected (tests pass ``httpx.AsyncClient(transport=
    httpx.MockTransport(handler))``); injected clients are not closed by :meth:`aclose`. The
    storage client never carries our credentials. ``on_response(endpoint, status)`` sees every
    exchange (status ``"error"`` when no answer came), ``on_rate_limited(endpoint, retry_after)``
    every 429, ``on_login()`` every password login. ``bucket_factory(workspace id, kind,
    per_minute, clock)`` builds the pace of project creations and exports per workspace: by
    default a :class:`~watchd.carmic.pacing.TokenBucket` in this process; hosts sharing a
    workspace pass one whose state is shared (``watchd.cluster.pace.shared_buckets``).

    ``before_request``, when set, is awaited before every request goes out: with several hosts
    (``[cluster]``) it holds a request back while this daemon's leases need renewing, and
    raises for a job this daemon no longer holds (see watchd/cluster/lease.py).
    """

    before_request: Callable[[], Awaitable[None]] | None = None

    def __init__(
        self,
        api_url: str,
        email: str,
        password: Password,
        workspace: str = "",
        *,
        http: httpx.AsyncClient | None = None,
        storage_http: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        creates_per_minute: float = 5,
        exports_per_minute: float = 5,
        logins_per_minute: float = 3,
        on_response: ResponseHook | None = None,
        on_rate_limited: RateLimitHook | None = None,
        on_login: Callable[[], None] | None = None,
        ca_file: str = "",
        rng: random.Random | None = None,
        stream_settings: StreamSettings | None = None,
        upload_chunk_size: int = CHUNK_SIZE,
        bucket_factory: BucketFactory | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.email = email
        if isinstance(password, str):
            register_secret(password)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._retry = retry if retry is not None else RetryPolicy()
        self._rng = rng if rng is not None else random.Random()
        self._own_http = http is None
        self._http = (
            http
            if http is not None
            else make_client(timeout=API_TIMEOUT, limits=API_LIMITS, ca_file=ca_file)
        )
        self._own_storage = storage_http is None
        self._storage = (
            storage_http
            if storage_http is not None
            else make_client(timeout=STORAGE_TIMEOUT, limits=STORAGE_LIMITS, ca_file=ca_file)
        )
        self._on_response = on_response
        self._on_rate_limited = on_rate_limited
        self._stream_settings = stream_settings or StreamSettings()
        self._chunk = upload_chunk_size
        self._wanted_workspace = workspace
        self._workspace: Workspace | None = None
        self._workspace_lock = asyncio.Lock()
        self._creates_per_minute = creates_per_minute
        self._exports_per_minute = exports_per_minute
        self._bucket_factory: BucketFactory = bucket_factory or local_bucket
        self._buckets: dict[tuple[str, str], Pacer] = {}
        self._api_gate = asyncio.Semaphore(API_CONCURRENCY)
        self._download_gate = asyncio.Semaphore(DOWNLOAD_CONCURRENCY)
        self.session = Session(
            email,
            password,
            post=self._post_public,
            clock=self._clock,
            logins_per_minute=logins_per_minute,
            on_login=on_login,
        )

    def __repr__(self) -> str:
        return f"<CarmicClient {self.api_url} {self.email}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP clients this object created (injected ones belong to the caller)."""
        if self._own_http:
            await self._http.aclose()
        if self._own_storage:
            await self._storage.aclose()

    # ---- plumbing --------------------------------------------------------------------------

    def _path(self, route: str, ids: Mapping[str, str]) -> str:
        # IDs come from the server; quoting keeps a strange one from reaching another route.
        return route.format(**{k: quote(str(v), safe="") for k, v in ids.items()})

    async def _bucket(self, kind: str) -> Pacer:
        # Limits are per workspace: resolve it before choosing the bucket.
        workspace = (await self.resolve_workspace()).id
        key = (kind, workspace)
        if key not in self._buckets:
            rate = self._creates_per_minute if kind == "creates" else self._exports_per_minute
            self._buckets[key] = self._bucket_factory(workspace, kind, rate, self._clock)
        return self._buckets[key]

    async def pace_wait(self, kind: str) -> float:
        """Seconds until the next call paced as ``kind`` ("creates", "exports") may go."""
        return (await self._bucket(kind)).wait_time()

    def _note_error(self, error: CarmicError, bucket: Pacer | None) -> None:
        if isinstance(error, RateLimited):
            log.info("rate-limited on %s (Retry-After %s)", error.endpoint, error.retry_after)
            if self._on_rate_limited is not None:
                self._on_rate_limited(error.endpoint, error.retry_after)
            if bucket is not None:
                bucket.block_for(error.retry_after if error.retry_after is not None else 60.0)

    async def _authorized(
        self, request: httpx.Request, endpoint: str, *, stream: bool = False
    ) -> httpx.Response:
        """Send with a bearer token; on 401 refresh once, then log in again, then give up."""
        token = await self.session.token()
        for recovery in range(3):
            request.headers["Authorization"] = f"Bearer {token}"
            response = await self._send(request, endpoint, stream=stream)
            if response.status_code != 401:
                return response
            await response.aread()
            await response.aclose()
            if recovery == 2:
                error = error_from_response(response, endpoint=endpoint, now=self._clock.now())
                raise AuthError(
                    f"Carmic still refuses our token after a fresh login: {error.message}",
                    status=401,
                    endpoint=endpoint,
                )
            token = await self.session.recover(token, relogin=recovery == 1)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self,
        method: str,
        route: str,
        *,
        ids: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        scoped: bool = True,
        public: bool = False,
        stream: bool = False,
    ) -> httpx.Response:
        """One exchange: workspace header, credentials, foreign errors translated."""
        if self.before_request is not None:
            await self.before_request()
        headers = {"Accept": "application/json"}
        if scoped:
            headers["X-Workspace-ID"] = (await self.resolve_workspace()).id
        request = build_request(
            self._http,
            method,
            join_url(self.api_url, self._path(route, ids or {})),
            json=json,
            params={k: v for k, v in (params or {}).items() if v is not None} or None,
            headers=headers,
        )
        if public:
            return await self._send(request, route, stream=stream)
        return await self._authorized(request, route, stream=stream)

    async def _send(
        self, request: httpx.Request, endpoint: str, *, stream: bool = False
    ) -> httpx.Response:
        # A streamed answer is read after this returns (an SSE stream for minutes): only whole
        # exchanges pass the gate, so a held slot always comes back.
        gate = contextlib.nullcontext() if stream else self._api_gate
        async with gate:
            return await send(
                self._http, request, endpoint=endpoint, stream=stream, on_response=self._on_response
            )

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        what: str,
        idempotent: bool = True,
        bucket: Pacer | None = None,
    ) -> T:
        """Run ``attempt`` until it succeeds, retrying transient failures per the policy (only
        when ``idempotent``); every 429 is reported and holds the pacing ``bucket`` back."""
        n = 0
        while True:
            n += 1
            try:
                return await attempt()
            except CarmicError as e:
                self._note_error(e, bucket)
                wait = self._retry.wait_for(e, n, self._rng) if idempotent else None
                if wait is None:
                    raise
                log.info(
                    "%s failed (%s); retry %d of %d in %.1fs",
                    what,
                    e,
                    n,
                    self._retry.attempts - 1,
                    wait,
                )
                await self._clock.sleep(wait)

    async def _call(
        self,
        method: str,
        route: str,
        *,
        ids: Mapping[str, str] | None = None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        scoped: bool = True,
        public: bool = False,
        idempotent: bool = True,
        pace: str | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> Envelope:
        """A decoded call, retried per the policy when it is idempotent. ``before_send`` runs
        after the pace wait, just before the request goes; if it raises, nothing is sent and
        the pace token is given back."""
        bucket = await self._bucket(pace) if pace else None
        if bucket is not None:
            waited = await bucket.acquire()
            if waited > 0:
                # A wait worth a line at INFO is one a person would notice.
                log.log(
                    logging.INFO if waited >= 1.0 else logging.DEBUG,
                    "paced %s: waited %.1fs (at most %s per minute)",
                    route,
                    waited,
                    bucket.per_minute,
                )
        if before_send is not None:
            try:
                before_send()
            except BaseException:
                if bucket is not None:
                    bucket.give_back()
                raise

        async def attempt() -> Envelope:
            response = await self._request(
                method, route, ids=ids, json=json, params=params, scoped=scoped, public=public
            )
            return decode(response, endpoint=route, now=self._clock.now())

        return await self._retrying(
            attempt, what=f"{method} {route}", idempotent=idempotent, bucket=bucket
        )

    async def _post_public(self, route: str, body: JSON) -> Any:
        # Login and refresh: no token, no workspace, and no blind retries (the session decides).
        env = await self._call(
            "POST", route, json=body, scoped=False, public=True, idempotent=False
        )
        return env.data

    # ---- profile and workspace -------------------------------------------------------------

    async def me(self) -> Me:
        """The user and the workspaces they belong to (``GET /v1/me``)."""
        env = await self._call("GET", ME_ROUTE, scoped=False)
        return Me.from_api(_obj(env.data))

    @contextlib.contextmanager
    def retrying_as(self, policy: RetryPolicy) -> Iterator[None]:
        """Calls made inside retry per ``policy`` (a caller with a retry loop of its own, such
        as the daemon's login at start, wants to hear of each failure at once)."""
        old, self._retry = self._retry, policy
        try:
            yield
        finally:
            self._retry = old

    async def resolve_workspace(self) -> Workspace:
        """The configured workspace (by UUID or name; empty = the first), resolved once."""
        if self._workspace is not None:
            return self._workspace
        async with self._workspace_lock:
            if self._workspace is None:
                me = await self.me()
                self._workspace = choose_workspace(me, self._wanted_workspace)
                log.info("using workspace %r (%s)", self._workspace.name, self._workspace.id)
            return self._workspace

    @property
    def workspace(self) -> Workspace | None:
        return self._workspace

    @property
    def workspace_id(self) -> str | None:
        """The resolved workspace's UUID (``None`` before :meth:`resolve_workspace`)."""
        return self._workspace.id if self._workspace else None

    async def health(self) -> JSON:
        """``GET /v1/health`` (public)."""
        env = await self._call("GET", "/v1/health", scoped=False, public=True)
        return _obj(env.data)

    # ---- projects --------------------------------------------------------------------------

    async def create_project(
        self,
        *,
        filename: str,
        filesize: int,
        content_type: str = "video/mp4",
        duration: float | None = None,
        title: str | None = None,
        language: str | None = None,
        language_mode: str | None = None,
        video_type: str | None = None,
        enable_multimodal: bool | None = None,
        custom_instructions: str | None = None,
        trim_start: float | None = None,
        trim_end: float | None = None,
        before_send: Callable[[], None] | None = None,
    ) -> ProjectCreated:
        """``POST /v1/projects/create``: a project and its presigned upload URL. Paced; never
        retried (a lost answer may hide a billed project: the pipeline searches for it).
        ``before_send`` runs after the pace wait, just before the request goes (a cluster
        node checks there that it still holds the job's lease); raising, it stops the call."""
        fields: dict[str, Any] = {
            "filename": filename,
            "filesize": filesize,
            "content_type": content_type,
            "duration": duration,
            "title": title,
            "language": language,
            "language_mode": language_mode,
            "video_type": video_type,
            "enable_multimodal": enable_multimodal,
            "custom_instructions": custom_instructions,
            "trim_start": trim_start,
            "trim_end": trim_end,
        }
        body = {k: v for k, v in fields.items() if v is not None}
        env = await self._call(
            "POST",
            "/v1/projects/create",
            json=body,
            idempotent=False,
            pace="creates",
            before_send=before_send,
        )
        created = ProjectCreated.from_api(_obj(env.data))
        if not created.project_id or not created.upload_url:
            raise ServerError(
                "the create answer lacks project_id or upload_url", endpoint="/v1/projects/create"
            )
        return created

    async def process_project(self, pid: str) -> JSON:
        """``POST /v1/projects/{id}/process``: start ingestion after the upload."""
        env = await self._call("POST", "/v1/projects/{id}/process", ids={"id": pid})
        return _obj(env.data)

    async def project_status(self, pid: str) -> ProjectStatus:
        """``GET /v1/projects/{id}/status``."""
        env = await self._call("GET", "/v1/projects/{id}/status", ids={"id": pid})
        data = _obj(env.data)
        return ProjectStatus.from_api({"id": pid, **data})

    async def get_project(self, pid: str) -> Project:
        """``GET /v1/projects/{id}``: the record and its clips."""
        env = await self._call("GET", "/v1/projects/{id}", ids={"id": pid})
        return Project.from_api({"id": pid, **_obj(env.data)})

    async def list_projects(
        self,
        *,
        search: str | None = None,
        status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> Page:
        """``GET /v1/projects``: one page."""
        params = {"limit": limit, "offset": offset, "search": search or None, "status": status}
        env = await self._call("GET", "/v1/projects", params=params)
        return Page.from_api(_items(env.data, "projects", "items", "results"), env.meta)

    async def find_projects(self, search: str) -> list[JSON]:
        """Every project whose listing matches ``search``, across all pages."""
        found: list[JSON] = []
        seen: set[str] = set()
        offset = 0
        for _ in range(MAX_PAGES):
            page = await self.list_projects(search=search, limit=100, offset=offset)
            for item in page.items:
                key = str(item.get("id") or item.get("project_id") or id(item))
                if key not in seen:
                    seen.add(key)
                    found.append(item)
            if not page.has_more or not page.items:
                break
            offset += len(page.items)
        return found

    async def delete_project(self, pid: str) -> None:
        """``DELETE /v1/projects/{id}`` (soft delete, storage purged)."""
        await self._call("DELETE", "/v1/projects/{id}", ids={"id": pid})

    async def cancel_project(self, pid: str) -> None:
        """``POST /v1/projects/{id}/cancel``."""
        await self._call("POST", "/v1/projects/{id}/cancel", ids={"id": pid})

    async def caption_templates(self) -> list[JSON]:
        """``GET /v1/projects/caption-templates``."""
        env = await self._call("GET", "/v1/projects/caption-templates")
        return _items(env.data, "templates", "caption_templates", "items", "results")

    async def templates(self, ratio: str | None = None) -> list[JSON]:
        """``GET /v1/templates/?ratio=``: system and workspace templates."""
        env = await self._call("GET", "/v1/templates/", params={"ratio": ratio})
        return _items(env.data, "templates", "items", "results")

    # ---- clips and renders -----------------------------------------------------------------

    async def get_clip(self, cid: str) -> ClipDetail:
        """``GET /v1/clips/{id}``: the editor hydration payload."""
        env = await self._call("GET", "/v1/clips/{id}", ids={"id": cid})
        data = _obj(env.data)
        return ClipDetail.from_api(data if "id" in data or "clip" in data else {"id": cid, **data})

    async def put_clip(self, cid: str, template_config: Mapping[str, Any]) -> JSON:
        """``PUT /v1/clips/{id}``: save the editor state (a whole TemplateConfig)."""
        env = await self._call("PUT", "/v1/clips/{id}", ids={"id": cid}, json=dict(template_config))
        return _obj(env.data)

    async def render_clip(self, cid: str) -> RenderJob:
        """``POST /v1/clips/{id}/render``: queue the final render (bills minutes; not retried)."""
        env = await self._call("POST", "/v1/clips/{id}/render", ids={"id": cid}, idempotent=False)
        data = _obj(env.data)
        return RenderJob.from_api({"clip_id": cid, **data})

    async def retry_render(self, cid: str) -> JSON:
        """``POST /v1/clips/{id}/retry-render`` (not retried)."""
        env = await self._call(
            "POST", "/v1/clips/{id}/retry-render", ids={"id": cid}, idempotent=False
        )
        return _obj(env.data)

    async def render_progress(self, cid: str) -> RenderProgress:
        """``GET /v1/clips/{id}/render-progress``."""
        env = await self._call("GET", "/v1/clips/{id}/render-progress", ids={"id": cid})
        return RenderProgress.from_api(_obj(env.data))

    async def _clip_video(self, cid: str) -> httpx.Response:
        """``GET /v1/clips/{id}/video`` left streaming (302 to storage, or the MP4 itself)."""
        route = "/v1/clips/{id}/video"

        async def attempt() -> httpx.Response:
            response = await self._request("GET", route, ids={"id": cid}, stream=True)
            if response.is_redirect or response.is_success:
                return response
            await response.aread()
            await response.aclose()
            raise error_from_response(response, endpoint=route, now=self._clock.now())

        return await self._retrying(attempt, what=f"GET {route}")

    async def clip_video_location(self, cid: str) -> str:
        """Where the rendered MP4 is: the 302's Location (a presigned storage URL). Raises
        :class:`NotFound` until the clip is rendered. When the API serves the MP4 itself, this
        is the API's own ``/video`` URL (which needs our credentials)."""
        response = await self._clip_video(cid)
        await response.aclose()
        if response.is_redirect:
            return _redirect_target(response)
        return str(response.url)

    async def download_clip_video(self, cid: str, dest: Path) -> DownloadResult:
        """The rendered MP4 of clip ``cid`` into ``dest`` (atomically). The redirect to storage
        is followed here, without our Authorization or workspace headers."""
        response = await self._clip_video(cid)
        if response.is_redirect:
            await response.aclose()
            return await self.download(_redirect_target(response), dest)
        return await save_response(response, dest, url=str(response.url))

    # ---- exports ---------------------------------------------------------------------------

    async def create_export(
        self,
        cid: str,
        fmt: str,
        include_proxy: bool = False,
        *,
        before_send: Callable[[], None] | None = None,
    ) -> ExportJob:
        """``POST /v1/clips/{id}/exports``: an NLE bundle (paced; not retried). ``before_send``
        as for :meth:`create_project`."""
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown export format {fmt!r} (one of {sorted(EXPORT_FORMATS)})")
        env = await self._call(
            "POST",
            "/v1/clips/{id}/exports",
            ids={"id": cid},
            json={"target_format": fmt, "include_proxy": include_proxy},
            idempotent=False,
            pace="exports",
            before_send=before_send,
        )
        return ExportJob.from_api(_obj(env.data))

    async def get_export(self, eid: str) -> Export:
        """``GET /v1/exports/{id}``."""
        env = await self._call("GET", "/v1/exports/{id}", ids={"id": eid})
        return Export.from_api({"id": eid, **_obj(env.data)})

    async def list_exports(self, cid: str) -> list[Export]:
        """``GET /v1/clips/{id}/exports``."""
        env = await self._call("GET", "/v1/clips/{id}/exports", ids={"id": cid})
        return [Export.from_api(x) for x in _items(env.data, "exports", "items", "results")]

    # ---- realtime --------------------------------------------------------------------------

    async def _ticket(self, *, retry: bool) -> str:
        env = await self._call("POST", "/v1/sse-ticket", idempotent=retry)
        data = env.data
        ticket = data.get("ticket") if isinstance(data, dict) else data
        if not isinstance(ticket, str) or not ticket:
            raise ServerError("the SSE ticket answer carries no ticket", endpoint="/v1/sse-ticket")
        return ticket

    async def sse_ticket(self) -> str:
        """A single-use, 30-second SSE ticket (bare ``{"ticket"}`` or inside ``data``)."""
        return await self._ticket(retry=True)

    def _events(self, route: str, rid: str) -> AsyncIterator[JSON]:
        async def ticket() -> str:
            # The stream counts its own failures; a retried ticket would double the waiting.
            return await self._ticket(retry=False)

        def url_for(t: str) -> str:
            return f"{self.api_url}{self._path(route, {'id': rid})}?ticket={quote(t, safe='')}"

        return reconnecting_events(
            self._http,
            ticket=ticket,
            url_for=url_for,
            endpoint=route,
            clock=self._clock,
            policy=self._retry,
            rng=self._rng,
            settings=self._stream_settings,
            on_response=self._on_response,
        )

    def project_events(self, pid: str) -> AsyncIterator[JSON]:
        """Live ingestion progress of a project: status dicts, reconnecting as needed; raises
        :class:`TransientError` after repeated failed connections (then poll instead)."""
        return self._events("/v1/projects/{id}/stream", pid)

    def export_events(self, eid: str) -> AsyncIterator[JSON]:
        """Live progress of an NLE export (like :meth:`project_events`)."""
        return self._events("/v1/exports/{id}/stream", eid)

    # ---- storage ---------------------------------------------------------------------------

    async def upload(
        self,
        url: str,
        path: Path,
        content_type: str,
        *,
        expect: ExpectedFile | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """PUT a file to its presigned URL (see :func:`watchd.carmic.transfer.upload_file`).
        Not retried here: the pipeline restarts an upload from the start when it must."""
        return await upload_file(
            self._storage,
            url,
            Path(path),
            content_type,
            expect=expect,
            progress=progress,
            chunk_size=self._chunk,
            now=self._clock.now,
            on_response=self._on_response,
        )

    async def download(
        self, url: str, dest: Path, *, expected_size: int | None = None
    ) -> DownloadResult:
        """GET a presigned storage URL into ``dest`` atomically; transient failures retried."""

        async def attempt() -> DownloadResult:
            async with self._download_gate:
                return await download_file(
                    self._storage,
                    url,
                    Path(dest),
                    expected_size=expected_size,
                    now=self._clock.now,
                    on_response=self._on_response,
                )

        return await self._retrying(attempt, what=f"download of {redact_url(url)}")


def _redirect_target(response: httpx.Response) -> str:
    """Where a redirect leads: an absolute ``Location`` as the server wrote it (a presigned URL
    is signed over its exact bytes, and parsing it costs more than the rest of the hop), a
    relative one joined to the request's URL."""
    location = response.headers["Location"]
    if location[:8].lower().startswith(("http://", "https://")):
        return str(location)
    return str(response.url.join(location))

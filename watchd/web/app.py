"""The dashboard's routes and its server, on the daemon's own event loop (aiohttp).

``GET /`` the queue, ``GET /jobs/{id}`` one job, ``GET /api/jobs`` the same JSON array as
``watchd status --json``, ``POST /api/jobs/{id}/retry|forget`` as the CLI commands, ``GET
/events`` the live feed (server-sent events: ``changed`` when jobs changed; the page then fetches
its ``/fragments/...`` again), files from a job's outbox folder under ``/jobs/{id}/files/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web
from markupsafe import Markup

from watchd import __version__
from watchd.config import ConfigError
from watchd.ledger.db import Ledger, LedgerError
from watchd.redact import redact, register_secret
from watchd.represet import retry_job
from watchd.web import views
from watchd.web.feed import ANY_JOB, ChangeFeed, TooManySubscribers
from watchd.web.files import job_file
from watchd.web.security import (
    SESSION_COOKIE,
    Guard,
    allowed_hosts,
    guard_middleware,
)
from watchd.web.settings import WebConfig, is_loopback

log = logging.getLogger("watchd.web")

HERE = Path(__file__).parent
KEEPALIVE = 15.0  # seconds between SSE comments on an idle page
# An open page is sent its next update no sooner than this many times what rendering its live
# part last cost: a busy daemon spends at most about a tenth of a core on each open page.
COST_FACTOR = 10.0
OTHERS_EVERY = 2.0  # seconds between looks for another process's writes, while a page is open


class RenderCost:
    """What rendering a page's live part costs, smoothed over the last few renders."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def add(self, seconds: float) -> None:
        self.seconds = seconds if not self.seconds else 0.7 * self.seconds + 0.3 * seconds


HTMX_VERSION = "2.0.11"
GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
FEED: web.AppKey[ChangeFeed] = web.AppKey("feed", ChangeFeed)
SOURCE: web.AppKey[views.DashboardSource] = web.AppKey("source")
ENV: web.AppKey[jinja2.Environment] = web.AppKey("env", jinja2.Environment)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock")
COST: web.AppKey[RenderCost] = web.AppKey("cost", RenderCost)


def _finalize(value: Any) -> Any:
    """Every value a template prints passes the redaction (presigned query strings, JWTs,
    bearer tokens, known secrets); markup built by the templates themselves is left alone."""
    if value is None:
        return ""
    if isinstance(value, Markup | int | float):
        return value
    return redact(str(value))


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # Percent-encoded text has no character HTML would need escaped: marked safe, it skips the
    # redaction too (a name in a URL path is no secret, and the page shows it in clear anyway).
    env.filters["urlpart"] = lambda s: Markup(quote(str(s), safe=""))
    env.globals["htmx_version"] = HTMX_VERSION
    env.globals["version"] = __version__
    return env


def build_app(
    source: views.DashboardSource,
    guard: Guard,
    feed: ChangeFeed,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    app = web.Application(middlewares=[guard_middleware(guard)], client_max_size=64 * 1024)
    app[GUARD] = guard
    app[FEED] = feed
    app[SOURCE] = source
    app[ENV] = make_env()
    app[CLOCK] = clock
    app[COST] = RenderCost()
    app.router.add_get("/", queue_page)
    app.router.add_get("/fragments/queue", queue_fragment)
    app.router.add_get("/jobs/{id}", job_page)
    app.router.add_get("/fragments/jobs/{id}", job_fragment)
    app.router.add_get("/jobs/{id}/files/{name:.+}", job_file_route)
    app.router.add_get("/api/jobs", api_jobs)
    app.router.add_post("/api/jobs/{id}/retry", api_retry)
    app.router.add_post("/api/jobs/{id}/forget", api_forget)
    app.router.add_get("/events", events)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_static("/static/", HERE / "static", follow_symlinks=False)
    return app


# ---- helpers -----------------------------------------------------------------------------------


def _ledger(request: web.Request) -> Ledger:
    ledger = request.app[SOURCE].ledger
    if ledger is None:
        raise web.HTTPServiceUnavailable(text="the ledger is not open yet\n")
    return ledger


def _render(request: web.Request, template: str, **context: Any) -> web.Response:
    env = request.app[ENV]
    csrf = Markup(request.app[GUARD].csrf)  # URL-safe base64: nothing to escape or redact
    text = env.get_template(template).render(csrf=csrf, **context)
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _job(request: web.Request) -> Any:
    job = _ledger(request).get(request.match_info["id"])
    if job is None:
        raise web.HTTPNotFound(text=f"unknown job {request.match_info['id']}\n")
    return job


def _queue(request: web.Request) -> views.QueueView:
    filters = views.parse_filters(request.query)
    now = request.app[CLOCK]()
    return views.queue_view(_ledger(request), request.app[SOURCE], filters, now)


# ---- pages -------------------------------------------------------------------------------------


async def queue_page(request: web.Request) -> web.Response:
    return _render(request, "queue.html", view=_queue(request))


async def queue_fragment(request: web.Request) -> web.Response:
    started = time.perf_counter()
    response = _render(request, "_queue_live.html", view=_queue(request))
    request.app[COST].add(time.perf_counter() - started)
    return response


def _job_view(request: web.Request) -> views.JobView:
    return views.job_view(
        _ledger(request), request.app[SOURCE], _job(request), request.app[CLOCK]()
    )


async def job_page(request: web.Request) -> web.Response:
    return _render(request, "job.html", view=_job_view(request))


async def job_fragment(request: web.Request) -> web.Response:
    if _ledger(request).get(request.match_info["id"]) is None:
        # Forgotten (from another page or the CLI) while its page was open: to the queue.
        return web.Response(status=404, text="no such job any more\n", headers={"HX-Redirect": "/"})
    return _render(request, "_job_live.html", view=_job_view(request))


async def job_file_route(request: web.Request) -> web.StreamResponse:
    path = job_file(_job(request), request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound(text="no such file in the job's outbox folder\n")
    return web.FileResponse(path)


# ---- API ---------------------------------------------------------------------------------------


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    return value


async def api_jobs(request: web.Request) -> web.Response:
    data = _scrubbed(views.job_json_list(_ledger(request)))
    return web.Response(text=json.dumps(data, indent=2), content_type="application/json")


def _after_change(request: web.Request, body: dict[str, Any], back: str) -> web.Response:
    """JSON for API callers and the page's own buttons (the live feed then shows the change;
    a job page whose job was forgotten goes to the queue); a plain form post goes back."""
    if request.headers.get("HX-Request") == "true":
        on_job_page = urlsplit(request.headers.get("HX-Current-URL", "")).path.startswith("/jobs/")
        headers = {"HX-Redirect": back} if back == "/" and on_job_page else {}
        return web.json_response(body, headers=headers)
    if request.content_type == "application/x-www-form-urlencoded":
        return web.Response(status=303, headers={"Location": back})
    return web.json_response(body)


async def _operator_command(request: web.Request, action: str) -> web.Response:
    """``retry`` or ``forget``: the ledger calls ``watchd retry``/``watchd forget`` make, with
    their rules (404 unknown job, 409 not in a state the command takes)."""
    ledger = _ledger(request)
    job_id = request.match_info["id"]
    if ledger.get(job_id) is None:
        return web.json_response({"error": f"unknown job {job_id}"}, status=404)
    said = ""
    try:
        if action == "retry":
            # As `watchd retry`: a job that has not rendered takes its rule's current preset.
            cfg = getattr(request.app[SOURCE], "config", None)
            if cfg is not None:
                said = retry_job(ledger, cfg, job_id, actor="web")
                state = ledger.require(job_id).state
            else:
                state = ledger.retry(job_id, actor="web").state
        else:
            ledger.forget(job_id, actor="web")
    except (LedgerError, ConfigError) as e:
        return web.json_response({"error": str(e)}, status=409)
    if action == "retry":
        log.info(
            "web: %s", said or f"{job_id}: back in the queue at {state}", extra={"job_id": job_id}
        )
        return _after_change(request, {"id": job_id, "state": state}, f"/jobs/{quote(job_id)}")
    log.info("web: job %s forgotten", job_id, extra={"job_id": job_id})
    return _after_change(request, {"id": job_id, "forgotten": True}, "/")


async def api_retry(request: web.Request) -> web.Response:
    return await _operator_command(request, "retry")


async def api_forget(request: web.Request) -> web.Response:
    return await _operator_command(request, "forget")


# ---- live feed ---------------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``changed`` (data: how many jobs) whenever jobs the page shows may
    have changed; with ``?job=ID`` only for that job."""
    only = request.query.get("job")
    try:
        sub = request.app[FEED].subscribe()
    except TooManySubscribers as e:
        raise web.HTTPServiceUnavailable(text=f"{e}\n") from None
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n: connected\n\n")
        while True:
            ids = await sub.wait(KEEPALIVE)
            if ids is None:
                break
            if only is not None:
                ids = {i for i in ids if i in (only, ANY_JOB)}
            if ids:
                await response.write(f"event: changed\ndata: {len(ids)}\n\n".encode())
                # Changes meanwhile gather in the subscription and go out together after.
                await asyncio.sleep(COST_FACTOR * request.app[COST].seconds)
            else:
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the page went away
    finally:
        sub.close()
    return response


# ---- login (only needed on a non-loopback address) ---------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    return _render(request, "login.html", failed=False, needed=request.app[GUARD].token is not None)


async def login_submit(request: web.Request) -> web.Response:
    guard = request.app[GUARD]
    form = await request.post()
    sent = form.get("token")
    if not (isinstance(sent, str) and guard.token_ok(sent)):
        response = _render(request, "login.html", failed=True, needed=guard.token is not None)
        response.set_status(401)
        return response
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(
        SESSION_COOKIE, guard.session_value(), httponly=True, samesite="Strict", path="/"
    )
    return response


# ---- the server --------------------------------------------------------------------------------


class WebServer:
    """The dashboard inside the daemon: :meth:`start` binds and serves on the running loop;
    :meth:`close` ends the live feeds and stops serving."""

    def __init__(
        self,
        config: WebConfig,
        source: views.DashboardSource,
        *,
        clock: Callable[[], float] = time.time,
        interval: float | None = None,
        others_every: float = OTHERS_EVERY,
    ) -> None:
        from watchd.service.metrics import parse_address

        self.config = config
        self.source = source
        self.host, self.port = parse_address(config.listen)
        token = config.token.reveal() if config.token is not None else None
        register_secret(token)
        self.guard = Guard(
            hosts=frozenset(), token=token, pages_need_token=not is_loopback(self.host)
        )
        self.feed: ChangeFeed | None = None
        self._clock = clock
        self._interval = interval
        self._others_every = others_every
        self._others: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.feed = (
            ChangeFeed(loop)
            if self._interval is None
            else ChangeFeed(loop, interval=self._interval)
        )
        app = build_app(self.source, self.guard, self.feed, clock=self._clock)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self.guard.hosts = allowed_hosts(self.host, self.port)
        self._others = asyncio.create_task(self._watch_others(), name="watchd-web-others")
        log.info("dashboard at %s", self.url)

    async def _watch_others(self) -> None:
        """What does not pass the ledger's hook, looked at every few seconds while a page is
        open: writes by another process (``watchd retry``, ``watchd forget``; SQLite's
        ``data_version`` moves only when another connection commits), and the banners' state
        (failing notifiers, paused inboxes, the start)."""
        last: tuple[Any, ...] | None = None
        while True:
            await asyncio.sleep(self._others_every)
            ledger = self.source.ledger
            if ledger is None or self.feed is None or not self.feed.subscribers:
                last = None
                continue
            src = self.source
            version = ledger.query("PRAGMA data_version")[0][0]
            banners = (src.starting(), src.paused_inboxes(), src.notifier_problems())
            if last is not None and version != last[0]:
                self.feed.note(ANY_JOB)
            elif last is not None and banners != last[1]:
                self.feed.note("")
            last = (version, banners)

    def note(self, job_id: str) -> None:
        """The ledger's change hook (``Ledger.on_change``)."""
        if self.feed is not None:
            self.feed.note(job_id)

    async def close(self) -> None:
        if self._others is not None:
            self._others.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._others
            self._others = None
        if self.feed is not None:
            self.feed.close()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None


async def start_for_daemon(daemon: Any) -> WebServer | None:
    """Serve the dashboard for a starting daemon (its ledger open) and feed it the ledger's
    changes. A dashboard that cannot bind is logged and left out: the watch folders matter more."""
    from watchd.web.source import DaemonSource

    server = WebServer(daemon.config.web, DaemonSource(daemon), clock=daemon.clock.now)
    try:
        await server.start()
    except OSError as e:
        log.error(
            "dashboard: cannot listen on %s (%s); running without it", daemon.config.web.listen, e
        )
        await server.close()
        return None
    daemon.ledger.on_change = server.note
    return server

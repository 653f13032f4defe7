"""The API origin: ``http://H:P/api``, endpoints under ``/api/v1/``.

One catch-all aiohttp route hands every request to :func:`_dispatch`, which matches the route
table, injects the request-level faults, authenticates (JWT, then ``X-Workspace-ID``), runs
the handler and renders :class:`ApiError` as the reference's error envelope. Every request is
recorded for inspection.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from watchd.emulator import (
    routes_auth,
    routes_clips,
    routes_exports,
    routes_misc,
    routes_projects,
    routes_sse,
)
from watchd.emulator.auth import TokenError
from watchd.emulator.call import Call, Handler
from watchd.emulator.control import apply_changes
from watchd.emulator.core import Core
from watchd.emulator.engine import Engine
from watchd.emulator.envelope import ApiError, Dropped, error_response, read_json
from watchd.emulator.inspection import build_snapshot
from watchd.emulator.router import Access, Router

__all__ = ["build_api_app", "build_router"]

log = logging.getLogger(__name__)

PREFIX = "/api"
INSPECT_PREFIX = "/api/_emulator/"
_ERROR_STATUSES = (500, 502, 503)

_CORE = web.AppKey("core", Core)
_ENGINE = web.AppKey("engine", Engine)
_ROUTER = web.AppKey("router", Router[Handler])


def build_router() -> Router[Handler]:
    """Every endpoint of the reference, in matching order."""
    router: Router[Handler] = Router()
    routes_auth.register(router)
    routes_projects.register(router)
    routes_clips.register(router)
    routes_exports.register(router)
    routes_sse.register(router)
    routes_misc.register(router)
    return router


def _authenticate(call: Call, access: Access) -> None:
    core = call.core
    header = call.request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header:
        raise ApiError(401, "Authentication credentials were not provided")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Invalid Authorization header: expected 'Bearer <access token>'")
    try:
        claims = core.tokens.check(token.strip(), "access", now=core.now())
    except TokenError as e:
        raise ApiError(401, str(e)) from None
    user = core.state.users.get(claims.user_id)
    if user is None:
        raise ApiError(401, "User not found")
    call.user = user
    if access is not Access.WORKSPACE:
        return
    workspace_id = call.request.headers.get("X-Workspace-ID", "").strip()
    if not workspace_id:
        raise ApiError(403, "Workspace context required (X-Workspace-ID)")
    if core.state.role(user.id, workspace_id) is None:
        raise ApiError(403, "You do not have access to this workspace")
    call.workspace = core.state.workspaces[workspace_id]


async def _inspect(core: Core, request: web.Request) -> web.StreamResponse:
    if not core.settings.inspect:
        raise ApiError(404, "Not Found")
    name = request.path[len(INSPECT_PREFIX) :].strip("/")
    if name == "state" and request.method in ("GET", "HEAD"):
        return web.json_response(build_snapshot(core))
    if name == "config" and request.method == "POST":
        body = await read_json(request)
        try:
            apply_changes(core, body)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        return web.json_response(build_snapshot(core)["settings"])
    raise ApiError(404, "Not Found")


async def _inject_faults(core: Core, request: web.Request) -> None:
    faults = core.settings.faults
    if faults.slow_seconds:
        # Latency is a property of the network, so it is real time whatever the clock says.
        await asyncio.sleep(faults.slow_seconds)
    if core.draw(faults.error_rate):
        status = core.fault_rng.choice(_ERROR_STATUSES)
        core.inspection.count("injected_errors")
        headers = {"Retry-After": "1"} if status == 503 else None
        raise ApiError(status, "Internal server error (injected fault)", headers=headers)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    core = request.app[_CORE]
    path = request.path
    if path.startswith(INSPECT_PREFIX):
        return await _inspect(core, request)
    if not path.startswith(PREFIX + "/"):
        raise ApiError(404, "Not Found")
    route, params = request.app[_ROUTER].match(request.method, path[len(PREFIX) :])
    await _inject_faults(core, request)
    call = Call(request, core, request.app[_ENGINE], params)
    if route.access in (Access.USER, Access.WORKSPACE):
        _authenticate(call, route.access)
    return await route.handler(call)


async def _handle(request: web.Request) -> web.StreamResponse:
    core = request.app[_CORE]
    status = 0
    started = core.now()  # an SSE stream is recorded when it ends: tests need when it began
    try:
        response = await _dispatch(request)
        status = response.status
        return response
    except ApiError as e:
        status = e.status
        return error_response(e.status, e.message, e.headers)
    except Dropped:
        return web.Response(status=499)  # never reaches the client: the transport is gone
    except Exception:
        log.exception("emulator handler failed: %s %s", request.method, request.path)
        status = 500
        return error_response(500, "Internal server error")
    finally:
        core.inspection.record_request(
            request, origin="api", status=status, t=core.now(), started=started
        )


def build_api_app(core: Core, engine: Engine) -> web.Application:
    """The API origin's aiohttp application."""
    app = web.Application(client_max_size=16 * 1024**2)
    app[_CORE] = core
    app[_ENGINE] = engine
    app[_ROUTER] = build_router()
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app

"""Realtime (§3.12): single-use SSE tickets and the project and export event streams."""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from aiohttp import web

from watchd.emulator.call import Call, Handler
from watchd.emulator.engine import export_topic, project_topic
from watchd.emulator.envelope import ApiError, ok
from watchd.emulator.router import Access, Router
from watchd.emulator.sse import StreamLimits, stream_events
from watchd.emulator.state import Export, Ticket
from watchd.emulator.views import export_out, project_status

__all__ = ["register"]


async def _sse_ticket(call: Call) -> web.StreamResponse:
    core = call.core
    token = secrets.token_urlsafe(32)
    ttl = core.settings.timings.ticket_ttl
    core.state.add_ticket(token, call.me.id, call.ws.id, call.now() + ttl)
    core.inspection.count("sse_tickets")
    payload = {"ticket": token, "expires_in": ttl}
    if core.settings.variants.sse_ticket == "bare":
        return web.json_response(payload)
    return ok(payload)


def _redeem(call: Call) -> Ticket:
    token = call.request.query.get("ticket", "")
    ticket = call.core.state.redeem_ticket(token, now=call.now()) if token else None
    if ticket is None:
        raise ApiError(401, "Invalid, used or expired SSE ticket")
    return ticket


def _limits(call: Call) -> StreamLimits:
    s = call.core.settings
    return StreamLimits(
        keepalive=s.timings.keepalive,
        cut_after_events=s.faults.sse_cut_after,
        cut_after_seconds=s.faults.sse_cut_after_seconds,
    )


def _count_event(call: Call) -> None:
    call.core.inspection.count("sse_events")


async def _project_stream(call: Call) -> web.StreamResponse:
    ticket = _redeem(call)
    p = call.core.state.project(ticket.workspace_id, call.params["project_id"])
    if p is None:
        raise ApiError(404, "Project not found")
    settings = call.core.settings

    def terminal(payload: dict[str, Any]) -> bool:
        status = str(payload["status"])
        ready = status == "CLIPS_READY" and payload["visual_pipeline_ready"]
        open_ended = settings.timings.complete_after is not None
        return (
            bool(payload.get("deleted"))
            or status.startswith("FAILED")
            or status == "COMPLETED"
            or (ready and not open_ended)
        )

    call.core.inspection.count("sse_connections")
    return await stream_events(
        call.request,
        call.core.hub,
        project_topic(p.id),
        project_status(p),
        lambda payload: payload,
        terminal,
        _limits(call),
        on_event=lambda: _count_event(call),
    )


async def _export_stream(call: Call) -> web.StreamResponse:
    ticket = _redeem(call)
    e = call.core.state.export(ticket.workspace_id, call.params["export_id"])
    if e is None:
        raise ApiError(404, "Export not found")
    urls = call.urls
    done = call.core.settings.variants.export_done_status

    def terminal(snapshot: Export) -> bool:
        return snapshot.status in ("FAILED", done)

    call.core.inspection.count("sse_connections")
    return await stream_events(
        call.request,
        call.core.hub,
        export_topic(e.id),
        dataclasses.replace(e),
        lambda snapshot: export_out(snapshot, urls),
        terminal,
        _limits(call),
        on_event=lambda: _count_event(call),
    )


def register(router: Router[Handler]) -> None:
    router.add("POST", "/v1/sse-ticket", _sse_ticket, Access.WORKSPACE)
    router.add("GET", "/v1/projects/{project_id}/stream", _project_stream, Access.TICKET)
    router.add("GET", "/v1/exports/{export_id}/stream", _export_stream, Access.TICKET)

"""One set of API-behaviour tests, run against every backend (see conftest.py).

Each test states something the daemon relies on, in the client's terms: the reference backend
proves the client reads the reference's own payloads, the emulator backend proves the emulator
behaves like the reference, so neither can drift without a failure here.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from typing import TypeVar

import pytest

from tests.contract.backends import Backend
from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import (
    AuthError,
    BillingRequired,
    ConcurrencyLimited,
    Conflict,
    NotFound,
    PayloadTooLarge,
)
from watchd.carmic.models import JSON, ProjectCreated, Tokens

T = TypeVar("T")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def eventually(
    get: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 15.0
) -> T:
    """Poll ``get`` until ``done`` (the emulator works in the background; the reference backend
    is done at the first look)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await get()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def created_and_uploaded(
    backend: Backend, client: CarmicClient, title: str = "Contract"
) -> ProjectCreated:
    created = await client.create_project(
        filename=backend.sample.name,
        filesize=backend.sample.stat().st_size,
        content_type="video/mp4",
        duration=backend.sample_seconds,
        title=title,
        language="en",
        video_type="podcast",
    )
    await client.upload(created.upload_url, backend.sample, "video/mp4")
    return created


async def processed(backend: Backend, client: CarmicClient, title: str = "Contract") -> str:
    created = await created_and_uploaded(backend, client, title)
    await client.process_project(created.project_id)
    status = await eventually(
        lambda: client.project_status(created.project_id), lambda s: s.ready or s.failed
    )
    assert status.ready, status
    return created.project_id


# ---- auth and workspace -------------------------------------------------------------------


async def test_login_and_workspace_from_me(backend: Backend) -> None:
    async with backend.client() as client:
        ws = await client.resolve_workspace()
        me = await client.me()
    assert ws.id and me.workspaces and me.workspaces[0].id == ws.id


async def test_health_is_public(backend: Backend) -> None:
    async with backend.raw_http() as http:
        r = await http.get(f"{backend.api_url}/v1/health")
    assert r.status_code == 200


async def test_bad_password_is_an_auth_error(backend: Backend) -> None:
    async with backend.client(password="Wrong-passw0rd") as client:
        with pytest.raises(AuthError, match="refused the login"):
            await client.resolve_workspace()


async def test_workspace_header_is_required(backend: Backend) -> None:
    async with backend.client() as client:
        await client.resolve_workspace()
        token = await client.session.token()
    async with backend.raw_http() as http:
        r = await http.get(
            f"{backend.api_url}/v1/projects", headers={"Authorization": f"Bearer {token}"}
        )
    assert r.status_code == 403
    assert r.json() == {"error": "Workspace context required (X-Workspace-ID)", "code": 403}


async def test_stale_access_token_is_refreshed(backend: Backend) -> None:
    async with backend.client() as client:
        await client.resolve_workspace()
        refresh = client.session._tokens.refresh if client.session._tokens else None
        assert refresh
        client.session._tokens = Tokens(access="not-a-valid-token", refresh=refresh)
        page = await client.list_projects()
        assert client.session.refreshes == 1 and client.session.logins == 1
    assert page.total >= 0


# ---- projects -----------------------------------------------------------------------------


async def test_quickstart_flow(backend: Backend, tmp_path: Path) -> None:
    """§2's ten steps: login, create, PUT, process, poll, clips, PUT clip, render, poll, video."""
    async with backend.client() as client:
        pid = await processed(backend, client)
        project = await eventually(
            lambda: client.get_project(pid), lambda p: p.visual_pipeline_ready and bool(p.clips)
        )
        assert project.id == pid and project.status in ("CLIPS_READY", "COMPLETED")
        clip = project.clips[0]
        assert clip.id and clip.end_time > clip.start_time and 0 <= clip.virality_score <= 100
        detail = await client.get_clip(clip.id)
        assert detail.id == clip.id and detail.template_config
        config = dict(detail.template_config)
        config["caption_style"] = "HORMOZI"
        await client.put_clip(clip.id, config)
        with pytest.raises(NotFound):
            await client.clip_video_location(clip.id)
        job = await client.render_clip(clip.id)
        assert job.status in ("QUEUED", "RENDERING", "RENDERED") and job.clip_id == clip.id
        progress = await eventually(
            lambda: client.render_progress(clip.id), lambda p: p.done or p.failed
        )
        assert progress.done, progress
        result = await client.download_clip_video(clip.id, tmp_path / "clip.mp4")
    data = (tmp_path / "clip.mp4").read_bytes()
    assert result.size == len(data) > 0
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert data[4:8] == b"ftyp"


async def test_process_needs_the_upload_and_happens_once(backend: Backend) -> None:
    async with backend.client() as client:
        created = await client.create_project(
            filename=backend.sample.name,
            filesize=backend.sample.stat().st_size,
            duration=backend.sample_seconds,
        )
        with pytest.raises(Conflict):
            await client.process_project(created.project_id)
        await client.upload(created.upload_url, backend.sample, "video/mp4")
        await client.process_project(created.project_id)
        with pytest.raises(Conflict):
            await client.process_project(created.project_id)


async def test_too_large_an_upload_is_refused_at_create(backend: Backend) -> None:
    async with backend.client() as client:
        with pytest.raises(PayloadTooLarge):
            await client.create_project(filename="huge.mp4", filesize=6 * 1024**3, duration=60)


@pytest.mark.parametrize("status", [429, 402, 403, 409])
async def test_tier_concurrency_limit_reads_as_concurrency_limited(
    backend: Backend, status: int
) -> None:
    backend.set_tier_limit_status(status)
    async with backend.client() as client:
        await client.create_project(filename="a.mp4", filesize=1000, duration=4)
        with pytest.raises(ConcurrencyLimited) as ei:
            await client.create_project(filename="b.mp4", filesize=1000, duration=4)
    assert ei.value.status == status


async def test_render_without_minutes_is_billing(backend: Backend) -> None:
    async with backend.client() as client:
        pid = await processed(backend, client)
        project = await eventually(lambda: client.get_project(pid), lambda p: bool(p.clips))
        backend.set_minutes(0)
        with pytest.raises(BillingRequired):
            await client.render_clip(project.clips[0].id)


async def test_listing_search_and_pages(backend: Backend) -> None:
    async with backend.client() as client:
        await processed(backend, client, title="Alpha episode")
        await processed(backend, client, title="Beta episode")
        page = await client.list_projects(search="alpha", limit=20)
        everything = await client.find_projects("episode")
        one = await client.list_projects(limit=1, offset=0)
    assert [p["title"] for p in page.items] == ["Alpha episode"] and page.total == 1
    assert sorted(p["title"] for p in everything) == ["Alpha episode", "Beta episode"]
    assert one.limit == 1 and len(one.items) == 1 and one.has_more and one.total == 2


async def test_delete_then_not_found(backend: Backend) -> None:
    async with backend.client() as client:
        created = await client.create_project(filename="d.mp4", filesize=1000, duration=4)
        await client.delete_project(created.project_id)
        with pytest.raises(NotFound):
            await client.project_status(created.project_id)
        with pytest.raises(NotFound):
            await client.get_project(UNKNOWN_ID)


# ---- exports and realtime -----------------------------------------------------------------


async def test_export_is_idempotent_and_downloadable(backend: Backend, tmp_path: Path) -> None:
    async with backend.client() as client:
        pid = await processed(backend, client)
        project = await eventually(lambda: client.get_project(pid), lambda p: bool(p.clips))
        cid = project.clips[0].id
        first = await client.create_export(cid, "premiere")
        again = await client.create_export(cid, "premiere")
        assert first.export_id == again.export_id and first.status == "PENDING"
        export = await eventually(
            lambda: client.get_export(first.export_id), lambda e: e.done or e.failed
        )
        assert export.done and export.download_url, export
        listed = await client.list_exports(cid)
        assert first.export_id in [e.id for e in listed]
        result = await client.download(
            export.download_url, tmp_path / "bundle.zip", expected_size=export.file_size
        )
    assert (tmp_path / "bundle.zip").read_bytes()[:2] == b"PK"
    assert result.size == export.file_size or export.file_size is None


@pytest.mark.parametrize("shape", ["bare", "data"])
async def test_sse_ticket_in_either_shape(backend: Backend, shape: str) -> None:
    backend.set_ticket_shape(shape)
    async with backend.client() as client:
        ticket = await client.sse_ticket()
    assert isinstance(ticket, str) and ticket


async def test_project_events_report_the_status(backend: Backend) -> None:
    async with backend.client() as client:
        pid = await processed(backend, client)
        events: list[JSON] = []
        async with aclosing(client.project_events(pid)) as stream:  # type: ignore[type-var]
            async for event in stream:
                events.append(event)
                if event.get("status") in ("CLIPS_READY", "COMPLETED"):
                    break
    assert events[-1]["status"] in ("CLIPS_READY", "COMPLETED")


async def test_events_of_an_unknown_project(backend: Backend) -> None:
    async with backend.client() as client:
        with pytest.raises(NotFound):
            async for _ in client.project_events(UNKNOWN_ID):
                break

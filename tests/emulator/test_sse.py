"""Realtime (§3.12): SSE tickets and the project and export streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Faults, Timings, Variants


def _ticket(api: Api) -> str:
    r = api.post("/v1/sse-ticket")
    assert r.status_code == 200, r.text
    ticket: str = r.json()["data"]["ticket"]
    return ticket


def _lines(response: httpx.Response) -> Iterator[str]:
    yield from response.iter_lines()


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in _lines(response):
        if line.startswith("data: "):
            event: dict[str, Any] = json.loads(line.removeprefix("data: "))
            yield event


def _stream(api: Api, path: str, ticket: str | None = None) -> Any:
    params = {"ticket": ticket if ticket is not None else _ticket(api)}
    return api.http.stream("GET", path, params=params, timeout=10)


def test_ticket_shapes(make_emu: MakeEmu) -> None:
    for shape in ("data", "bare"):
        emu = make_emu(variants=Variants(sse_ticket=shape))
        with Api(emu) as api:
            api.login()
            body = api.post("/v1/sse-ticket").json()
        ticket = body["data"]["ticket"] if shape == "data" else body["ticket"]
        assert isinstance(ticket, str) and len(ticket) >= 20


def test_event_at_connect_then_the_stream_ends_after_a_terminal_state(
    api: Api, sample_video: Path
) -> None:
    pid = api.ready_project(sample_video)
    with _stream(api, f"/v1/projects/{pid}/stream") as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = list(_events(r))
    assert len(events) == 1
    assert events[0]["status"] == "CLIPS_READY" and events[0]["id"] == pid
    assert set(events[0]) >= {"id", "status", "title", "progress", "current_step", "clip_count"}


def test_a_ticket_is_single_use(api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    ticket = _ticket(api)
    with _stream(api, f"/v1/projects/{pid}/stream", ticket) as r:
        assert r.status_code == 200
        list(_events(r))
    again = api.http.get(f"/v1/projects/{pid}/stream", params={"ticket": ticket})
    assert again.status_code == 401 and again.json()["code"] == 401
    assert api.http.get(f"/v1/projects/{pid}/stream").status_code == 401
    assert (
        api.http.get(f"/v1/projects/{pid}/stream", params={"ticket": "forged"}).status_code == 401
    )


def test_a_ticket_expires_after_30_seconds(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock)
    with Api(emu) as api:
        api.login()
        pid = api.ready_project(sample_video)
        fresh, stale = _ticket(api), _ticket(api)
        clock.advance(29)
        with _stream(api, f"/v1/projects/{pid}/stream", fresh) as r:
            assert r.status_code == 200
            list(_events(r))
        clock.advance(2)
        r = api.http.get(f"/v1/projects/{pid}/stream", params={"ticket": stale})
    assert r.status_code == 401


def test_a_project_of_another_workspace_is_404(emu: Emulator, api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    emu.register_user("other@example.com", "Other-pass-1")
    with Api(emu, "other@example.com", "Other-pass-1") as other:
        other.login()
        r = other.http.get(f"/v1/projects/{pid}/stream", params={"ticket": _ticket(other)})
    assert r.status_code == 404


def test_every_change_is_pushed_at_once(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(timings=Timings(step=0.05), inspect=True)
    with Api(emu) as api:
        api.login()
        created = api.create_for(sample_video)
        api.upload(created["upload_url"], sample_video.read_bytes())
        pid = created["project_id"]
        arrivals: list[tuple[str, float]] = []
        with _stream(api, f"/v1/projects/{pid}/stream") as r:
            events = _events(r)
            assert next(events)["status"] == "PENDING_UPLOAD"
            assert api.post(f"/v1/projects/{pid}/process").status_code == 200
            for event in events:
                arrivals.append((event["status"], time.time()))
    statuses = [s for s, _ in arrivals]
    assert statuses == ["UPLOADING", "TRANSCRIBING", "PROCESSING", "FACE_TRACKING", "CLIPS_READY"]
    # CLIPS_READY reached the client well within a second of happening (the system clock).
    ready_at = emu.core.state.projects[pid].clips_ready_at
    assert ready_at is not None and arrivals[-1][1] - ready_at < 1.0


def test_clips_ready_is_pushed_when_the_clock_gets_there(
    make_emu: MakeEmu, sample_video: Path
) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, timings=Timings(step=30, clips_lag=10))
    with Api(emu) as api:
        api.login()
        created = api.create_for(sample_video)
        api.upload(created["upload_url"], sample_video.read_bytes())
        pid = created["project_id"]
        api.post(f"/v1/projects/{pid}/process")
        with _stream(api, f"/v1/projects/{pid}/stream") as r:
            events = _events(r)
            assert next(events)["status"] == "UPLOADING"
            clock.advance(120)  # every step at once
            seen = [next(events) for _ in range(4)]
            assert seen[-1]["status"] == "CLIPS_READY"
            assert seen[-1]["visual_pipeline_ready"] is False
            clock.advance(10)
            published = next(events)
            assert published["visual_pipeline_ready"] is True and published["clip_count"] == 3
            assert list(events) == []  # ended


@pytest.fixture
def pending(make_emu: MakeEmu) -> Iterator[tuple[Api, str]]:
    """A client and a project waiting for its upload, on an emulator with fast keepalives."""
    emu = make_emu(timings=Timings(keepalive=0.05))
    with Api(emu) as api:
        api.login()
        yield api, api.create().json()["data"]["project_id"]


def test_keepalive_comments(pending: tuple[Api, str]) -> None:
    api, pid = pending
    with _stream(api, f"/v1/projects/{pid}/stream") as r:
        lines = _lines(r)
        assert next(lines).startswith("data: ")
        rest = [next(lines) for _ in range(4)]
    assert ": keepalive" in rest


@pytest.mark.parametrize("faults", [Faults(sse_cut_after=1), Faults(sse_cut_after_seconds=0.1)])
def test_streams_can_be_cut(pending: tuple[Api, str], faults: Faults) -> None:
    api, pid = pending
    api.emu.update(faults=faults)
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), _stream(api, f"/v1/projects/{pid}/stream") as r:
        for line in _lines(r):
            received.append(line)
    assert received[0].startswith("data: ")


def test_a_deleted_project_ends_its_stream(pending: tuple[Api, str]) -> None:
    api, pid = pending
    with _stream(api, f"/v1/projects/{pid}/stream") as r:
        events = _events(r)
        assert next(events)["status"] == "PENDING_UPLOAD"
        api.delete(f"/v1/projects/{pid}")
        last = list(events)
    assert last and last[-1].get("deleted") is True


def test_export_stream(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(timings=Timings(export=0.2))
    with Api(emu) as api:
        api.login()
        cid = api.clips(api.ready_project(sample_video))[0]["id"]
        eid = api.post(f"/v1/clips/{cid}/exports", json={"target_format": "fcpx"}).json()
        eid = eid["data"]["export_id"]
        with _stream(api, f"/v1/exports/{eid}/stream") as r:
            events = list(_events(r))
    statuses = [e["status"] for e in events]
    assert statuses[0] in ("PENDING", "PROCESSING") and statuses[-1] == "COMPLETED"
    assert "PROCESSING" in statuses
    assert events[-1]["download_url"] and events[-1]["file_size"] > 0
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)

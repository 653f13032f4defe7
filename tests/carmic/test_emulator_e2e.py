"""The client against the bundled emulator over loopback: what only a real server shows.

Strict presigned storage (signature over the raw query, no chunking, no Authorization), SSE
pushes and cut streams over real sockets, random 5xx absorbed by retries, a reset upload and a
create whose answer is lost. Nothing here sleeps to wait: each wait is on a condition, bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from watchd.carmic.client import CarmicClient
from watchd.carmic.errors import CarmicError, NetworkError, TransientError
from watchd.carmic.models import JSON, ProjectCreated
from watchd.carmic.retry import RetryPolicy
from watchd.carmic.sse import StreamSettings

emulator = pytest.importorskip("watchd.emulator", reason="the bundled emulator is not available")
Emulator, EmulatorSettings = emulator.Emulator, emulator.EmulatorSettings
Faults, Timings = emulator.Faults, emulator.Timings

SECONDS = 4.0
WAIT = 15.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from watchd.media import make_sample_video

    path = tmp_path_factory.mktemp("e2e") / "sample.mp4"
    make_sample_video(path, seconds=SECONDS, width=160, height=90, fps=10)
    return path


@pytest.fixture
def emu() -> Iterator[Any]:
    with Emulator(EmulatorSettings(port=0, storage_port=0, inspect=True)) as e:
        yield e


def client_for(emu: Any, **kwargs: Any) -> CarmicClient:
    kwargs.setdefault("retry", RetryPolicy(attempts=8, base=0.01, max_delay=0.1, jitter=0.5))
    return CarmicClient(emu.api_url, emu.seed_email, emu.seed_password, **kwargs)


async def create_and_upload(
    client: CarmicClient, sample: Path, title: str = "e2e"
) -> ProjectCreated:
    created = await client.create_project(
        filename=sample.name, filesize=sample.stat().st_size, duration=SECONDS, title=title
    )
    await client.upload(created.upload_url, sample, "video/mp4")
    return created


async def test_upload_passes_strict_storage_byte_for_byte(emu: Any, sample: Path) -> None:
    async with client_for(emu) as client:
        created = await create_and_upload(client, sample)
    assert "%2F" in created.upload_url  # the credential scope: a re-encoding would break it
    puts = [
        r for r in emu.snapshot()["requests"] if r["origin"] == "storage" and r["method"] == "PUT"
    ]
    (put,) = puts
    assert put["status"] == 200
    assert put["content_length"] == sample.stat().st_size
    assert not put["transfer_encoding"] and not put["has_auth"]


async def test_sse_follows_processing_to_clips_ready(emu: Any, sample: Path) -> None:
    emu.update(timings=Timings(step=0.05))
    async with client_for(emu) as client:
        created = await create_and_upload(client, sample)
        await client.process_project(created.project_id)
        statuses = await asyncio.wait_for(follow(client, created.project_id), WAIT)
    assert statuses[-1] == "CLIPS_READY"
    assert len(set(statuses)) >= 3, statuses  # intermediate steps were pushed as they happened


async def follow(client: CarmicClient, pid: str) -> list[str]:
    statuses: list[str] = []
    async for event in client.project_events(pid):
        statuses.append(str(event.get("status")))
        if statuses[-1] in ("CLIPS_READY", "COMPLETED") or statuses[-1].startswith("FAILED"):
            break
    return statuses


async def test_sse_survives_streams_cut_after_every_event(emu: Any, sample: Path) -> None:
    emu.update(timings=Timings(step=0.1), faults=Faults(sse_cut_after=1))
    settings = StreamSettings(reconnect_delay=0.02)
    async with client_for(emu, stream_settings=settings) as client:
        created = await create_and_upload(client, sample)
        await client.process_project(created.project_id)
        statuses = await asyncio.wait_for(follow(client, created.project_id), WAIT)
    assert statuses[-1] == "CLIPS_READY"
    streams = [r for r in emu.snapshot()["requests"] if r["path"].endswith("/stream")]
    assert len(streams) >= 2
    assert all(r["status"] == 200 for r in streams), streams  # a fresh ticket every time


async def test_random_server_errors_are_absorbed_by_retries(emu: Any, sample: Path) -> None:
    async with client_for(emu) as client:
        created = await create_and_upload(client, sample)
        emu.update(faults=Faults(error_rate=0.3))
        for _ in range(15):
            status = await client.project_status(created.project_id)
            assert status.status == "PENDING_UPLOAD"
        emu.update(faults=Faults())
    failed = [r for r in emu.snapshot()["requests"] if r["status"] >= 500]
    assert failed, "the fault knob should have failed some calls"


async def test_reset_upload_is_transient_and_stores_nothing(emu: Any, sample: Path) -> None:
    async with client_for(emu) as client:
        created = await client.create_project(
            filename=sample.name, filesize=sample.stat().st_size, duration=SECONDS
        )
        emu.update(faults=Faults(upload_reset_rate=1.0))
        with pytest.raises(TransientError):
            await client.upload(created.upload_url, sample, "video/mp4")
        emu.update(faults=Faults())
        # Nothing was kept; a second upload goes through and processing can start.
        await client.upload(created.upload_url, sample, "video/mp4")
        await client.process_project(created.project_id)


async def test_a_lost_create_answer_is_not_retried_and_can_be_found(emu: Any) -> None:
    async with client_for(emu) as client:
        await client.resolve_workspace()
        emu.update(faults=Faults(create_commit_then_fail=1.0, commit_fail_mode="500"))
        with pytest.raises(CarmicError):
            await client.create_project(
                filename="lost.mp4", filesize=1000, duration=SECONDS, title="lost [wd-42]"
            )
        emu.update(faults=Faults())
        found: list[JSON] = await client.find_projects("wd-42")
    assert [p["title"] for p in found] == ["lost [wd-42]"]
    creates = [r for r in emu.snapshot()["requests"] if r["path"].endswith("/projects/create")]
    assert len(creates) == 1  # never retried by the client


async def test_unreachable_api_is_a_network_error() -> None:
    client = CarmicClient(
        "http://127.0.0.1:9/api", "a@b.c", "pw-123456", retry=RetryPolicy(attempts=1)
    )
    async with client:
        with pytest.raises(NetworkError, match="cannot connect"):
            await client.resolve_workspace()

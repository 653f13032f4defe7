"""The Emulator object itself: on the caller's loop, data_dir, ports, stopping."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from tests.emulator.helpers import Api
from watchd.emulator import Emulator, EmulatorSettings


async def test_serve_forever_on_the_running_loop() -> None:
    emu = Emulator(EmulatorSettings())
    stop = asyncio.Event()
    task = asyncio.create_task(emu.serve_forever(stop))
    for _ in range(500):
        if emu.api_url:
            break
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{emu.api_url}/v1/health")
        assert r.status_code == 200
        assert emu.snapshot()["users"][0]["email"] == emu.seed_email  # direct on this loop
        stop.set()
        await asyncio.wait_for(task, 10)
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{emu.api_url}/v1/health")


async def test_async_context_manager() -> None:
    async with Emulator(EmulatorSettings()) as emu, httpx.AsyncClient() as http:
        assert (await http.get(f"{emu.api_url}/v1/health")).status_code == 200


def test_data_dir_keeps_the_objects(tmp_path: Path, sample_video: Path) -> None:
    with Emulator(EmulatorSettings(data_dir=tmp_path)) as emu, Api(emu) as api:
        api.login()
        api.ready_project(sample_video)
    kept = [p for p in (tmp_path / "objects").rglob("source.mp4")]
    assert len(kept) == 1 and kept[0].read_bytes() == sample_video.read_bytes()
    assert not (tmp_path / "tmp").exists()


def test_a_temporary_data_dir_is_removed(sample_video: Path) -> None:
    with Emulator(EmulatorSettings()) as emu:
        root = emu.core.store.root
        assert root.exists()
    assert not root.exists()


def test_storage_goes_next_door_to_a_fixed_api_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Emulator(EmulatorSettings(port=port)) as emu:
        assert emu.api_url == f"http://127.0.0.1:{port}/api"
        assert emu.storage_url.startswith("http://127.0.0.1:")
    with Emulator(EmulatorSettings(port=0, storage_port=0)) as emu:
        assert emu.storage_url != emu.api_url.removesuffix("/api")


def test_a_taken_port_fails_start_cleanly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        emu = Emulator(EmulatorSettings(port=port))
        with pytest.raises(OSError):
            emu.start()
        emu.stop()


def test_bad_settings_are_refused() -> None:
    for bad in (
        {"tier": "GOLD"},
        {"port": 70000},
        {"port": 9000, "storage_port": 9000},
        {"access_ttl": 0},
        {"seed_email": "nobody"},
    ):
        with pytest.raises(ValueError):
            EmulatorSettings(**bad)  # type: ignore[arg-type]


def test_stop_is_idempotent() -> None:
    emu = Emulator(EmulatorSettings()).start()
    emu.stop()
    emu.stop()

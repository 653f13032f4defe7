"""Fixtures for the emulator's tests: a started emulator per test, an httpx client that knows
how to log in and which workspace to use, and one small real sample video for the session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.helpers import Api
from watchd.clock import Clock
from watchd.emulator import Emulator, EmulatorSettings
from watchd.media import make_sample_video

MakeEmu = Callable[..., Emulator]


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 20 s MP4 (small picture, H.264 + AAC, 1 s keyframes)."""
    path = tmp_path_factory.mktemp("media") / "sample.mp4"
    make_sample_video(path, seconds=20.0, width=320, height=180, fps=25)
    return path


@pytest.fixture
def make_emu() -> Iterator[MakeEmu]:
    """Start emulators with settings overrides (and an optional clock); all stopped after."""
    started: list[Emulator] = []

    def make(clock: Clock | None = None, **overrides: Any) -> Emulator:
        emu = Emulator(EmulatorSettings(**overrides), clock=clock).start()
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(make_emu: MakeEmu) -> Emulator:
    return make_emu(inspect=True)


@pytest.fixture
def api(emu: Emulator) -> Iterator[Api]:
    """A client logged in as the seeded user, in the seeded workspace."""
    with Api(emu) as client:
        client.login()
        yield client

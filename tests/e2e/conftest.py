from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Env, check_manifests_under
from watchd.emulator import Emulator, EmulatorSettings, Timings
from watchd.media import make_sample_video


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A few small, different, real videos (different content = different fingerprints)."""
    root = tmp_path_factory.mktemp("samples")
    out = []
    for i, seconds in enumerate((12.0, 10.0, 8.0, 9.0, 11.0, 7.0)):
        p = root / f"sample{i}.mp4"
        make_sample_video(p, seconds=seconds, width=320, height=180, fps=10, label=f"s{i}")
        out.append(p)
    return out


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    settings = EmulatorSettings(
        port=0,
        storage_port=0,
        inspect=True,
        auth_rate_limits=False,
        timings=Timings(step=0.05, render=0.05, export=0.05, keepalive=1),
    )
    with Emulator(settings) as emu:
        yield emu


@pytest.fixture
def env(tmp_path: Path, emulator: Emulator) -> Iterator[Env]:
    e = Env(root=tmp_path, emu=emulator)
    yield e
    if e.proc is not None and e.proc.poll() is None:
        e.kill()
    # Every manifest a test made, read or not, follows the published schema.
    check_manifests_under(tmp_path)

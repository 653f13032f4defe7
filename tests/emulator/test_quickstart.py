"""examples/quickstart.sh (the Carmic API's curl quickstart) against the emulator, with bash."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.emulator.conftest import MakeEmu
from watchd.media import is_playable

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "quickstart.sh"


def _padded(video: Path, pad: int, folder: Path) -> Path:
    """``video`` with a trailing MP4 ``free`` box of ``pad`` bytes: still the same video."""
    if not pad:
        return video
    out = folder / "padded.mp4"
    out.write_bytes(video.read_bytes() + struct.pack(">I", pad + 8) + b"free" + bytes(pad))
    return out


@pytest.mark.skipif(
    not (shutil.which("curl") and shutil.which("jq")), reason="the quickstart needs curl and jq"
)
# Over 1 MiB curl sends ``Expect: 100-continue`` with its PUT.
@pytest.mark.parametrize("pad", [0, 1_200_000])
def test_quickstart_script_leaves_a_playable_clip(
    make_emu: MakeEmu, sample_video: Path, tmp_path: Path, pad: int
) -> None:
    emu = make_emu(inspect=True)
    video = _padded(sample_video, pad, tmp_path)
    env = {
        **os.environ,
        "API": emu.api_url,
        "EMAIL": emu.seed_email,
        "PASSWORD": emu.seed_password,
        "FILE": str(video),
        "DURATION": "20",
    }
    done = subprocess.run(
        ["bash", str(SCRIPT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # With instant timings the first poll of each loop sees the end: no 10 s / 5 s sleeps.
    assert "Clips ready (100%)" in done.stdout and "RENDERED (100%)" in done.stdout
    clip = tmp_path / "clip.mp4"
    assert clip.exists() and is_playable(clip)
    storage = [q for q in emu.snapshot()["requests"] if q["origin"] == "storage"]
    put = next(q for q in storage if q["method"] == "PUT")
    get = next(q for q in storage if q["method"] == "GET")
    assert put["status"] == 200 and put["content_length"] == video.stat().st_size
    assert put["expect"] == ("100-continue" if pad else None)
    assert not put["has_auth"] and put["transfer_encoding"] is None
    assert get["status"] == 200 and not get["has_auth"]  # curl -L drops the bearer off-origin

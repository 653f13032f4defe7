"""The per-workspace create and export limits are knobs: 5 a minute as the reference says by
default, another number, or 0 for none (load benchmarks measure the client, not the limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.emulator import EmulatorSettings


def _creates(api: Api, n: int) -> list[int]:
    return [api.create(filename=f"v{i}.mp4", duration=10).status_code for i in range(n)]


@pytest.mark.parametrize(("per_minute", "expected"), [(5, [200] * 5 + [429]), (2, [200, 200, 429])])
def test_create_limit_follows_the_knob(
    make_emu: MakeEmu, per_minute: int, expected: list[int]
) -> None:
    emu = make_emu(tier="ENTERPRISE", creates_per_minute=per_minute)
    with Api(emu) as api:
        api.login()
        codes = _creates(api, len(expected))
        refused = api.create(filename="late.mp4", duration=10)
    assert codes == expected
    assert f"at most {per_minute} project creations" in refused.json()["error"]


def test_zero_means_no_limit_and_is_live(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(tier="ENTERPRISE", inspect=True)
    with Api(emu) as api:
        api.login()
        assert _creates(api, 6)[-1] == 429
        emu.update(creates_per_minute=0, exports_per_minute=0)
        assert set(_creates(api, 20)) == {200}
        pid = api.ready_project(sample_video)
        clips = [c["id"] for c in api.clips(pid)][:2]
        codes = [
            api.post(f"/v1/clips/{cid}/exports", json={"target_format": fmt}).status_code
            for cid in clips
            for fmt in ("premiere", "davinci", "fcpx", "after_effects")
        ]
    assert set(codes) == {202}
    assert emu.snapshot()["counters"]["rate_limited"] == 1


def test_negative_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="creates_per_minute"):
        EmulatorSettings(creates_per_minute=-1)
    with pytest.raises(ValueError, match="exports_per_minute"):
        EmulatorSettings(exports_per_minute=-1)

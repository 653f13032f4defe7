"""Time stamps the inspection exposes for latency benchmarks: when a storage PUT started and
received its first body byte, and when a project was processed, ready and completed."""

from __future__ import annotations

from pathlib import Path

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.clock import FakeClock


def test_storage_put_records_start_and_first_byte(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock(1_000.0)
    emu = make_emu(clock=clock, inspect=True)
    with Api(emu) as api:
        api.login()
        created = api.create_for(sample_video)
        clock.advance(5.0)
        assert api.upload(created["upload_url"], sample_video.read_bytes()).status_code == 200
        # A refused PUT (bad content type) never got a body: no first byte.
        refused = api.upload(created["upload_url"], b"x", content_type="text/plain")
        assert refused.status_code == 403
    puts = [q for q in emu.snapshot()["requests"] if q["origin"] == "storage"]
    assert [q["status"] for q in puts] == [200, 403]
    assert puts[0]["started"] == 1_005.0 and puts[0]["first_byte"] == 1_005.0
    assert puts[1]["started"] == 1_005.0 and puts[1]["first_byte"] is None
    api_calls = [q for q in emu.snapshot()["requests"] if q["origin"] == "api"]
    assert all(q["first_byte"] is None for q in api_calls)
    # An SSE stream is recorded when it ends: ``started`` says when it was asked for.
    assert all(q["started"] == 1_000.0 for q in api_calls)


def test_project_records_process_ready_and_completed_times(
    make_emu: MakeEmu, sample_video: Path
) -> None:
    clock = FakeClock(2_000.0)
    emu = make_emu(clock=clock, inspect=True)
    emu.update(timings={"complete_after": 0})
    with Api(emu) as api:
        api.login()
        created = api.create_for(sample_video)
        assert api.upload(created["upload_url"], sample_video.read_bytes()).status_code == 200
        fresh = emu.snapshot()["projects"][0]
        assert fresh["process_requested_at"] is None and fresh["clips_ready_at"] is None
        clock.advance(3.0)
        assert api.post(f"/v1/projects/{created['project_id']}/process").status_code == 200
    project = emu.snapshot()["projects"][0]
    assert project["status"] == "COMPLETED"
    assert project["process_requested_at"] == 2_003.0
    assert project["clips_ready_at"] == 2_003.0
    assert project["completed_at"] == 2_003.0

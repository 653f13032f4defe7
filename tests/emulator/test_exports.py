"""NLE exports (§3.8): idempotence, tier and rate limits, the bundles themselves, faults."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api, wait_for
from watchd.clock import FakeClock
from watchd.emulator import Emulator, Faults, Timings, Variants
from watchd.emulator.bundles import EVIL_LINK, EVIL_MEMBERS
from watchd.media import is_playable

FORMATS = {
    "premiere": ".xml",
    "davinci": ".fcpxml",
    "fcpx": ".fcpxml",
    "after_effects": ".jsx",
}


def _clip_ids(api: Api, video: Path) -> list[str]:
    return [c["id"] for c in api.clips(api.ready_project(video))]


def _export(api: Api, cid: str, fmt: str = "premiere", **body: Any) -> httpx.Response:
    return api.post(f"/v1/clips/{cid}/exports", json={"target_format": fmt, **body})


def test_export_is_202_pending_and_idempotent(api: Api, sample_video: Path) -> None:
    cid = _clip_ids(api, sample_video)[0]
    first = _export(api, cid)
    assert first.status_code == 202
    data = first.json()["data"]
    assert data["status"] == "PENDING" and data["export_id"]
    again = _export(api, cid)
    assert again.status_code == 202 and again.json()["data"]["export_id"] == data["export_id"]
    other = _export(api, cid, "davinci")
    assert other.json()["data"]["export_id"] != data["export_id"]
    export = api.get(f"/v1/exports/{data['export_id']}").json()["data"]
    assert export["status"] == "COMPLETED" and export["error_message"] is None
    assert set(export) >= {"id", "status", "download_url", "file_size", "error_message"}
    listed = api.get(f"/v1/clips/{cid}/exports").json()["data"]
    assert [e["target_format"] for e in listed] == ["premiere", "davinci"]
    assert api.get("/v1/exports/00000000-0000-4000-8000-000000000000").status_code == 404


@pytest.mark.parametrize("body", [{}, {"target_format": "logic_pro"}, {"target_format": 3}])
def test_invalid_format_is_400(api: Api, sample_video: Path, body: dict[str, Any]) -> None:
    cid = _clip_ids(api, sample_video)[0]
    r = api.post(f"/v1/clips/{cid}/exports", json=body)
    assert r.status_code == 400 and "target_format" in r.json()["error"]


def test_free_tier_is_402(api: Api, sample_video: Path) -> None:
    cid = _clip_ids(api, sample_video)[0]
    api.emu.update(tier="FREE")
    r = _export(api, cid)
    assert r.status_code == 402 and r.json()["code"] == 402


def test_export_rate_limit(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock)
    with Api(emu) as api:
        api.login()
        cids = _clip_ids(api, sample_video)
        pairs = [(cid, fmt) for cid in cids for fmt in FORMATS]
        codes = [_export(api, cid, fmt).status_code for cid, fmt in pairs[:5]]
        limited = _export(api, *pairs[5])
        clock.advance(60)
        after = _export(api, *pairs[5])
    assert codes == [202] * 5
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
    assert after.status_code == 202


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_bundle_has_a_project_file_and_media(
    api: Api, sample_video: Path, tmp_path: Path, fmt: str
) -> None:
    cid = _clip_ids(api, sample_video)[0]
    eid = _export(api, cid, fmt).json()["data"]["export_id"]
    export = api.get(f"/v1/exports/{eid}").json()["data"]
    download = httpx.get(export["download_url"])
    assert download.status_code == 200 and len(download.content) == export["file_size"]
    assert download.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.content)) as z:
        names = z.namelist()
        project = [n for n in names if n.endswith(FORMATS[fmt])]
        media = [n for n in names if n.startswith("media/") and n.endswith(".mp4")]
        assert len(project) == 1 and len(media) == 1, names
        text = z.read(project[0]).decode()
        (tmp_path / "clip.mp4").write_bytes(z.read(media[0]))
    assert media[0].removeprefix("media/") in text  # the project file points at its media
    if fmt == "after_effects":
        assert "importFile" in text and "addComp" in text
    else:
        root = ElementTree.fromstring(text.split("\n", 2)[2] if "DOCTYPE" in text else text)
        assert root.tag == ("xmeml" if fmt == "premiere" else "fcpxml")
    assert is_playable(tmp_path / "clip.mp4")


def test_include_proxy_adds_proxy_media(api: Api, sample_video: Path) -> None:
    cid = _clip_ids(api, sample_video)[0]
    eid = _export(api, cid, include_proxy=True).json()["data"]["export_id"]
    url = api.get(f"/v1/exports/{eid}").json()["data"]["download_url"]
    with zipfile.ZipFile(io.BytesIO(httpx.get(url).content)) as z:
        assert any(n.endswith("_proxy.mp4") for n in z.namelist())


def test_export_over_time(make_emu: MakeEmu, sample_video: Path) -> None:
    clock = FakeClock()
    emu = make_emu(clock=clock, timings=Timings(export=10))
    with Api(emu) as api:
        api.login()
        cid = _clip_ids(api, sample_video)[0]
        eid = _export(api, cid).json()["data"]["export_id"]

        def get() -> dict[str, Any]:
            data: dict[str, Any] = api.get(f"/v1/exports/{eid}").json()["data"]
            return data

        assert get()["status"] == "PENDING" and get()["download_url"] is None
        clock.advance(1)
        running = wait_for(get, lambda e: e["status"] == "PROCESSING")
        assert running["download_url"] is None
        clock.advance(10)
        done = wait_for(get, lambda e: e["status"] == "COMPLETED")
    assert done["progress"] == 100 and done["download_url"] and done["file_size"] > 0


def test_export_failure_and_retry_with_the_same_id(
    emu: Emulator, api: Api, sample_video: Path
) -> None:
    cid = _clip_ids(api, sample_video)[0]
    emu.update(faults=Faults(export_fail_rate=1.0))
    eid = _export(api, cid).json()["data"]["export_id"]
    failed = api.get(f"/v1/exports/{eid}").json()["data"]
    assert failed["status"] == "FAILED" and failed["error_message"]
    assert failed["download_url"] is None
    emu.update(faults=Faults())
    again = _export(api, cid)
    assert again.json()["data"] == {"export_id": eid, "status": "PENDING"}
    assert api.get(f"/v1/exports/{eid}").json()["data"]["status"] == "COMPLETED"


def test_export_done_status_variant(make_emu: MakeEmu, sample_video: Path) -> None:
    emu = make_emu(variants=Variants(export_done_status="READY"))
    with Api(emu) as api:
        api.login()
        cid = _clip_ids(api, sample_video)[0]
        eid = _export(api, cid).json()["data"]["export_id"]
        export = api.get(f"/v1/exports/{eid}").json()["data"]
    assert export["status"] == "READY" and export["download_url"]


def test_evil_bundles_carry_members_that_try_to_escape(
    emu: Emulator, api: Api, sample_video: Path
) -> None:
    cid = _clip_ids(api, sample_video)[0]
    emu.update(faults=Faults(evil_bundles=True))
    eid = _export(api, cid).json()["data"]["export_id"]
    url = api.get(f"/v1/exports/{eid}").json()["data"]["download_url"]
    with zipfile.ZipFile(io.BytesIO(httpx.get(url).content)) as z:
        infos = {i.filename: i for i in z.infolist()}
        link_target = z.read(EVIL_LINK[0]).decode()
    assert set(EVIL_MEMBERS) <= set(infos)
    assert stat.S_ISLNK(infos[EVIL_LINK[0]].external_attr >> 16)
    assert link_target.startswith("../")
    # The ordinary members are still there: the bundle stays usable.
    assert any(n.endswith(".xml") for n in infos) and any(n.startswith("media/") for n in infos)

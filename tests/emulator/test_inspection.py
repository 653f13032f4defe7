"""The inspection endpoints: off by default, and what they show when on."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.emulator import Emulator


def test_inspection_is_off_by_default(make_emu: MakeEmu) -> None:
    emu = make_emu()
    state = httpx.get(f"{emu.api_url}/_emulator/state")
    config = httpx.post(f"{emu.api_url}/_emulator/config", json={"minutes": 1})
    assert state.status_code == 404 and state.json() == {"error": "Not Found", "code": 404}
    assert config.status_code == 404
    assert emu.snapshot()["settings"]["minutes"] == 600  # the Python surface still works


def test_state_shows_requests_projects_billing_counters(
    emu: Emulator, api: Api, sample_video: Path
) -> None:
    pid = api.ready_project(sample_video)
    cid = api.clips(pid)[0]["id"]
    api.put(f"/v1/clips/{cid}", json={"caption_style": "IMPACT"})
    api.post(f"/v1/clips/{cid}/render")
    r = httpx.get(f"{emu.api_url}/_emulator/state")
    assert r.status_code == 200
    state = r.json()
    assert set(state) >= {"requests", "projects", "billing", "counters", "clip_puts"}
    req = next(q for q in state["requests"] if q["path"].endswith("/projects/create"))
    assert req == {
        **req,
        "method": "POST",
        "status": 200,
        "has_auth": True,
        "workspace": emu.workspace_id,
        "origin": "api",
        "transfer_encoding": None,
    }
    put = next(q for q in state["requests"] if q["origin"] == "storage")
    assert put["method"] == "PUT" and put["content_length"] == sample_video.stat().st_size
    project = state["projects"][0]
    assert project["id"] == pid and project["status"] == "CLIPS_READY"
    assert project["upload"]["size"] == sample_video.stat().st_size
    assert project["billed"] == 1 and project["deleted"] is False
    clip = next(c for c in project["clips"] if c["id"] == cid)
    assert clip["put_count"] == 1 and clip["render_count"] == 1
    assert clip["template_config"]["caption_style"] == "IMPACT"
    assert [e["kind"] for e in state["clip_puts"]] == ["put", "render"]
    assert state["billing"][emu.workspace_id]["minutes_left"] == 598
    assert state["counters"]["logins"] == 1 and state["counters"]["renders"] == 1


def test_no_secrets_in_the_request_log(emu: Emulator, api: Api, sample_video: Path) -> None:
    pid = api.ready_project(sample_video)
    clip = api.clips(pid)[0]
    signature = clip["thumbnail_url"].split("X-Amz-Signature=")[1]
    httpx.get(clip["thumbnail_url"])
    ticket = api.post("/v1/sse-ticket").json()["data"]["ticket"]
    api.http.get(f"/v1/projects/{pid}/stream", params={"ticket": ticket})
    log = json.dumps(emu.snapshot()["requests"])
    for secret in (signature, ticket, api.token, emu.seed_password):
        assert secret not in log


def test_the_request_log_names_each_client_by_its_user_agent(emu: Emulator) -> None:
    """Cluster tests tell the daemons' requests apart by their ``(node <name>)``."""
    ua = "carmic-watchd/0 (node n2)"
    httpx.get(f"{emu.api_url}/v1/health", headers={"User-Agent": ua})
    httpx.get(f"{emu.api_url}/v1/health", headers={"User-Agent": ""})
    agents = [q["user_agent"] for q in emu.snapshot()["requests"]]
    assert agents[-2:] == [ua, ""]

"""Fault knobs do what they say, live, and deterministically for a seed."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.emulator.conftest import MakeEmu
from tests.emulator.helpers import Api
from watchd.emulator import Emulator, Faults


def test_error_rate_answers_5xx_before_anything_happens(emu: Emulator, api: Api) -> None:
    emu.update(faults=Faults(error_rate=1.0))
    responses = [api.get("/v1/projects"), api.create(), api.http.get("/v1/health")]
    for r in responses:
        assert r.status_code in (500, 502, 503)
        assert r.json()["code"] == r.status_code and "error" in r.json()
    assert emu.snapshot()["projects"] == []
    emu.update(faults=Faults())
    assert api.get("/v1/projects").status_code == 200


def test_error_rate_is_seeded(make_emu: MakeEmu) -> None:
    def statuses(seed: int) -> list[int]:
        emu = make_emu(seed=seed, faults=Faults(error_rate=0.5))
        with httpx.Client(base_url=emu.api_url) as http:
            return [http.get("/v1/health").status_code for _ in range(20)]

    first = statuses(3)
    assert first == statuses(3)
    assert 200 in first and any(s >= 500 for s in first)


@pytest.mark.parametrize("mode", ["500", "drop"])
def test_create_commit_then_fail(make_emu: MakeEmu, mode: str) -> None:
    emu = make_emu(faults=Faults(create_commit_then_fail=1.0, commit_fail_mode=mode), inspect=True)
    with Api(emu) as api:
        api.login()
        if mode == "500":
            r = api.create(title="Ghost", duration=60)
            assert r.status_code == 500 and r.json()["code"] == 500
        else:
            with pytest.raises(httpx.TransportError):
                api.create(title="Ghost", duration=60)
        emu.update(faults=Faults())
        listed = api.get("/v1/projects", params={"search": "ghost"}).json()
    # The project exists and was billed although the client never heard of it.
    assert listed["meta"]["total"] == 1
    project = emu.snapshot()["projects"][0]
    assert project["title"] == "Ghost" and project["billed"] == 1
    assert emu.snapshot()["counters"]["commit_then_fail"] == 1


def test_slow_seconds_adds_latency(emu: Emulator, api: Api) -> None:
    emu.update(faults=Faults(slow_seconds=0.2))
    started = time.monotonic()
    assert api.get("/v1/projects").status_code == 200
    assert time.monotonic() - started >= 0.2


def test_faults_from_the_config_endpoint(emu: Emulator, api: Api) -> None:
    config = f"{emu.api_url}/_emulator/config"
    r = httpx.post(config, json={"faults": {"error_rate": 1}})
    assert r.status_code == 200 and r.json()["faults"]["error_rate"] == 1.0
    assert api.get("/v1/projects").status_code >= 500
    r = httpx.post(config, json={"faults": {"error_rate": 0}, "tier": "FREE", "minutes": 7})
    assert r.status_code == 200
    ws = api.get("/v1/me", ws=False).json()["data"]["workspaces"][0]
    assert (ws["tier"], ws["minutes_left"]) == ("FREE", 7)
    for bad in (
        {"faults": {"error_rate": 2}},
        {"faults": {"no_such_fault": 1}},
        {"timings": {"step": -1}},
        {"tier": "GOLD"},
        {"minutes": -5},
        {"colour": "blue"},
    ):
        r = httpx.post(config, json=bad)
        assert r.status_code == 400 and r.json()["code"] == 400, bad
    assert emu.snapshot()["settings"]["tier"] == "FREE"  # nothing changed by the refusals


def test_update_refuses_bad_values_and_changes_nothing(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="error_rate"):
        emu.update(faults={"error_rate": 5}, minutes=3)
    assert emu.snapshot()["settings"]["minutes"] == 600


def test_register_user_and_add_minutes(emu: Emulator) -> None:
    user = emu.register_user("x@example.com", "whatever", tier="BUSINESS", minutes=5)
    user_id, workspace_id = user
    assert (user_id, workspace_id) == (user.user_id, user.workspace_id)
    assert user.workspace_id != emu.workspace_id
    with pytest.raises(ValueError):
        emu.register_user("y@example.com", "whatever", tier="GOLD")
    with pytest.raises(ValueError):
        emu.register_user("X@example.com", "again")  # the address is taken
    assert emu.add_minutes(10, user.workspace_id) == 15
    assert emu.add_minutes(1) == 601
    billing = emu.snapshot()["billing"][user.workspace_id]
    assert billing["tier"] == "BUSINESS" and billing["minutes_left"] == 15

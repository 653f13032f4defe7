"""Which event loop ``watchd run`` gets, and running a coroutine on it."""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType

import pytest
import uvloop

from watchd.service import eventloop
from watchd.service.eventloop import EventLoopError, choose


def _without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)


@pytest.mark.parametrize("value", [None, "", "auto", " UVLOOP ", "uvloop"])
def test_uvloop_when_it_is_there(value: str | None) -> None:
    choice = choose({} if value is None else {"WATCHD_EVENT_LOOP": value})
    assert choice.name == f"uvloop {uvloop.__version__}"
    assert choice.factory is uvloop.new_event_loop


def test_asyncio_when_asked_for() -> None:
    choice = choose({"WATCHD_EVENT_LOOP": "asyncio"})
    assert (choice.name, choice.factory) == ("asyncio", asyncio.new_event_loop)


def test_asyncio_when_uvloop_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    assert choose({}).name == "asyncio"


def test_insisting_on_a_missing_uvloop_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _without_uvloop(monkeypatch)
    with pytest.raises(EventLoopError, match=r"uvloop cannot be imported .*pip install uvloop"):
        choose({"WATCHD_EVENT_LOOP": "uvloop"})


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(EventLoopError, match="'trio': use one of auto, uvloop, asyncio"):
        choose({"WATCHD_EVENT_LOOP": "trio"})


def test_the_environment_is_read_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHD_EVENT_LOOP", "asyncio")
    assert choose().name == "asyncio"


@pytest.mark.parametrize("env", ["asyncio", "uvloop"])
def test_run_runs_on_the_chosen_loop(env: str) -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    module = eventloop.run(main(), choose({"WATCHD_EVENT_LOOP": env}))
    assert module.startswith(env)

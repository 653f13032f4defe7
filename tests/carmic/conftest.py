"""The client's transport-level tests run on both event loops the daemon may get.

``watchd run`` uses uvloop when it is installed and asyncio's loop otherwise
(watchd/service/eventloop.py). Sockets, TLS, timeouts and cancellation are where the two loops
differ, so the modules that drive real sockets run once on each; the rest run on asyncio's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop

BOTH_LOOPS = frozenset({"test_aiotransport", "test_fastpath", "test_transfer", "test_emulator_e2e"})


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    module = getattr(item, "module", None)
    name = module.__name__.rpartition(".")[2] if module is not None else ""
    if name in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}

"""Shared fixtures."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """A test must stop every thread it starts (watchdog's own suite does the same)."""
    before = set(threading.enumerate())
    yield
    leaked = []
    for t in set(threading.enumerate()) - before:
        t.join(timeout=5)
        if t.is_alive() and not t.daemon:
            leaked.append(t.name)
    assert not leaked, f"threads left running: {leaked}"

"""Shared fixtures."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run, so CI is deterministic; set
# HYPOTHESIS_PROFILE=explore to search afresh on each run (and keep what fails in .hypothesis/).
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


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


# The PostgreSQL server of the ledger's tests: started when first asked for (tests/pg.py).
from tests.pg import pg_server, pg_url  # noqa: E402, F401

"""Counting the daemon's hand-offs to worker threads (each costs the loop a wake-up)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest


def count_hand_offs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions handed to ``asyncio.to_thread``, from now on."""
    handed: list[str] = []
    real = asyncio.to_thread

    async def counting(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        handed.append(getattr(fn, "__name__", repr(fn)))
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    return handed

"""Which event loop the daemon runs on: uvloop when it is installed, asyncio's own otherwise.

The daemon spends most of its CPU on small steps: an HTTP exchange, a ledger write, a hand-off
to a worker thread. Each costs a few trips through the loop, and uvloop (libuv, in Cython) makes
those trips cheaper than asyncio's selector loop: a worker-thread hand-off costs about 63 µs of
CPU instead of 97 µs here, and the 1,000-file burst benchmark takes about 7 % less CPU per file
(bench/RESULTS.md). Nothing in the daemon depends on which loop it gets: both run the same code,
and the transport tests run on both.

``WATCHD_EVENT_LOOP=asyncio`` in the environment picks asyncio's loop even when uvloop is there
(for comparing them, or to rule the loop out when chasing a problem); ``uvloop`` insists on it
(an error when it is missing); unset or ``auto`` takes uvloop when it can be imported.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "WATCHD_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopError(RuntimeError):
    """``WATCHD_EVENT_LOOP`` asks for something this machine cannot give."""


@dataclass(frozen=True)
class LoopChoice:
    """The loop to run on: its name (``uvloop 0.21.0`` or ``asyncio``) and its factory."""

    name: str
    factory: Callable[[], asyncio.AbstractEventLoop]


def choose(environ: dict[str, str] | None = None) -> LoopChoice:
    """The loop ``WATCHD_EVENT_LOOP`` (from ``environ``, default ``os.environ``) asks for."""
    env = os.environ if environ is None else environ
    wanted = env.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in CHOICES:
        raise EventLoopError(f"{ENV}={wanted!r}: use one of {', '.join(CHOICES)}")
    if wanted != "asyncio":
        try:
            uvloop: Any = importlib.import_module("uvloop")
        except ImportError as e:
            if wanted == "uvloop":
                raise EventLoopError(
                    f"{ENV}=uvloop but uvloop cannot be imported ({e}); install it "
                    "(pip install uvloop) or unset the variable"
                ) from e
        else:
            return LoopChoice(f"uvloop {uvloop.__version__}", uvloop.new_event_loop)
    return LoopChoice("asyncio", asyncio.new_event_loop)


def run(main: Coroutine[Any, Any, T], choice: LoopChoice | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop (see :func:`choose`)."""
    loop = (choice or choose()).factory
    with asyncio.Runner(loop_factory=loop) as runner:
        return runner.run(main)

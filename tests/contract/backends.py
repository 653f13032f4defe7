"""The two backends the contract suite runs against, behind one small interface.

``reference``: the client over MockTransports whose handlers serve the reference's literal
payloads (tests/contract/reference.py). ``emulator``: the client over loopback sockets against
the bundled emulator (``watchd.emulator.Emulator``). A test sets the world up only through this
interface, so the same test states the same behaviour for both.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import httpx

from tests.contract import reference
from watchd.carmic.client import CarmicClient
from watchd.carmic.retry import RetryPolicy
from watchd.clock import FakeClock, SystemClock

# The emulator may answer a little later than a MockTransport: a short, real backoff.
RETRY = RetryPolicy(attempts=3, base=0.05, factor=2, max_delay=0.5, jitter=0)


class Backend(Protocol):
    name: str
    api_url: str
    sample: Path  # a video file both backends accept
    sample_seconds: float

    def client(self, *, password: str | None = None, **kwargs: Any) -> CarmicClient: ...

    def raw_http(self) -> httpx.AsyncClient:
        """A bare httpx client that reaches the API origin (for wire-level checks)."""
        ...

    def set_tier_limit_status(self, status: int) -> None: ...

    def set_minutes(self, minutes: int) -> None: ...

    def set_ticket_shape(self, shape: str) -> None: ...

    def close(self) -> None: ...


class ReferenceBackendAdapter:
    name = "reference"
    api_url = reference.API
    sample_seconds = 4.0

    def __init__(self, sample: Path) -> None:
        self.sample = sample
        self.state = reference.ReferenceBackend()

    def client(self, *, password: str | None = None, **kwargs: Any) -> CarmicClient:
        return CarmicClient(
            reference.API,
            reference.EMAIL,
            password or reference.PASSWORD,
            http=httpx.AsyncClient(transport=httpx.MockTransport(self.state.api)),
            storage_http=httpx.AsyncClient(transport=httpx.MockTransport(self.state.storage)),
            clock=FakeClock(),
            retry=RETRY,
            **kwargs,
        )

    def raw_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.state.api))

    def set_tier_limit_status(self, status: int) -> None:
        self.state.tier_limit_status = status

    def set_minutes(self, minutes: int) -> None:
        self.state.minutes = minutes

    def set_ticket_shape(self, shape: str) -> None:
        self.state.ticket_shape = shape

    def close(self) -> None:
        pass


def emulator_available() -> str | None:
    """None when ``watchd.emulator`` exports what backend (2) needs, else why not."""
    try:
        mod = importlib.import_module("watchd.emulator")
    except ImportError as e:
        return f"watchd.emulator cannot be imported yet ({e})"
    missing = [n for n in ("Emulator", "EmulatorSettings", "Variants") if not hasattr(mod, n)]
    if missing:
        return f"watchd.emulator does not export {', '.join(missing)} yet"
    return None


class EmulatorBackendAdapter:
    name = "emulator"

    def __init__(self, sample: Path, sample_seconds: float) -> None:
        emulator = importlib.import_module("watchd.emulator")
        self._mod = emulator
        self.sample = sample
        self.sample_seconds = sample_seconds
        self._variants = emulator.Variants()
        self._cm: AbstractContextManager[Any] = emulator.Emulator(
            emulator.EmulatorSettings(port=0, storage_port=0, inspect=True)
        )
        self.emu = self._cm.__enter__()
        self.api_url: str = self.emu.api_url

    def client(self, *, password: str | None = None, **kwargs: Any) -> CarmicClient:
        return CarmicClient(
            self.emu.api_url,
            self.emu.seed_email,
            password or self.emu.seed_password,
            clock=SystemClock(),
            retry=RETRY,
            **kwargs,
        )

    def raw_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient()

    def _vary(self, **changes: Any) -> None:
        import dataclasses

        self._variants = dataclasses.replace(self._variants, **changes)
        self.emu.update(variants=self._variants)

    def set_tier_limit_status(self, status: int) -> None:
        self._vary(tier_limit_status=status, tier_limit_at="create")

    def set_minutes(self, minutes: int) -> None:
        self.emu.update(minutes=minutes)

    def set_ticket_shape(self, shape: str) -> None:
        self._vary(sse_ticket=shape)

    def close(self) -> None:
        self._cm.__exit__(None, None, None)

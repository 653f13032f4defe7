"""The bundled Carmic Pro API emulator: the API origin and a storage ("R2") origin.

It follows Carmic's API reference literally where the reference is literal and strictly where it is
strict, so that a client that works against it works against the service. See
:class:`Emulator` for the Python surface and ``watchd emulator --help`` for the command.

The server (aiohttp, PyAV) is imported on first use, so that building ``watchd``'s argument
parser, which adds the emulator's options, stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from watchd.emulator.settings import EmulatorSettings, Faults, Timings, Variants

if TYPE_CHECKING:
    from watchd.emulator.server import Emulator, Registered

__all__ = ["Emulator", "EmulatorSettings", "Faults", "Registered", "Timings", "Variants"]


def __getattr__(name: str) -> Any:
    if name in ("Emulator", "Registered"):
        from watchd.emulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

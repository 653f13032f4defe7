"""The bundled Carmic Pro API emulator: the API origin and a storage ("R2") origin.

It follows ``carmic-api.md`` literally where the reference is literal and strictly where it is
strict, so that a client that works against it works against the service. See
:class:`Emulator` for the Python surface and ``watchd emulator --help`` for the command.
"""

from watchd.emulator.server import Emulator, Registered
from watchd.emulator.settings import EmulatorSettings, Faults, Timings, Variants

__all__ = ["Emulator", "EmulatorSettings", "Faults", "Registered", "Timings", "Variants"]

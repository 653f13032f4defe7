"""The ledger: SQLite record of every source file and its pipeline stage."""

from watchd.ledger.db import ClipRow, EventRow, ExportRow, JobRow, Ledger, LedgerError
from watchd.ledger.states import ALLOWED, TERMINAL, IllegalTransition, Stage

__all__ = [
    "ALLOWED",
    "TERMINAL",
    "ClipRow",
    "EventRow",
    "ExportRow",
    "IllegalTransition",
    "JobRow",
    "Ledger",
    "LedgerError",
    "Stage",
]

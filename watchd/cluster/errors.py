"""Errors of the cluster mode (several hosts sharing a PostgreSQL ledger)."""

from __future__ import annotations

from watchd.ledger.db import LedgerError


class DatabaseUnavailable(LedgerError):
    """The shared ledger database cannot be reached now: wait and reconnect."""


class LeaseLost(LedgerError):
    """This process no longer holds the job's lease: another node carries it on."""


class TakenElsewhere(LedgerError):
    """Another node recorded this file first: it is that node's job."""

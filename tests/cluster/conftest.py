"""Fixtures of the cluster tests: several hosts on one PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from watchd.ledger.pg import PgLedger


@pytest.fixture
def hosts(pg_url: str) -> Iterator[list[PgLedger]]:
    """Three hosts' ledgers on one database (each its own connection pool)."""
    ledgers = [PgLedger(pg_url) for _ in range(3)]
    yield ledgers
    for ledger in ledgers:
        ledger.close()

"""Fixtures of the cluster tests: several hosts on one PostgreSQL database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from watchd.clock import FakeClock
from watchd.cluster.ledger import ClusterLedger
from watchd.ledger.db import Ledger
from watchd.ledger.pg import PgLedger

# make_node(name, lease_seconds=60, inboxes=("studio-a",), clock=None, connect_timeout=10)
NodeFactory = Callable[..., ClusterLedger]


@pytest.fixture
def hosts(pg_url: str) -> Iterator[list[PgLedger]]:
    """Three hosts' ledgers on one database (each its own connection pool)."""
    ledgers = [PgLedger(pg_url) for _ in range(3)]
    yield ledgers
    for ledger in ledgers:
        ledger.close()


@pytest.fixture
def make_node(pg_url: str, tmp_path: Path) -> Iterator[NodeFactory]:
    """Daemons' ledgers on one database, each with its own SQLite ledger (its state_dir) and
    its own clock (a FakeClock unless given): several hosts in one process."""
    made: list[ClusterLedger] = []

    def make(
        name: str,
        *,
        lease_seconds: float = 60.0,
        inboxes: tuple[str, ...] = ("studio-a",),
        clock: FakeClock | None = None,
        connect_timeout: float = 10.0,
    ) -> ClusterLedger:
        local = Ledger.open(tmp_path / f"state-{name}-{len(made)}", clock=clock or FakeClock())
        node = ClusterLedger(
            pg_url,
            local=local,
            node=name,
            lease_seconds=lease_seconds,
            inboxes=inboxes,
            connect_timeout=connect_timeout,
        )
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()
        node.local.close()

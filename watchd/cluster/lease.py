"""Keeping this node's leases: renewal every ``lease_seconds / 3``, and the gate every request to
Carmic and every stage of a job passes first.

A lease is pushed out on the database's clock (watchd/cluster/ledger.py :meth:`renew`); this
host only trusts it for ``lease_seconds`` from the moment the renewal started, by its monotonic
clock. A process that was frozen (SIGSTOP, a paused VM) finds, when it wakes, that it can no
longer be sure of its leases: the gate holds every request back until a renewal has said which
jobs are still ours, and the tasks of the others are cancelled before they send anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from watchd.clock import Clock
from watchd.cluster.context import CURRENT_JOB
from watchd.cluster.errors import DatabaseUnavailable, LeaseLost

if TYPE_CHECKING:
    from watchd.cluster.ledger import ClusterLedger

log = logging.getLogger("watchd.cluster")


class LeaseKeeper:
    """Renews ``ledger``'s leases; ``on_lost(job_id)`` is called for each job another node took
    over (the pipeline cancels its task). ``on_database(up)`` is told when the database stops
    or starts answering."""

    def __init__(
        self,
        ledger: ClusterLedger,
        clock: Clock,
        *,
        on_lost: Callable[[str], None] = lambda job_id: None,
        on_database: Callable[[bool], None] = lambda up: None,
    ) -> None:
        self.ledger = ledger
        self.clock = clock
        self.on_lost = on_lost
        self.on_database = on_database
        self.every = max(0.5, ledger.lease_seconds / 3)
        self._lock = asyncio.Lock()
        self.database_up = True
        self.failures = 0

    @property
    def must_renew(self) -> bool:
        """True when the leases may not hold long enough for a call: the last renewal is more
        than a third of a lease late (a freeze, or the database not answering)."""
        return self.ledger.lease_left() < self.ledger.lease_seconds / 3

    async def run(self) -> None:
        while True:
            late = self.clock.monotonic() - self.ledger.renewed_at
            await self.clock.sleep(
                max(0.0, self.every - late)
                if self.database_up
                else min(self.every, 2.0 * 2 ** min(self.failures, 4))
            )
            await self.renew()

    async def renew(self) -> bool:
        """Renew now (once for all who ask at the same time); True when the database answered."""
        async with self._lock:
            if not self.must_renew and self.database_up and self._fresh():
                return True
            try:
                lost = self.ledger.renew()
            except DatabaseUnavailable as e:
                self.failures += 1
                if self.database_up:
                    self.database_up = False
                    log.warning(
                        "%s; starting nothing new, retrying; the jobs held lapse to the other "
                        "nodes in %.0f s unless it is back",
                        e,
                        max(0.0, self.ledger.lease_left()),
                    )
                    self.on_database(False)
                return False
            self.failures = 0
            if not self.database_up:
                self.database_up = True
                log.info("the ledger database answers again")
                self.on_database(True)
            for job_id in lost:
                log.warning(
                    "its lease lapsed and another node took it over; this node stops working on it",
                    extra={"job_id": job_id},
                )
                self.on_lost(job_id)
            return True

    def _fresh(self) -> bool:
        # Renewed within this renewal period (by another caller while we waited for the lock).
        return self.clock.monotonic() - self.ledger.renewed_at < self.every

    async def gate(self) -> None:
        """Before a request to Carmic or a job's next stage: the leases must be sure to hold
        for a while yet (renewing first when they are not), and the job of the running task
        must still be this node's."""
        if self.must_renew:
            await self.renew()
            if self.must_renew:
                raise DatabaseUnavailable(
                    "cannot renew this node's leases (the ledger database does not answer): "
                    "nothing is sent until it does"
                )
        job_id = CURRENT_JOB.get()
        if job_id is not None and not self.ledger.holds(job_id):
            raise LeaseLost(f"job {job_id} is now held by another node")

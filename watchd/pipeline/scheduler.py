"""Who may start a project next.

A workspace may only have so many projects in processing (its tier's limit); when more files
wait than there are slots, they are served round-robin across (inbox, rule) groups so one busy
folder cannot starve the others. The limit comes from the config, else the workspace tier, else
what the API taught us (a concurrency-limit answer while N of our projects were in flight means
the limit is N).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from watchd.ledger.db import JobRow
from watchd.ledger.states import Stage

TIER_LIMITS: dict[str, int | None] = {
    "FREE": 1,
    "STANDARD": 1,
    "PROFESSIONAL": 1,
    "PRO": 1,
    "BUSINESS": 2,
    "ENTERPRISE": None,
}


def tier_limit(tier: str | None) -> int | None:
    """The reference's concurrency table; None = unlimited or unknown."""
    if not tier:
        return None
    return TIER_LIMITS.get(tier.strip().upper())


class LearnedLimit(Protocol):
    """Where hosts sharing a workspace keep what any of them learned of its processing limit
    (``watchd.cluster.pace.SharedProcessingLimit``)."""

    def get(self) -> int | None:
        """The limit learned so far, None if none."""
        ...

    def lower(self, limit: int) -> bool:
        """Record that the limit is at most ``limit``; returns whether that lowered it."""
        ...


@dataclass
class ProcessingLimit:
    configured: int = 0  # [carmic] max_processing; 0 = not set
    tier: int | None = None
    learned: int | None = None
    # Several hosts on one workspace: the learned limit is theirs, read from and written there.
    shared: LearnedLimit | None = None

    def effective(self) -> int | None:
        if self.configured > 0:
            return self.configured
        if self.shared is not None:
            self.learned = self.shared.get()
        limits = [x for x in (self.tier, self.learned) if x is not None]
        return min(limits) if limits else None

    def learn(self, in_flight_others: int) -> bool:
        """A concurrency-limit answer arrived while ``in_flight_others`` of our projects were
        processing: the limit cannot be more than that (unless it was someone else's project).
        Returns whether that lowered what was learned before."""
        if in_flight_others <= 0:
            return False
        if self.shared is not None:
            lowered = self.shared.lower(in_flight_others)
            self.learned = self.shared.get()
            return lowered
        if self.learned is not None and self.learned <= in_flight_others:
            return False
        self.learned = in_flight_others
        return True


# Where our projects stand when the service counts them against the limit: a refused create
# counts every project of ours that exists and is not done; a refused /process only those whose
# processing it accepted.
COUNTED_AT_CREATE = frozenset({Stage.UPLOADING, Stage.UPLOADED, Stage.PROCESSING})
COUNTED_AT_PROCESS = frozenset({Stage.PROCESSING})


@dataclass(frozen=True)
class TierWait:
    """A job parked on a tier-limit refusal: ``holders`` of our projects stood in ``stages``
    when the service said no. Once fewer do, one of our own slots is free and the job may ask
    again without waiting out the service's Retry-After."""

    stages: frozenset[Stage]
    holders: int


def group_of(job: JobRow) -> tuple[str, str]:
    return (job.inbox, job.rule)


@dataclass
class FairPicker:
    """Round-robin over groups; oldest first inside a group. The cursor survives ticks."""

    last: tuple[str, str] | None = field(default=None)

    def pick(self, waiting: Sequence[JobRow], capacity: int | None) -> list[JobRow]:
        if capacity is not None and capacity <= 0:
            return []
        queues: dict[tuple[str, str], list[JobRow]] = {}
        for job in sorted(waiting, key=lambda j: (j.created_at, j.id)):
            queues.setdefault(group_of(job), []).append(job)
        order = sorted(queues)
        if self.last is not None:
            # Start with the first group after the one served last.
            later = [g for g in order if g > self.last]
            earlier = [g for g in order if g <= self.last]
            order = later + earlier
        picked: list[JobRow] = []
        limit = capacity if capacity is not None else len(waiting)
        while len(picked) < limit and any(queues[g] for g in order):
            for g in order:
                if queues[g] and len(picked) < limit:
                    picked.append(queues[g].pop(0))
                    self.last = g
        return picked

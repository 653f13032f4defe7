"""Pipeline stages and the transitions allowed between them.

Stages are stored in SQLite by their readable value. A move that is not in ``ALLOWED`` raises
:class:`IllegalTransition`, like httpx's guard on client state: a bug in the pipeline must never
silently corrupt a job's record.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    QUEUED = "queued"  # settled and recorded; not yet probed
    PROBED = "probed"  # valid video; waiting for a processing slot to create its project
    CREATING = "creating"  # create intent recorded; POST /projects/create sent or about to be
    UPLOADING = "uploading"  # project exists; the file is being PUT to the presigned URL
    UPLOADED = "uploaded"  # the storage has every byte; /process not yet accepted
    PROCESSING = "processing"  # Carmic is transcribing/detecting clips
    CLIPS_READY = "clips_ready"  # clips known and chosen
    RENDERING = "rendering"  # preset applied, renders requested and followed
    EXPORTING = "exporting"  # NLE exports requested and followed
    DELIVERING = "delivering"  # results being written to the outbox
    DELIVERED = "delivered"  # terminal: manifest written, source disposed of
    FAILED = "failed"  # terminal until `watchd retry`
    PARKED = "parked"  # waits on something outside (billing minutes, tier)
    DUPLICATE = "duplicate"  # same content as an earlier job; waits for it, then points to it

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({Stage.DELIVERED, Stage.FAILED})

# Stages during which a project counts against the workspace's processing concurrency.
HOLDS_PROCESSING_SLOT = frozenset(
    {Stage.CREATING, Stage.UPLOADING, Stage.UPLOADED, Stage.PROCESSING}
)

# Stages that still need the source file on disk.
NEEDS_SOURCE = frozenset({Stage.QUEUED, Stage.PROBED, Stage.CREATING, Stage.UPLOADING})

# Stages a parked or failed job may resume at.
RESUMABLE = frozenset(
    {
        Stage.QUEUED,
        Stage.PROBED,
        Stage.CREATING,
        Stage.UPLOADING,
        Stage.UPLOADED,
        Stage.PROCESSING,
        Stage.CLIPS_READY,
        Stage.RENDERING,
        Stage.EXPORTING,
        Stage.DELIVERING,
        Stage.DUPLICATE,
    }
)

_S = Stage
ALLOWED: dict[Stage, frozenset[Stage]] = {
    _S.QUEUED: frozenset({_S.PROBED, _S.DUPLICATE, _S.FAILED, _S.PARKED}),
    _S.PROBED: frozenset({_S.CREATING, _S.QUEUED, _S.FAILED, _S.PARKED}),
    # CREATING -> PROBED: a 429 or tier limit said "not now" and nothing was created.
    _S.CREATING: frozenset({_S.UPLOADING, _S.PROBED, _S.FAILED, _S.PARKED}),
    # UPLOADING -> PROBED: the presigned URL expired; the project was deleted, create afresh.
    # UPLOADING -> QUEUED: the source changed after it was taken; settle and probe it again.
    _S.UPLOADING: frozenset({_S.UPLOADED, _S.PROBED, _S.QUEUED, _S.FAILED, _S.PARKED}),
    # UPLOADED -> UPLOADING: the storage did not see the object; upload again.
    _S.UPLOADED: frozenset({_S.PROCESSING, _S.UPLOADING, _S.FAILED, _S.PARKED}),
    _S.PROCESSING: frozenset({_S.CLIPS_READY, _S.FAILED, _S.PARKED}),
    _S.CLIPS_READY: frozenset({_S.RENDERING, _S.EXPORTING, _S.DELIVERING, _S.FAILED}),
    _S.RENDERING: frozenset({_S.EXPORTING, _S.DELIVERING, _S.FAILED, _S.PARKED}),
    _S.EXPORTING: frozenset({_S.DELIVERING, _S.FAILED, _S.PARKED}),
    _S.DELIVERING: frozenset({_S.DELIVERED, _S.FAILED}),
    _S.DUPLICATE: frozenset({_S.DELIVERED, _S.FAILED, _S.QUEUED}),
    _S.PARKED: RESUMABLE | {_S.FAILED},
    _S.FAILED: RESUMABLE,  # only through `watchd retry`
    _S.DELIVERED: frozenset(),
}


class IllegalTransition(RuntimeError):
    def __init__(self, job_id: str, src: Stage, dst: Stage) -> None:
        super().__init__(f"job {job_id}: illegal transition {src.value} -> {dst.value}")
        self.job_id = job_id
        self.src = src
        self.dst = dst


def check_transition(job_id: str, src: Stage, dst: Stage) -> None:
    """Raise :class:`IllegalTransition` unless ``src -> dst`` is in the table."""
    if dst not in ALLOWED[src]:
        raise IllegalTransition(job_id, src, dst)

"""What the pipeline, the daemon and the CLI ask of a ledger, whichever database holds it.

Two implementations: :class:`watchd.ledger.db.Ledger` (SQLite in ``state_dir``, the default, one
host) and :class:`watchd.ledger.pg.PgLedger` (PostgreSQL, shared by several hosts). Both return
the same frozen rows (:class:`JobRow`, :class:`ClipRow`, ...) and raise the same errors:
:class:`LedgerError` for an unknown job or field and a refused operator command,
:class:`~watchd.ledger.states.IllegalTransition` for a move the stage table forbids. One test
suite (tests/ledger/test_contract.py) holds both to this.

Every method is synchronous: the daemon calls them on its event-loop thread, where each is one
short transaction (a local SQLite commit, or one round trip or a few to a nearby PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from watchd.clock import Clock
from watchd.ledger.db import ClipRow, EventRow, ExportRow, InboxRow, JobRow
from watchd.ledger.states import Stage

if TYPE_CHECKING:
    from watchd.ledger.db import Ledger
    from watchd.ledger.pg import PgLedger


class LedgerAPI(Protocol):
    clock: Clock

    def close(self) -> None: ...

    def schema_version(self) -> int: ...

    # ---- transactions ----------------------------------------------------------------------

    def batch(self) -> AbstractContextManager[None]:
        """The writes made inside share one transaction: all or none."""
        ...

    def granting(self) -> AbstractContextManager[bool]:
        """Grants of processing slots are made inside; yields True when the ledger is shared
        by several hosts (the grants are then serialised with theirs)."""
        ...

    def relaxed(self) -> AbstractContextManager[None]:
        """Writes made inside may be lost to a power cut (never to a crash of the process)."""
        ...

    @property
    def unsynced_writes(self) -> int: ...

    def make_durable(self) -> None:
        """Every relaxed commit so far made durable (a no-op when there is none)."""
        ...

    # ---- jobs ------------------------------------------------------------------------------

    def add_job(
        self,
        *,
        inbox: str,
        rel_path: str,
        path: str,
        rule: str,
        preset: dict[str, Any],
        size: int,
        mtime_ns: int,
        inode: int,
        dev: int,
        fingerprint: str,
        actor: str = "watcher",
    ) -> JobRow: ...

    def get(self, job_id: str) -> JobRow | None: ...

    def require(self, job_id: str) -> JobRow: ...

    def jobs(self, states: Iterable[Stage] | None = None) -> list[JobRow]: ...

    def active_jobs(self) -> list[JobRow]: ...

    def due_jobs(self, now: float) -> list[JobRow]: ...

    def due_ids(self, now: float, *, idle_only: bool = False) -> list[tuple[str, str, str]]: ...

    def set_busy(self, job_id: str, busy: bool) -> None: ...

    def get_many(self, job_ids: Sequence[str]) -> list[JobRow]: ...

    def next_due_at(self) -> float | None: ...

    def find_by_identity(
        self, inbox: str, rel_path: str, size: int, mtime_ns: int
    ) -> JobRow | None: ...

    def active_at_path(self, inbox: str, rel_path: str) -> JobRow | None:
        """The newest unfinished job for this source path, if any."""
        ...

    def find_by_fingerprint(
        self, fingerprint: str, *, exclude: str | None = None
    ) -> list[JobRow]: ...

    def fingerprint_range(self, low: str, high: str, *, size: int) -> list[JobRow]: ...

    def outbox_dir_taken(self, outbox_dir: str, *, exclude: str | None = None) -> bool: ...

    def known_identities(self) -> dict[tuple[str, str], set[tuple[int, int]]]: ...

    def transition(
        self,
        job_id: str,
        to: Stage,
        *,
        expect: Stage | None = None,
        actor: str = "daemon",
        kind: str = "transition",
        detail: Any = None,
        **updates: Any,
    ) -> JobRow: ...

    def update(self, job_id: str, **updates: Any) -> None: ...

    def record_event(
        self, job_id: str, kind: str, detail: Any = None, *, actor: str = "daemon"
    ) -> None: ...

    def events(self, job_id: str | None = None) -> list[EventRow]: ...

    # ---- operator commands -----------------------------------------------------------------

    def retry(self, job_id: str, *, actor: str = "cli") -> JobRow:
        """A failed or parked job back in the queue at the stage it stopped at (else queued),
        its attempts, next attempt, error, park reason and finish time cleared; LedgerError for
        any other job (:meth:`check_retryable`)."""
        ...

    def check_retryable(self, job: JobRow) -> None:
        """LedgerError unless ``job`` is failed or parked (what :meth:`retry` refuses)."""
        ...

    def forget(self, job_id: str, *, actor: str = "cli") -> None:
        """Drop a delivered or failed job with its clips and exports; its ``forgotten`` event
        keeps the file's identity for :meth:`forgotten_since`."""
        ...

    def forgotten_since(self, after: int | None) -> tuple[int, list[tuple[str, str, int, int]]]:
        """Files whose jobs were forgotten after event ``after``, as ``(inbox, rel_path, size,
        mtime_ns)`` in the order forgotten, and the event id to ask after next time; with
        ``after`` None, only that id (a forget committed later is never missed)."""
        ...

    # ---- clips and exports -----------------------------------------------------------------

    def put_clips(self, job_id: str, clips: Sequence[dict[str, Any]]) -> None: ...

    def clips(self, job_id: str, *, selected_only: bool = False) -> list[ClipRow]: ...

    def update_clip(self, job_id: str, clip_id: str, **updates: Any) -> None: ...

    def put_export(self, job_id: str, clip_id: str, fmt: str, **values: Any) -> None: ...

    def exports(self, job_id: str) -> list[ExportRow]: ...

    # ---- inboxes, heartbeat, totals --------------------------------------------------------

    def set_inbox(
        self,
        path: str,
        *,
        paused: bool,
        reason: str | None,
        entries: int,
        last_scan_at: float | None,
    ) -> None: ...

    def inboxes(self) -> list[InboxRow]: ...

    def heartbeat(self, pid: int) -> None: ...

    def last_heartbeat(self) -> dict[str, Any] | None: ...

    def upload_totals(self) -> tuple[int, int]: ...

    def wait_counts(self, *, parked: bool = True) -> dict[str, int]:
        """Unfinished jobs with a wait, by its cause (the text before the first colon); the
        parked ones left out unless ``parked``."""
        ...

    def counts_by_state(self) -> dict[str, int]: ...


def _both_satisfy(sqlite: Ledger, pg: PgLedger) -> tuple[LedgerAPI, LedgerAPI]:
    """Never called: mypy checks here that both ledgers have every method of the protocol."""
    return sqlite, pg

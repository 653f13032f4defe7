"""Events from the state machine: the ledger's observer that queues notifications.

Set as :attr:`Ledger.observer`, it is called inside the transaction of every transition, job
intake and inbox change; what it writes (the event, one queue row per notifier that wants it)
commits or rolls back with that change, so a crash can neither lose an event nor invent one.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from watchd.clock import Clock
from watchd.ledger.db import JobRow
from watchd.ledger.states import Stage
from watchd.notify import events as ev
from watchd.notify import queue
from watchd.notify.config import NotifierConfig

log = logging.getLogger("watchd.notify")

_STAGE_EVENTS = {Stage.DELIVERED, Stage.FAILED, Stage.PARKED}


class Recorder:
    """``notifiers``: the current ``[[notify]]`` tables (:meth:`configure` on reload);
    ``inbox_names``: inbox key (its path, as the ledger stores it) -> its name;
    ``on_recorded``: called after rows were queued (wakes the dispatcher; the rows are only
    visible once the caller's transaction commits, which it does before the loop runs again)."""

    def __init__(
        self,
        notifiers: Sequence[NotifierConfig],
        inbox_names: Mapping[str, str],
        clock: Clock,
        on_recorded: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.on_recorded = on_recorded
        self.notifiers: tuple[NotifierConfig, ...] = ()
        self.inbox_names: dict[str, str] = {}
        self.stages: frozenset[Stage] = frozenset()
        self.configure(notifiers, inbox_names)

    def configure(
        self, notifiers: Sequence[NotifierConfig], inbox_names: Mapping[str, str]
    ) -> None:
        self.notifiers = tuple(notifiers)
        self.inbox_names = dict(inbox_names)
        # No notifier: the ledger does not call job_moved at all.
        self.stages = frozenset(_STAGE_EVENTS) if self.notifiers else frozenset()

    # ---- the Observer protocol -------------------------------------------------------------

    def job_added(self, conn: sqlite3.Connection, job: JobRow) -> None:
        self._job_event(conn, ev.JOB_QUEUED, job, manifest=None, error=None)

    def job_moved(self, conn: sqlite3.Connection, job: JobRow, src: Stage, detail: Any) -> None:
        to = job.stage
        details = detail if isinstance(detail, Mapping) else {}
        if to is Stage.DELIVERED:
            manifest = ev.read_manifest(job.outbox_dir)
            status = (manifest or {}).get("status") or details.get("status")
            type_ = ev.JOB_PARTIAL if status == "partial" else ev.JOB_DELIVERED
            self._job_event(conn, type_, job, manifest=manifest, error=None)
        elif to is Stage.FAILED:
            message = details.get("message", job.error)
            # The ledger's error text is the message, then " — " and the hint when there is one.
            hint = details.get("hint")
            if hint is None and message and job.error and job.error.startswith(message + " — "):
                hint = job.error[len(message) + 3 :]
            error = ev.fail_error(details.get("code", job.error_code), message, hint)
            self._job_event(conn, ev.JOB_FAILED, job, manifest=None, error=error)
        elif to is Stage.PARKED and src is not Stage.PARKED:
            error = ev.park_error(job.park_reason or details.get("reason"), job.id)
            self._job_event(conn, ev.JOB_PARKED, job, manifest=None, error=error)

    def inbox_changed(
        self, conn: sqlite3.Connection, path: str, paused: bool, reason: str | None
    ) -> None:
        if not self.notifiers:
            return
        row = conn.execute("SELECT paused FROM inboxes WHERE path = ?", (path,)).fetchone()
        was_paused = bool(row[0]) if row else False
        if paused == was_paused:
            return
        type_ = ev.INBOX_PAUSED if paused else ev.INBOX_RESUMED
        name = self.inbox_name(path)
        now = self.clock.now()
        body = ev.encode(type_, now, ev.inbox_data(name, reason if paused else None))
        event = ev.Event(ev.new_msg_id(), type_, now, body, inbox=name)
        self._queue(conn, event, rule=None)

    # ---- building ----------------------------------------------------------------------------

    def inbox_name(self, key: str) -> str:
        return self.inbox_names.get(key) or Path(key).name

    def _job_event(
        self,
        conn: sqlite3.Connection,
        type_: str,
        job: JobRow,
        *,
        manifest: dict[str, Any] | None,
        error: dict[str, str] | None,
    ) -> None:
        if not any(n.wants(type_, job.rule) for n in self.notifiers):
            return
        try:
            event = self._build(type_, job, manifest, error)
        except Exception:
            # A bug in what a notification says must not stop the change it is about.
            log.exception("notify: cannot build the %s event of job %s; not sent", type_, job.id)
            return
        self._queue(conn, event, rule=job.rule)

    def _build(
        self,
        type_: str,
        job: JobRow,
        manifest: dict[str, Any] | None,
        error: dict[str, str] | None,
    ) -> ev.Event:
        delivery = job.preset_dict.get("_delivery") or {}
        name = self.inbox_name(job.inbox)
        now = self.clock.now()
        data = ev.job_data(
            job_id=job.id,
            inbox=name,
            rule=job.rule,
            name=job.name,
            rel_path=job.rel_path,
            size=job.size,
            sha256=job.sha256 or (manifest or {}).get("source", {}).get("sha256"),
            state=job.state,
            project_id=job.project_id,
            outbox=ev.outbox_relative(job.outbox_dir, delivery.get("outbox")),
            manifest=manifest,
            error=error,
        )
        body = ev.encode(type_, now, data)
        return ev.Event(ev.new_msg_id(), type_, now, body, job_id=job.id, inbox=name, rule=job.rule)

    def _queue(self, conn: sqlite3.Connection, event: ev.Event, *, rule: str | None) -> None:
        names = [n.name for n in self.notifiers if n.wants(event.type, rule)]
        if queue.record(conn, event, names, event.at):
            self.on_recorded()

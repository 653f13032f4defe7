"""A dashboard on real loopback over a real ledger, for the handler tests (no browser)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchd.ledger.db import JobRow, Ledger
from watchd.ledger.states import Stage
from watchd.secrets import Secret
from watchd.web.app import WebServer
from watchd.web.settings import WebConfig

TOKEN = "t0ken-for-the-dashboard-tests-0123456789"


@dataclass
class StaticSource:
    """The daemon's side of the dashboard, as plain values a test sets."""

    ledger: Ledger | None
    paused: list[tuple[str, str]] = field(default_factory=list)
    starting_text: str | None = None
    problems: list[str] = field(default_factory=list)

    def paused_inboxes(self) -> list[tuple[str, str]]:
        return list(self.paused)

    def starting(self) -> str | None:
        return self.starting_text

    def notifier_problems(self) -> list[str]:
        return list(self.problems)

    def node_of(self, job: JobRow) -> str:
        return ""


def add_job(
    ledger: Ledger,
    rel: str,
    state: Stage = Stage.QUEUED,
    *,
    outbox: Path | None = None,
    rule: str = "",
    **fields: Any,
) -> str:
    """A job in ``state`` (set directly: these tests read rows, not the transition table)."""
    delivery = {"inbox": "/srv/inbox", "outbox": str(outbox or "/srv/outbox")}
    job = ledger.add_job(
        inbox="/srv/inbox",
        rel_path=rel,
        path=f"/srv/inbox/{rel}",
        rule=rule,
        preset={"_delivery": delivery},
        size=1000,
        mtime_ns=len(rel),
        inode=1,
        dev=1,
        fingerprint=f"fp-{rel}",
    )
    if state is not Stage.QUEUED or fields:
        ledger.update(job.id, state=state.value, **fields)
    return job.id


@asynccontextmanager
async def serve(
    source: StaticSource, *, listen: str = "127.0.0.1:0", token: str | None = TOKEN
) -> AsyncIterator[WebServer]:
    config = WebConfig(listen=listen, token=Secret(token) if token else None)
    server = WebServer(config, source, interval=0.02)
    await server.start()
    if source.ledger is not None:
        source.ledger.on_change = server.note
    try:
        yield server
    finally:
        await server.close()


def status_json(ledger: Ledger) -> Any:
    from watchd.status_view import render_json

    return json.loads(render_json(ledger))

"""``watchd status``: the ledger as a table sized to the terminal, as JSON, or live."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from watchd.ledger.db import InboxRow, JobRow, Ledger

BAR_STAGES = {"uploading": "upload", "processing": "process", "rendering": "render"}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_json(job: JobRow) -> dict[str, Any]:
    """One element of ``watchd status --json`` (the contract's keys first)."""
    return {
        "id": job.id,
        "path": job.path,
        "rule": job.rule,
        "state": job.state,
        "progress": job.progress,
        "project_id": job.project_id,
        "error": job.error,
        "updated_at": iso(job.updated_at),
        "created_at": iso(job.created_at),
        "source": job.rel_path,
        "inbox": job.inbox,
        "step": job.step,
        "error_code": job.error_code,
        "park_reason": job.park_reason,
        "resume_stage": job.resume_stage,
        "attempts": job.attempts,
        "next_attempt_at": iso(job.next_attempt_at) if job.next_attempt_at else None,
        "duplicate_of": job.duplicate_of,
        "outbox": job.outbox_dir,
        "size": job.size,
        "bytes_uploaded": job.bytes_uploaded,
    }


def render_json(ledger: Ledger) -> str:
    return json.dumps([job_json(j) for j in ledger.jobs()], indent=2)


def _age(now: float, ts: float) -> str:
    s = max(0, int(now - ts))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def _bar(pct: float, width: int = 10) -> str:
    pct = max(0.0, min(100.0, pct))
    filled = round(width * pct / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {pct:3.0f}%"


def _cut(text: str, width: int) -> str:
    if width <= 1:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(jobs: list[JobRow], inboxes: list[InboxRow], *, now: float, width: int) -> str:
    lines: list[str] = []
    for ib in inboxes:
        if ib.paused:
            lines.append(f"! inbox {ib.path} PAUSED: {ib.reason}")
    if not jobs:
        lines.append("no jobs yet")
        return "\n".join(lines) + "\n"
    head = f"{'ID':<12} {'STATE':<11} {'PROGRESS':<16} {'AGE':>6}  SOURCE / DETAIL"
    lines.append(head)
    fixed = 12 + 1 + 11 + 1 + 16 + 1 + 6 + 2
    rest = max(20, width - fixed)
    for j in jobs:
        progress = ""
        if j.state in BAR_STAGES or j.state == "delivering":
            progress = _bar(j.progress)
        detail = j.rel_path
        if j.state == "parked" and j.park_reason:
            detail += f" — waiting: {j.park_reason}"
        elif j.error:
            detail += f" — {j.error}"
        elif j.step:
            detail += f" — {j.step}"
        age = _age(now, j.created_at)
        lines.append(f"{j.id:<12} {j.state:<11} {progress:<16} {age:>6}  {_cut(detail, rest)}")
    return "\n".join(lines) + "\n"


def show(
    ledger: Ledger,
    out: TextIO,
    *,
    as_json: bool = False,
    watch: bool = False,
    interval: float = 2.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    rounds: int | None = None,
) -> int:
    if as_json:
        out.write(render_json(ledger) + "\n")
        return 0
    n = 0
    while True:
        width = shutil.get_terminal_size((120, 24)).columns
        text = render_table(ledger.jobs(), ledger.inboxes(), now=clock(), width=width)
        if watch:
            out.write("\x1b[H\x1b[2J")
        out.write(text)
        out.flush()
        n += 1
        if not watch or (rounds is not None and n >= rounds):
            return 0
        sleep(interval)

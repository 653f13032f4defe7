"""``watchd status``: the ledger as a table sized to the terminal, as JSON, or live.

The table starts with whether the daemon runs (from the heartbeat it writes into the ledger
every few seconds) and a one-line summary, the same one the daemon sends systemd as
``STATUS=``; then one row per job, with a progress bar while it uploads, processes, renders or
delivers, and its error or the reason it waits on a line of its own.

With ``[cluster]`` the jobs are every host's, read from the shared PostgreSQL ledger, each with
the node that holds or last held it, and a table of the cluster's daemons comes first; what is
this host's own (its daemon's heartbeat, the inbox entries that are not jobs, paused inboxes,
the notification queue) is still read from its SQLite ledger (:class:`StatusSource`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from watchd.cluster_config import default_node
from watchd.ledger.db import EntryRow, InboxRow, JobRow, Ledger
from watchd.ledger.states import Stage
from watchd.watching.entries import SETTLING, settling_text

if TYPE_CHECKING:
    from watchd.cluster.nodes import NodeRow
    from watchd.ledger.protocol import LedgerAPI

BAR_STATES = frozenset({"uploading", "processing", "rendering", "exporting", "delivering"})
HEARTBEAT_STALE = 20.0  # the daemon writes its heartbeat every 5 s: 4 missed = not responding
MIN_WIDTH = 60


def iso(ts: float | None) -> str | None:
    """``2026-11-29T12:00:00Z`` for a Unix time (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class StatusSource:
    """Where ``watchd status`` reads. On one host everything comes from its SQLite ledger. With
    ``[cluster]``, ``jobs`` is the shared ledger (every host's jobs), ``local`` this host's
    SQLite ledger (None before its daemon first ran) and ``nodes`` reads the cluster's
    daemons."""

    jobs: LedgerAPI
    local: Ledger | None
    nodes: Callable[[], list[NodeRow]] | None = None

    @classmethod
    def one_host(cls, ledger: Ledger) -> StatusSource:
        return cls(ledger, ledger)

    @property
    def cluster(self) -> bool:
        return self.nodes is not None


def _source(what: Ledger | StatusSource) -> StatusSource:
    return what if isinstance(what, StatusSource) else StatusSource.one_host(what)


def job_node(job: JobRow, *, cluster: bool = False) -> str | None:
    """The node a job is shown with: the one that holds or last held it (None: none has taken
    it yet); on one host, where the column is always empty, this host's name."""
    if cluster or job.node is not None:
        return job.node
    return default_node()


def job_json(job: JobRow, *, cluster: bool = False) -> dict[str, Any]:
    """One element of ``watchd status --json`` (the documented keys first: docs/cli.md)."""
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
        # A wait is not an error: "cause: detail", until when (None: until something happens).
        "wait": job.wait,
        "wait_until": iso(job.wait_until),
        "wait_since": iso(job.wait_since),
        "node": job_node(job, cluster=cluster),
    }


def entry_json(entry: EntryRow, now: float) -> dict[str, Any]:
    """An inbox entry that is not a job (settling, or not taken) in the shape of a job's
    element: no id, ``taken`` false, ``reason`` says why it is not a job (yet)."""
    reason = entry_reason(entry, now)
    return {
        "id": None,
        "path": entry.path,
        "rule": entry.rule,
        "state": entry.state,
        "progress": 0.0,
        "project_id": None,
        "error": None if entry.state == SETTLING else reason,
        "updated_at": iso(entry.updated_at),
        "source": entry.rel_path,
        "inbox": entry.inbox,
        "step": reason if entry.state == SETTLING else None,
        "error_code": entry.code,
        "size": entry.size,
        "taken": False,
        "reason": reason,
        "name_escaped": bool(entry.escaped),
        "node": None,
    }


def entry_reason(entry: EntryRow, now: float) -> str:
    if entry.state == SETTLING:
        return settling_text(entry.since, entry.wait, now, entry.reason)
    return entry.reason or "not taken"


def render_json(ledger: Ledger | StatusSource, *, now: float | None = None) -> str:
    """``watchd status --json``: a JSON array, one object per job, then one per inbox entry
    of this host that is not a job (files settling, entries not taken)."""
    source = _source(ledger)
    at = time.time() if now is None else now
    rows = [job_json(j, cluster=source.cluster) for j in source.jobs.jobs()]
    if source.local is not None:
        rows += [entry_json(e, at) for e in source.local.entries()]
    return json.dumps(rows, indent=2)


# ---- the summary line (also systemd's STATUS=) -----------------------------------------------


def summary_line(ledger: LedgerAPI, *, paused_inboxes: int | None = None) -> str:
    """``3 queued, 1 uploading 42%, 2 processing, 0 rendering/delivering, 1 parked (billing),
    0 failed, 7 delivered`` (plus ``; 1 inbox(es) paused``). ``paused_inboxes`` defaults to what
    the ledger recorded at the last scan."""
    counts = ledger.counts_by_state()
    waiting = counts.get("queued", 0) + counts.get("probed", 0) + counts.get("duplicate", 0)
    uploading = counts.get("uploading", 0)
    processing = sum(counts.get(s, 0) for s in ("creating", "uploaded", "processing"))
    working = sum(counts.get(s, 0) for s in ("clips_ready", "rendering", "exporting", "delivering"))
    parked = counts.get("parked", 0)
    up = f"{uploading} uploading"
    if uploading:
        sent, total = ledger.upload_totals()
        up += f" {100 * sent // max(1, total)}%"
    park = f"{parked} parked"
    if parked:
        kinds = sorted({reason_kind(j.park_reason) for j in ledger.jobs([Stage.PARKED])} - {""})
        if kinds:
            park += f" ({', '.join(kinds)})"
    line = (
        f"{waiting} queued, {up}, {processing} processing, {working} rendering/delivering, "
        f"{park}, {counts.get('failed', 0)} failed, {counts.get('delivered', 0)} delivered"
    )
    waits = ledger.wait_counts(parked=False)  # the parked ones are told above, with their cause
    if waits:
        line += f"; {sum(waits.values())} waiting ({', '.join(sorted(waits))})"
    if paused_inboxes is None:
        paused_inboxes = sum(1 for i in ledger.inboxes() if i.paused)
    if paused_inboxes:
        line += f"; {paused_inboxes} inbox(es) paused"
    return line


def reason_kind(reason: str | None) -> str:
    """``"billing: Insufficient processing minutes"`` -> ``"billing"``."""
    if not reason:
        return ""
    return reason.split(":", 1)[0].strip()[:40]


# ---- is the daemon running? ------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user (the service's)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class DaemonState:
    """What the ledger's heartbeat says about the daemon."""

    running: bool
    text: str


def daemon_state(
    heartbeat: dict[str, Any] | None,
    *,
    now: float,
    alive: Callable[[int], bool] = pid_alive,
    stale: float = HEARTBEAT_STALE,
) -> DaemonState:
    """Running (fresh heartbeat, process exists), not responding (stale heartbeat, process
    still there) or not running."""
    if not heartbeat:
        return DaemonState(False, "daemon: not running (it has never run with this ledger)")
    at = float(heartbeat.get("at") or 0.0)
    pid = int(heartbeat.get("pid") or 0)
    age = format_age(now - at)
    if not alive(pid):
        return DaemonState(False, f"daemon: not running (last seen {iso(at)}, {age} ago)")
    if now - at > stale:
        return DaemonState(False, f"daemon: NOT RESPONDING (pid {pid}, last heartbeat {age} ago)")
    return DaemonState(True, f"daemon: running (pid {pid}, heartbeat {age} ago)")


# ---- the table ---------------------------------------------------------------------------------


def format_age(seconds: float) -> str:
    """``42s``, ``7m``, ``3h05m``, ``2d``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def bar(pct: float, width: int = 10) -> str:
    """``[####......]  40%``."""
    pct = max(0.0, min(100.0, pct))
    filled = round(width * pct / 100)
    return "[" + "#" * filled + "." * (width - filled) + f"] {pct:3.0f}%"


UNCUT_WIDTH = 100_000  # the "terminal" width when the output is not a terminal


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters (an ellipsis marks a cut)."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…" if width > 1 else text[:1]


@dataclass(frozen=True)
class _Column:
    title: str
    width: int
    value: Callable[[JobRow, float], str]
    right: bool = False


def _progress(job: JobRow, bar_width: int) -> str:
    if job.state not in BAR_STATES:
        return ""
    return bar(job.progress, bar_width)


NODE_WIDTH = 12


def _columns(width: int, *, cluster: bool = False) -> list[_Column]:
    """The columns that fit ``width``; the source column takes what is left. With
    ``cluster``, each job's node after its state."""
    bar_width = 10 if width >= 90 else 5
    cols = [
        _Column("ID", 11, lambda j, now: j.id),
        _Column("STATE", 11, lambda j, now: j.state),
    ]
    if cluster:
        cols.append(_Column("NODE", NODE_WIDTH, lambda j, now: j.node or "-"))
    cols += [
        _Column("PROGRESS", bar_width + 7, lambda j, now: _progress(j, bar_width)),
        _Column("AGE", 6, lambda j, now: format_age(now - j.created_at), right=True),
    ]
    if width >= 120:
        cols.append(_Column("UPDATED", 7, lambda j, now: format_age(now - j.updated_at), True))
        cols.append(_Column("RULE", 14, lambda j, now: j.rule or "(root)"))
    if width >= 170:
        cols.append(_Column("PROJECT", 36, lambda j, now: j.project_id or ""))
    return cols


def _detail(job: JobRow, now: float) -> str:
    if job.wait and job.state not in ("delivered", "failed"):
        return wait_text(job, now)
    if job.state == "parked" and job.park_reason:
        return f"waiting: {job.park_reason}"
    if job.error:
        return f"error: {job.error}"
    if job.duplicate_of and job.state == "duplicate":
        return f"duplicate of {job.duplicate_of}"
    if job.state == "probed":
        # Checked and valid: what it waits for is a processing slot (the workspace's limit).
        return "waiting: processing limit: its project is created when a slot is free"
    if job.step and job.state not in ("delivered", "failed"):
        return job.step
    return ""


def _duplicate_detail(job: JobRow, jobs: dict[str, JobRow]) -> str:
    """``duplicate of j…, delivered to <folder>`` for a delivered duplicate."""
    if not job.duplicate_of or job.state != "delivered":
        return ""
    first = jobs.get(job.duplicate_of)
    where = f", delivered to {first.outbox_dir}" if first and first.outbox_dir else ""
    return f"duplicate of {job.duplicate_of}{where} (same content, rule and preset)"


def wait_text(job: JobRow, now: float) -> str:
    """``waiting: export rate limit: … (for 40s more, since 2m)``; a step (export progress)
    goes before it."""
    text = f"waiting: {job.wait}"
    parts = []
    if job.wait_until is not None and job.wait_until > now:
        parts.append(f"for {format_age(job.wait_until - now)} more")
    if job.wait_since is not None:
        parts.append(f"since {format_age(now - job.wait_since)}")
    if parts:
        text += f" ({', '.join(parts)})"
    if job.step and job.state == "exporting":
        text = f"{job.step}; {text}"
    return text


def render_table(
    jobs: Iterable[JobRow],
    inboxes: Iterable[InboxRow],
    *,
    now: float,
    width: int,
    header: Iterable[str] = (),
    entries: Iterable[EntryRow] = (),
    cluster: bool = False,
) -> str:
    """The table for a terminal ``width`` columns wide: ``header`` lines, paused inboxes, then
    one row per job and its detail (step, error or wait reason) on an indented line, then the
    inbox ``entries`` that are not jobs (settling, not taken)."""
    width = max(MIN_WIDTH, width)
    lines = [cut(h, width) for h in header]
    for ib in inboxes:
        if ib.paused:
            lines.append(cut(f"! PAUSED inbox {ib.path}: {ib.reason}", width))
    rows = list(jobs)
    by_id = {j.id: j for j in rows}
    if not rows:
        lines.append("no jobs yet")
        return _entries_text(lines, entries, now, width)
    cols = _columns(width, cluster=cluster)
    fixed = sum(c.width + 2 for c in cols)
    source_width = max(10, width - fixed)

    def line(cells: list[str]) -> str:
        out = []
        for c, cell in zip(cols, cells, strict=False):
            text = cut(cell, c.width)
            out.append(text.rjust(c.width) if c.right else text.ljust(c.width))
        return ("  ".join(out) + "  " + cut(cells[-1], source_width)).rstrip()

    lines.append(line([c.title for c in cols] + ["SOURCE"]))
    for job in rows:
        lines.append(line([c.value(job, now) for c in cols] + [job.rel_path]))
        detail = _duplicate_detail(job, by_id) or _detail(job, now)
        if detail:
            lines.append(cut(" " * 13 + "↳ " + " ".join(detail.split()), width))
    return _entries_text(lines, entries, now, width)


def _entries_text(lines: list[str], entries: Iterable[EntryRow], now: float, width: int) -> str:
    """The lines so far, then the section of inbox entries that are not jobs."""
    shown = list(entries)
    if shown:
        lines += ["", "not jobs (yet):"]
    for e in shown:
        state = "settling" if e.state == SETTLING else "not taken"
        lines.append(cut(f"  {state:<11}  {e.rel_path}", width))
        lines.append(cut(" " * 13 + "↳ " + " ".join(entry_reason(e, now).split()), width))
    return "\n".join(lines) + "\n"


def _terminal_width(tty: bool) -> int:
    """The terminal's width; piped into grep, a file or a mail the lines stay whole unless
    ``COLUMNS`` asks for a width."""
    if tty:
        return shutil.get_terminal_size((120, 24)).columns
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        return UNCUT_WIDTH


def node_lines(nodes: Iterable[NodeRow]) -> list[str]:
    """The cluster's daemons: name, host, last heartbeat, jobs held, live/stale/stopped."""
    rows = list(nodes)
    if not rows:
        return ["nodes: none has started on this database yet"]
    name_w = max(4, *(len(n.name) for n in rows))
    host_w = max(4, *(len(n.host) for n in rows))
    lines = [f"{'NODE':<{name_w}}  {'HOST':<{host_w}}  {'HEARTBEAT':>9}  {'JOBS':>4}  STATE"]
    for n in rows:
        beat = f"{format_age(n.heartbeat_age)} ago"
        lines.append(
            f"{n.name:<{name_w}}  {n.host:<{host_w}}  {beat:>9}  {n.jobs_held:>4}  {n.state}"
        )
    return lines


def render_screen(ledger: Ledger | StatusSource, *, now: float, width: int) -> str:
    """Everything ``watchd status`` prints: the daemon's state, the summary, the cluster's
    nodes (with ``[cluster]``), the table."""
    source = _source(ledger)
    local = source.local
    from watchd.notify.queue import status_lines

    state = daemon_state(local.last_heartbeat() if local is not None else None, now=now)
    inboxes = local.inboxes() if local is not None else []
    paused = None if not source.cluster else sum(1 for i in inboxes if i.paused)
    first = f"this host's {state.text}" if source.cluster else state.text
    header = [first, summary_line(source.jobs, paused_inboxes=paused)]
    if local is not None:
        header += status_lines(local)
    header.append("")
    if source.nodes is not None:
        header += [*node_lines(source.nodes()), ""]
    return render_table(
        source.jobs.jobs(),
        inboxes,
        now=now,
        width=width,
        header=header,
        entries=local.entries() if local is not None else (),
        cluster=source.cluster,
    )


def show(
    ledger: Ledger | StatusSource,
    out: TextIO,
    *,
    as_json: bool = False,
    watch: bool = False,
    interval: float = 2.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    width: Callable[[], int] | None = None,
    rounds: int | None = None,
) -> int:
    """Print the status once, as JSON, or (``watch``) every ``interval`` seconds until
    interrupted or ``rounds`` screens were drawn. The table is as wide as the terminal, read
    again for every screen so that a resized window gets a fitting one."""
    if as_json:
        out.write(render_json(ledger, now=clock()) + "\n")
        return 0
    tty = _isatty(out)
    columns = width or (lambda: _terminal_width(tty))
    n = 0
    while True:
        text = render_screen(ledger, now=clock(), width=columns())
        if watch and tty:
            out.write("\x1b[H\x1b[2J")  # home and clear: redraw in place
        elif watch and n:
            out.write("\n")
        out.write(text)
        out.flush()
        n += 1
        if not watch or (rounds is not None and n >= rounds):
            return 0
        sleep(interval)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False

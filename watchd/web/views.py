"""What the dashboard's pages show: view-models built from the ledger and the daemon's live state.

Read-only: the only writes the dashboard makes are :func:`retry` and :func:`forget`, the same
ledger calls as ``watchd retry`` and ``watchd forget``. The daemon is seen through
:class:`DashboardSource`, a narrow interface (see :mod:`watchd.web.source`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from markupsafe import Markup, escape

from watchd.ledger.db import ClipRow, EventRow, ExportRow, JobRow, Ledger
from watchd.ledger.states import TERMINAL, Stage
from watchd.status_view import format_age, iso, summary_line

PAGE_SIZE = 250  # rows on a page: every job of a busy day, before the pages start
ALL_RULES = "__all__"  # the rule filter's "every rule"
MAX_QUERY = 200  # characters of a search kept
STATES = tuple(s.value for s in Stage)
# The stages whose progress the row shows as a bar, and what the bar measures.
BAR_LABELS = {
    "uploading": "upload",
    "processing": "processing",
    "rendering": "render",
    "exporting": "export",
    "delivering": "delivery",
}
_JOB_COLS = ", ".join(f.name for f in fields(JobRow))
_ACTIVE = tuple(s.value for s in Stage if s not in TERMINAL)


class DashboardSource(Protocol):
    """What the dashboard may know of the running daemon."""

    @property
    def ledger(self) -> Ledger | None: ...

    def paused_inboxes(self) -> list[tuple[str, str]]:
        """``(inbox path, reason)`` of each paused inbox."""

    def starting(self) -> str | None:
        """Why the daemon is not ready yet (logging in), or None once it runs."""

    def notifier_problems(self) -> list[str]:
        """Notifiers that fail (one line each)."""

    def node_of(self, job: JobRow) -> str:
        """The cluster node working on ``job``. HOOK: ``""`` without a cluster."""


# ---- the queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    state: str = ""
    rule: str | None = None  # None = every rule; "" = the inbox root's rule
    q: str = ""
    page: int = 1

    def query(self, **change: Any) -> str:
        """The URL query for these filters with ``change`` applied (for links)."""
        from urllib.parse import urlencode

        values: dict[str, Any] = {
            "state": self.state,
            "rule": self.rule,
            "q": self.q,
            "page": self.page,
        }
        values.update(change)
        pairs = [(k, str(v)) for k, v in values.items() if v not in ("", 1) and v is not None]
        if values["rule"] == "":
            pairs.append(("rule", ""))
        return urlencode(pairs)


def parse_filters(query: Mapping[str, str]) -> Filters:
    """Filters from a request's query; anything unknown or malformed is ignored."""
    state = query.get("state", "")
    if state not in STATES and state not in ("active", "attention"):
        state = ""
    rule = query.get("rule")
    if rule == ALL_RULES:
        rule = None
    try:
        page = max(1, min(100_000, int(query.get("page", "1"))))
    except ValueError:
        page = 1
    return Filters(state=state, rule=rule, q=query.get("q", "").strip()[:MAX_QUERY], page=page)


@dataclass(frozen=True)
class Row:
    job: JobRow
    since: float  # when it entered its state
    thumbnail: str | None  # a file name in the job's outbox folder
    node: str
    now: float

    @property
    def id(self) -> Markup:
        # Ids are ours ("j" + hex): nothing to escape or redact, printed several times a row.
        return Markup(escape(self.job.id))

    @property
    def state(self) -> Markup:
        return Markup(escape(self.job.state))

    @property
    def bar(self) -> str | None:
        return BAR_LABELS.get(self.job.state)

    @property
    def pct(self) -> int:
        return max(0, min(100, round(self.job.progress or 0)))

    @property
    def step(self) -> str:
        j = self.job
        if j.state in BAR_LABELS and j.step and j.step != j.state:
            return j.step
        return ""

    @property
    def in_state(self) -> str:
        return format_age(self.now - self.since)

    @property
    def error_line(self) -> str:
        return split_error(self.job)[0]

    @property
    def hint(self) -> str:
        return split_error(self.job)[1]

    @property
    def can_retry(self) -> bool:
        return self.job.state in (Stage.FAILED.value, Stage.PARKED.value)

    @property
    def can_forget(self) -> bool:
        return self.job.state in (Stage.FAILED.value, Stage.DELIVERED.value)


def split_error(job: JobRow) -> tuple[str, str]:
    """The first line of the job's error (or the reason it waits) and its hint."""
    text = job.park_reason if job.state == "parked" and job.park_reason else job.error
    if not text:
        return "", ""
    first = text.strip().splitlines()[0] if text.strip() else ""
    message, _, hint = first.partition(" — ")
    return message.strip(), hint.strip()


@dataclass(frozen=True)
class Banner:
    kind: str  # billing | paused | login | notify | starting
    text: str


@dataclass(frozen=True)
class QueueView:
    rows: list[Row]
    total: int
    filters: Filters
    pages: int
    counts: dict[str, int]
    rules: list[str]
    banners: list[Banner]
    summary: str
    now: float
    nodes: bool = False  # whether the node column is worth showing (a cluster names nodes)
    page_size: int = PAGE_SIZE


def _where(filters: Filters) -> tuple[str, list[Any]]:
    terms: list[str] = []
    params: list[Any] = []
    if filters.state == "active":
        terms.append(f"state IN ({','.join('?' * len(_ACTIVE))})")
        params.extend(_ACTIVE)
    elif filters.state == "attention":
        terms.append("state IN ('failed', 'parked')")
    elif filters.state:
        terms.append("state = ?")
        params.append(filters.state)
    if filters.rule is not None:
        terms.append("rule = ?")
        params.append(filters.rule)
    if filters.q:
        escaped = filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        terms.append("rel_path LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    return (" WHERE " + " AND ".join(terms)) if terms else "", params


def _select(ledger: Ledger, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return ledger.query(sql, list(params))


def _marks(n: int) -> str:
    return ",".join("?" * n)


def first_thumbnails(ledger: Ledger, job_ids: Sequence[str]) -> dict[str, str]:
    """job id -> the thumbnail file of its best-ranked clip that has one."""
    if not job_ids:
        return {}
    out: dict[str, str] = {}
    for job_id, thumb in _select(
        ledger,
        f"SELECT job_id, thumbnail FROM clips WHERE job_id IN ({_marks(len(job_ids))}) "
        "AND thumbnail IS NOT NULL ORDER BY job_id, rank, clip_id",
        list(job_ids),
    ):
        out.setdefault(job_id, thumb)
    return out


def entered_state(ledger: Ledger, jobs: Sequence[JobRow]) -> dict[str, float]:
    """job id -> when it entered its current state (its last event with a new state)."""
    if not jobs:
        return {}
    ids = [j.id for j in jobs]
    rows = _select(
        ledger,
        f"SELECT job_id, MAX(at) FROM events WHERE job_id IN ({_marks(len(ids))}) "
        "AND to_state IS NOT NULL GROUP BY job_id",
        ids,
    )
    return {job_id: float(at) for job_id, at in rows if at is not None}


def banners(ledger: Ledger, source: DashboardSource) -> list[Banner]:
    out: list[Banner] = []
    starting = source.starting()
    if starting:
        out.append(Banner("starting", starting))
    billing = _select(
        ledger,
        "SELECT COUNT(*) FROM jobs WHERE state = 'parked' AND park_reason LIKE 'billing%'",
        (),
    )[0][0]
    if billing:
        out.append(
            Banner(
                "billing",
                f"Billing stop: {billing} job(s) parked because Carmic asked for payment (402). "
                "Top up the workspace's processing minutes, then Retry them.",
            )
        )
    for path, reason in source.paused_inboxes():
        out.append(Banner("paused", f"Inbox {path} is paused: {reason}"))
    login = _select(
        ledger,
        f"SELECT error FROM jobs WHERE state IN ({_marks(len(_ACTIVE))}) "
        "AND error LIKE '%refused the login%' LIMIT 1",
        _ACTIVE,
    )
    if login:
        out.append(Banner("login", f"Logging in to Carmic fails: {login[0][0]}"))
    for problem in source.notifier_problems():
        out.append(Banner("notify", f"Notifications fail: {problem}"))
    return out


def queue_view(ledger: Ledger, source: DashboardSource, filters: Filters, now: float) -> QueueView:
    """One page of jobs, newest first, with the filters applied."""
    where, params = _where(filters)
    total = int(_select(ledger, f"SELECT COUNT(*) FROM jobs{where}", params)[0][0])
    pages = max(1, math.ceil(total / PAGE_SIZE))
    page = min(filters.page, pages)
    if page != filters.page:
        filters = Filters(filters.state, filters.rule, filters.q, page)
    jobs = [
        JobRow(*r)
        for r in _select(
            ledger,
            f"SELECT {_JOB_COLS} FROM jobs{where} ORDER BY created_at DESC, id DESC "
            "LIMIT ? OFFSET ?",
            [*params, PAGE_SIZE, (page - 1) * PAGE_SIZE],
        )
    ]
    thumbs = first_thumbnails(ledger, [j.id for j in jobs])
    since = entered_state(ledger, jobs)
    rows = [
        Row(j, since.get(j.id, j.updated_at), thumbs.get(j.id), source.node_of(j), now)
        for j in jobs
    ]
    rules = [r[0] for r in _select(ledger, "SELECT DISTINCT rule FROM jobs ORDER BY rule", ())]
    paused = len(source.paused_inboxes())
    return QueueView(
        rows=rows,
        total=total,
        filters=filters,
        pages=pages,
        counts=ledger.counts_by_state(),
        rules=rules,
        banners=banners(ledger, source),
        summary=summary_line(ledger, paused_inboxes=paused),
        now=now,
        nodes=any(r.node for r in rows),
    )


# ---- one job -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipCard:
    clip: ClipRow
    exports: list[ExportRow]

    @property
    def duration(self) -> str:
        return f"{max(0.0, self.clip.end_time - self.clip.start_time):.1f} s"

    @property
    def score(self) -> str:
        return f"{self.clip.virality_score:g}"


@dataclass(frozen=True)
class TimelineEntry:
    event: EventRow

    @property
    def when(self) -> str:
        return iso(self.event.at) or ""

    @property
    def detail(self) -> str:
        raw = self.event.detail
        if not raw:
            return ""
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        if isinstance(value, dict):
            return ", ".join(f"{k}: {v}" for k, v in value.items())
        return str(value)


@dataclass(frozen=True)
class JobView:
    row: Row
    timeline: list[TimelineEntry]
    clips: list[ClipCard]
    manifest: str | None  # the manifest.json text, when the outbox folder has one
    folder: str | None


def job_view(ledger: Ledger, source: DashboardSource, job: JobRow, now: float) -> JobView:
    events = ledger.events(job.id)
    since = max((e.at for e in events if e.to_state), default=job.updated_at)
    clips = ledger.clips(job.id)
    thumb = next((c.thumbnail for c in clips if c.thumbnail), None)
    exports = ledger.exports(job.id)
    cards = [ClipCard(c, [e for e in exports if e.clip_id == c.clip_id]) for c in clips]
    return JobView(
        row=Row(job, since, thumb, source.node_of(job), now),
        timeline=[TimelineEntry(e) for e in events],
        clips=cards,
        manifest=read_manifest_text(job.outbox_dir),
        folder=job.outbox_dir,
    )


MAX_MANIFEST_BYTES = 1 << 20


def read_manifest_text(folder: str | None) -> str | None:
    if not folder:
        return None
    path = Path(folder) / "manifest.json"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_MANIFEST_BYTES:
        return f"(manifest.json is larger than {MAX_MANIFEST_BYTES} bytes: open {path})"
    try:
        return json.dumps(json.loads(data), indent=2, ensure_ascii=False)
    except ValueError:
        return data.decode("utf-8", "replace")


def job_json_list(ledger: Ledger) -> list[dict[str, Any]]:
    """``GET /api/jobs``: the same array as ``watchd status --json``."""
    from watchd.status_view import job_json

    shared = getattr(ledger, "shared", False)  # several hosts: each job's node as recorded
    return [job_json(j, cluster=shared) for j in ledger.jobs()]

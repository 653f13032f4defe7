"""``watchd retry`` takes the rule's preset as it is now, not as it was when the job started.

The usual reason to retry a job is that its preset was wrong (a refused caption style or
template value) and the rule has been fixed since. A job keeps its preset in the ledger (so a
reload never changes work in flight); a retry re-resolves it from the current config and the
file's sidecar, as long as none of the job's clips was sent to render yet (a delivery never
mixes two presets). Keys that shaped the project when it was created (``video_type``,
``language``, ...) stay as they were when the project exists already: changing them needs a
new project (``watchd forget`` the job and drop the file again), and the retry says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from watchd.carmic.models import ClipSummary
from watchd.config import Config, ConfigError, Preset, resolve_preset, sidecar_for
from watchd.ledger.db import ClipRow, JobRow
from watchd.ledger.protocol import LedgerAPI
from watchd.pipeline.selection import choose_clips, render_choice

# Sent with the create: they cannot change once the project exists.
CREATE_KEYS = (
    "video_type",
    "language",
    "language_mode",
    "enable_multimodal",
    "custom_instructions",
    "title",
    "trim_start",
    "trim_end",
)
# Where a job resumes once its renders are behind it (render = "none" renders nothing).
PAST_RENDERING = frozenset({"exporting", "delivering"})
# Clip states from before any render request (configured: its preset PUT is done).
UNRENDERED = frozenset({"pending", "configured"})


@dataclass(frozen=True)
class Represet:
    """What a retry did to a job's preset; ``message`` is the line ``watchd retry`` prints."""

    changed: tuple[str, ...]
    message: str


def has_rendered(clips: Sequence[ClipRow]) -> bool:
    """Whether any clip was sent to render (or failed at it): its preset is fixed then."""
    return any(c.state not in UNRENDERED or c.render_attempts > 0 for c in clips)


def current_preset(cfg: Config, job: JobRow) -> dict[str, Any]:
    """The preset the job's file gets from ``cfg`` now (its rule, then its sidecar beside the
    source where it is now), with the job's delivery settings kept. ConfigError when the inbox
    is gone from the config or the sidecar is bad. With ``[cluster]`` a job names its inbox by
    its ``name``, else by its path."""
    if cfg.cluster is not None:
        inbox = next((i for i in cfg.inboxes if i.name == job.inbox), None)
    else:
        inbox = next((i for i in cfg.inboxes if str(i.path) == job.inbox), None)
    if inbox is None:
        raise ConfigError(f"the inbox {job.inbox} is no longer in the config")
    sidecar = sidecar_for(Path(job.path))
    _rule, preset = resolve_preset(
        inbox, PurePosixPath(job.rel_path), sidecar if sidecar.is_file() else None
    )
    record = preset.to_json()
    old = job.preset_dict
    if "_delivery" in old:
        record["_delivery"] = old["_delivery"]
    return record


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _reselect(ledger: LedgerAPI, job: JobRow, clips: Sequence[ClipRow], render: Any) -> None:
    """The clips' choice again, under the new ``render`` key (ranks stay as they were)."""
    summaries = [
        ClipSummary(
            id=c.clip_id,
            title=c.title,
            start_time=c.start_time,
            end_time=c.end_time,
            virality_score=c.virality_score,
        )
        for c in clips
    ]
    for clip, _rank, picked in choose_clips(summaries, render_choice(render)):
        ledger.update_clip(job.id, clip.id, selected=int(picked))


def apply_current_preset(ledger: LedgerAPI, cfg: Config, job: JobRow) -> Represet:
    """Give ``job`` (failed or parked, about to be retried) the rule's current preset when it
    has not rendered yet. Writes nothing when the preset is unchanged."""
    clips = ledger.clips(job.id)
    if has_rendered(clips):
        return Represet((), "keeps its preset: its clips were sent to render already")
    if job.resume_stage in PAST_RENDERING:
        return Represet((), f"keeps its preset: it resumes at {job.resume_stage}")
    # As the job would read it (missing keys at their defaults), so only real changes show.
    old = {**job.preset_dict, **Preset.from_json(job.preset_dict).to_json()}
    new = current_preset(cfg, job)
    kept: list[str] = []
    if job.project_id:
        for key in CREATE_KEYS:
            if old.get(key) != new.get(key):
                kept.append(key)
                new[key] = old.get(key)
    changed = tuple(k for k in new if k != "_delivery" and old.get(k) != new.get(k))
    notes = []
    if changed:
        with ledger.batch():
            ledger.update(job.id, preset=new)
            for c in clips:
                if c.state == "configured":  # its PUT carried the old preset
                    ledger.update_clip(job.id, c.clip_id, state="pending")
            if "render" in changed and clips:
                _reselect(ledger, job, clips, new.get("render"))
            ledger.record_event(job.id, "preset_reapplied", {"changed": list(changed)}, actor="cli")
        diffs = ", ".join(f"{k} {_shown(old.get(k))} -> {_shown(new.get(k))}" for k in changed)
        notes.append(f"takes the rule's current preset ({diffs})")
    else:
        notes.append("the rule's current preset is the one it has")
    if kept:
        notes.append(
            f"project {job.project_id} was created with the old {', '.join(kept)}: "
            "to change that, `watchd forget` the job and drop the file again"
        )
    return Represet(changed, "; ".join(notes))


def retry_job(ledger: LedgerAPI, cfg: Config | None, job_id: str, *, actor: str = "cli") -> str:
    """``watchd retry`` for one job: the current preset (unless ``cfg`` is None: the job keeps
    its own, ``--keep-preset``), then back in the queue. Returns the line to print; LedgerError
    for an unknown job or one that cannot be retried, ConfigError for a preset that cannot be
    resolved."""
    job = ledger.require(job_id)
    if cfg is None:
        note = "keeps its preset (--keep-preset)"
    else:
        ledger.check_retryable(job)
        note = apply_current_preset(ledger, cfg, job).message
    after = ledger.retry(job_id, actor=actor)
    return f"{job_id}: back in the queue at {after.state}; {note}"

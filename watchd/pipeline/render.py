"""Stages after the clips are known: apply the preset, render, export.

Renders bill processing minutes, so a render request is recorded (clip state
``render_requested``) before it is sent, and after a crash ``render-progress`` is asked before
anything is sent again. Exports are idempotent on (clip, format) in the API, so re-sending one
after a lost answer is safe.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from watchd.carmic.errors import (
    BillingRequired,
    Conflict,
    PermanentError,
    RateLimited,
    TransientError,
)
from watchd.carmic.models import RENDER_DONE, RENDER_FAILED, ClipDetail
from watchd.ledger.db import ClipRow, JobRow
from watchd.ledger.states import Stage
from watchd.pipeline import waits
from watchd.pipeline.outcomes import Fail, Park, RetryLater, Wait
from watchd.pipeline.selection import apply_preset, render_choice, renders

if TYPE_CHECKING:
    from watchd.pipeline.runner import Pipeline

RENDER_ACTIVE = frozenset(
    {"QUEUED", "RENDERING", "PROCESSING", "IN_PROGRESS", "STARTED", "PENDING"}
)
EXPORT_FORMATS = ("premiere", "davinci", "fcpx", "after_effects")


def _renders(job: JobRow) -> bool:
    return renders(render_choice(job.preset_dict.get("render", "all")))


def _exports(job: JobRow) -> list[str]:
    return [f for f in job.preset_dict.get("exports", []) if f in EXPORT_FORMATS]


async def handle_clips_ready(p: Pipeline, job: JobRow) -> None:
    chosen = p.ledger.clips(job.id, selected_only=True)
    if chosen and _renders(job):
        nxt, step = Stage.RENDERING, "applying preset"
    elif chosen and _exports(job):
        nxt, step = Stage.EXPORTING, "exporting"
    else:
        nxt, step = Stage.DELIVERING, "delivering"
    # Lost to a power cut, it is taken again from clips_ready: nothing billed in between.
    p.advance(job, nxt, kind=nxt.value, relaxed=True, progress=0, step=step)


def words_json(detail: ClipDetail) -> str:
    return json.dumps([[w.text, w.start, w.end] for w in detail.words])


async def configure_clip(p: Pipeline, job: JobRow, clip: ClipRow) -> dict[str, Any]:
    """Read the clip's editor state, merge the rule's caption style and template into it, and
    save it only when that changes something. Returns what the clip's ledger row learns (its
    transcript, its thumbnail): written with the render request that follows, in one write."""
    detail = await p.client.get_clip(clip.clip_id)
    preset = job.preset_dict
    merged, changed = apply_preset(
        detail.template_config,
        caption_style=preset.get("caption_style"),
        template=preset.get("template") or {},
    )
    if changed:
        await p.client.put_clip(clip.clip_id, merged)
    return {
        "words": words_json(detail),
        "thumbnail_url": detail.thumbnail_url or clip.thumbnail_url,
    }


async def _request_render(
    p: Pipeline, job: JobRow, clip: ClipRow, learned: dict[str, Any] | None = None
) -> None:
    # The intent goes to disk first: after a crash, render-progress is asked before re-sending.
    # (A crash before it, after configure_clip, configures again: a read and an idempotent PUT.)
    p.ledger.update_clip(job.id, clip.clip_id, state="render_requested", **(learned or {}))
    try:
        p.durable()
        await p.client.render_clip(clip.clip_id)
    except BillingRequired:
        p.ledger.update_clip(job.id, clip.clip_id, state="configured")
        raise
    except Conflict:
        pass  # already rendering or rendered: the progress poll will tell
    # Lost to a power cut, render_requested remains: render-progress is asked before anything
    # is sent again.
    with p.ledger.relaxed():
        p.ledger.update_clip(
            job.id, clip.clip_id, state="rendering", render_attempts=clip.render_attempts + 1
        )


async def _poll_render(p: Pipeline, job: JobRow, clip: ClipRow) -> str:
    """One render-progress poll; returns the clip's new state."""
    prog = await p.client.render_progress(clip.clip_id)
    status = prog.status
    if status == RENDER_DONE:
        with p.ledger.relaxed():  # lost: asked again
            p.ledger.update_clip(job.id, clip.clip_id, state="rendered", progress=100, error=None)
        return "rendered"
    if status == RENDER_FAILED or (status.startswith("FAILED") and status != ""):
        if clip.render_attempts <= p.settings.max_render_retries:
            p.ledger.update_clip(job.id, clip.clip_id, state="render_requested", error=prog.error)
            try:
                p.durable()
                await p.client.retry_render(clip.clip_id)
            except Conflict:
                pass
            except BillingRequired:
                p.ledger.update_clip(job.id, clip.clip_id, state="failed_render_waiting")
                raise
            p.ledger.update_clip(
                job.id, clip.clip_id, state="rendering", render_attempts=clip.render_attempts + 1
            )
            p.job_log(job).warning(
                "render of clip %s failed (%s); retry %d of %d",
                clip.clip_id,
                prog.error or status,
                clip.render_attempts,
                p.settings.max_render_retries,
            )
            return "rendering"
        reason = prog.error or f"render ended in {status}"
        p.ledger.update_clip(job.id, clip.clip_id, state="failed", error=reason)
        p.job_log(job).error("clip %s could not be rendered: %s", clip.clip_id, reason)
        return "failed"
    if status in RENDER_ACTIVE:
        with p.ledger.relaxed():
            p.ledger.update_clip(job.id, clip.clip_id, progress=float(prog.progress))
        return "rendering"
    return "not_started"


async def handle_rendering(p: Pipeline, job: JobRow) -> None:
    chosen = p.ledger.clips(job.id, selected_only=True)
    if chosen and all(c.state == "failed" for c in chosen):
        # Back after "no clip could be rendered" (`watchd retry`): every clip gets its
        # retry-renders again, or the job would fail at once without asking for anything.
        for c in chosen:
            p.ledger.update_clip(job.id, c.clip_id, state="rendering", render_attempts=0)
    # 1. Preset and render requests, clip by clip (cheap calls; order kept for the log).
    for clip in p.ledger.clips(job.id, selected_only=True):
        learned = None
        if clip.state == "pending":
            learned = await configure_clip(p, job, clip)
        if clip.state == "failed_render_waiting":
            p.ledger.update_clip(job.id, clip.clip_id, state="rendering")
            clip = _reload(p, job, clip)
        if clip.state == "render_requested":
            # Did the request we recorded get through before the crash/timeout?
            state = await _poll_render(p, job, clip)
            if state == "not_started":
                await _request_render(p, job, _reload(p, job, clip))
            continue
        if clip.state in ("pending", "configured"):  # configured just now, or before a stop
            try:
                await _request_render(p, job, clip, learned)
            except BillingRequired as e:
                raise Park(f"billing: {e.message}", resume=Stage.RENDERING) from e
    # 2. Follow every render until it ends.
    while True:
        active = [c for c in p.ledger.clips(job.id, selected_only=True) if c.state == "rendering"]
        if not active:
            break
        try:
            states = await asyncio.gather(*(_poll_render(p, job, c) for c in active))
        except BillingRequired as e:
            raise Park(f"billing: {e.message}", resume=Stage.RENDERING) from e
        lost = [c for c, s in zip(active, states, strict=True) if s == "not_started"]
        for c in lost:
            # The service does not know of the render we asked for: ask again next round (the
            # progress check before re-sending keeps this from billing twice).
            p.ledger.update_clip(job.id, c.clip_id, state="render_requested")
        if lost:
            raise RetryLater(
                "a render request was not registered yet", delay=p.settings.poll_seconds
            )
        clips = p.ledger.clips(job.id, selected_only=True)
        if not any(c.state == "rendering" for c in clips):
            break  # all ended: the transition below (or the failure) is the next write
        done = sum(1 for c in clips if c.state in ("rendered", "failed"))
        total_progress = sum(
            100.0 if c.state in ("rendered", "failed") else c.progress for c in clips
        )
        with p.ledger.relaxed():
            p.ledger.update(
                job.id,
                progress=round(total_progress / max(1, len(clips)), 1),
                step=f"rendering {done}/{len(clips)}",
            )
        await p.clock.sleep(p.settings.poll_seconds)
    clips = p.ledger.clips(job.id, selected_only=True)
    rendered = [c for c in clips if c.state == "rendered"]
    if not rendered:
        reasons = "; ".join(f"{c.title}: {c.error}" for c in clips if c.error)
        raise Fail(
            "render_failed",
            f"no clip could be rendered ({reasons or 'no reason given'})",
            resume=Stage.RENDERING,
        )
    said = f"rendered {len(rendered)} of {len(clips)} clips"
    # Lost to a power cut: the renders' progress is asked again, nothing is sent.
    nxt = Stage.EXPORTING if _exports(job) else Stage.DELIVERING
    p.advance(job, nxt, kind=nxt.value, say=said, relaxed=True, progress=0, step=nxt.value)


def _reload(p: Pipeline, job: JobRow, clip: ClipRow) -> ClipRow:
    for c in p.ledger.clips(job.id):
        if c.clip_id == clip.clip_id:
            return c
    return clip


async def handle_exporting(p: Pipeline, job: JobRow) -> None:
    formats = _exports(job)
    renders = _renders(job)
    targets = [
        c
        for c in p.ledger.clips(job.id, selected_only=True)
        if (c.state == "rendered" or not renders)
    ]
    existing = {(e.clip_id, e.format): e for e in p.ledger.exports(job.id)}
    for c in targets:
        for fmt in formats:
            if (c.clip_id, fmt) not in existing:
                p.ledger.put_export(job.id, c.clip_id, fmt, state="pending")
    tier_refusal: str | None = None
    everything = p.ledger.exports(job.id)
    asked = sum(1 for e in everything if e.state != "pending")
    for e in everything:
        if e.state != "pending":
            continue
        if tier_refusal:
            p.ledger.put_export(job.id, e.clip_id, e.format, state="skipped", reason=tier_refusal)
            continue
        await _export_progress(p, job, asked, len(everything))
        try:
            p.durable()
            ex = await p.client.create_export(e.clip_id, e.format)
        except BillingRequired as err:
            # Exports are a tier feature: one refusal answers for all of them.
            tier_refusal = f"the workspace's plan does not include NLE exports ({err.message})"
            p.ledger.put_export(job.id, e.clip_id, e.format, state="skipped", reason=tier_refusal)
            continue
        except RateLimited as err:
            raise Wait("export rate limit", err.message, delay=err.retry_after or 15.0) from err
        except TransientError as err:
            raise RetryLater(f"export request failed: {err}") from err
        except PermanentError as err:
            p.ledger.put_export(job.id, e.clip_id, e.format, state="skipped", reason=str(err))
            continue
        p.ledger.put_export(job.id, e.clip_id, e.format, export_id=ex.export_id, state="requested")
        asked += 1
        waits.end_wait(p, job)
        job = p.ledger.require(job.id)
    if asked:
        await _export_progress(p, job, asked, len(everything))
    # Follow the requested exports by polling (SSE would only save a little latency here).
    while True:
        pending = [e for e in p.ledger.exports(job.id) if e.state == "requested"]
        if not pending:
            break
        for e in pending:
            assert e.export_id
            info = await p.client.get_export(e.export_id)
            if info.done:
                p.ledger.put_export(job.id, e.clip_id, e.format, state="done")
            elif info.failed:
                p.ledger.put_export(
                    job.id,
                    e.clip_id,
                    e.format,
                    state="skipped",
                    reason=info.error_message or f"export ended in {info.status}",
                )
        if any(e.state == "requested" for e in p.ledger.exports(job.id)):
            await p.clock.sleep(p.settings.poll_seconds)
    p.advance(job, Stage.DELIVERING, kind="delivering", progress=0, step="delivering")


async def _export_progress(p: Pipeline, job: JobRow, asked: int, total: int) -> None:
    """``exports 3 of 12, next in 40 s``: the step while exports are asked for at the pace of
    ``exports_per_minute`` (the next one may wait a minute for its slot)."""
    wait = await p.client.pace_wait("exports") if asked < total else 0.0
    step = f"exports {asked} of {total}"
    if wait >= 1.0:
        step += f", next in {wait:.0f} s"
    # Durable: an export request (billed, on some plans) follows it.
    p.ledger.update(job.id, step=step, progress=round(100.0 * asked / max(1, total), 1))

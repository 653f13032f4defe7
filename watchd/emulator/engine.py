"""The simulated back end: ingestion, clip detection, renders and NLE exports over time.

Each job walks its statuses one ``Timings`` period at a time on the emulator's clock and
publishes every change (SSE subscribers see it at once). A period of 0 runs the whole job
inside the request that started it. Video work (probing, cutting, zipping) runs in the
emulator's worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchd.emulator import bundles, mediawork
from watchd.emulator.content import hostile_title, plan_clips
from watchd.emulator.core import Core
from watchd.emulator.state import Clip, Export, InsufficientMinutes, Project, RenderJob
from watchd.emulator.templates import default_template_config
from watchd.emulator.views import project_status

__all__ = ["PROCESS_STEPS", "Engine", "export_topic", "project_topic"]

log = logging.getLogger(__name__)

# (status, progress when it starts, current_step)
PROCESS_STEPS = (
    ("UPLOADING", 5, "Verifying upload"),
    ("TRANSCRIBING", 20, "Transcribing audio"),
    ("PROCESSING", 45, "Detecting viral moments"),
    ("FACE_TRACKING", 75, "Tracking faces and framing shots"),
)
# The step at whose end a ``fail_project`` fault strikes, and what the project then says.
_FAILURES = {
    "FAILED_BILLING": ("UPLOADING", "Billing check failed: insufficient processing minutes"),
    "FAILED_CORRUPT_VIDEO": ("UPLOADING", "The uploaded file is not a decodable video"),
    "FAILED_NO_SPEECH": ("TRANSCRIBING", "No speech was detected in the video"),
    "FAILED": ("PROCESSING", "Processing failed: internal error"),
}
_DEFAULT_SOURCE_SECONDS = 60.0
_PROGRESS_TICKS = 8


def project_topic(project_id: str) -> tuple[str, str]:
    """The SSE hub topic of a project's status."""
    return ("project", project_id)


def export_topic(export_id: str) -> tuple[str, str]:
    """The SSE hub topic of an export."""
    return ("export", export_id)


def minutes_for(seconds: float | None) -> int:
    """Billed minutes: every started minute counts (at least one for any real duration)."""
    if seconds is None or seconds <= 0:
        return 0
    return math.ceil(seconds / 60)


class Engine:
    """Starts, advances, cancels and publishes the simulated jobs."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self._processing: dict[str, asyncio.Task[None]] = {}
        self._hostile_titles = 0  # hostile titles handed out so far (they go round in turn)

    # ---- publishing ---------------------------------------------------------------------------

    def _touch_project(self, p: Project, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(p, name, value)
        p.updated_at = self.core.now()
        payload = project_status(p)
        if p.deleted:
            payload["deleted"] = True
        self.core.hub.publish(project_topic(p.id), payload)

    def _touch_export(self, e: Export, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(e, name, value)
        e.updated_at = self.core.now()
        self.core.hub.publish(export_topic(e.id), dataclasses.replace(e))

    async def _ticks(
        self, start: float, total: float, first: int, last: int, on_tick: Callable[[int], None]
    ) -> None:
        """Move progress from ``first`` to ``last`` in a few ticks until ``start + total``.

        Deadlines are absolute, so a clock moved in big jumps (a test's) never leaves work
        behind, and real time does not drift.
        """
        for k in range(1, _PROGRESS_TICKS + 1):
            await self.core.alarm.until(start + total * k / _PROGRESS_TICKS)
            on_tick(first + (last - first) * k // _PROGRESS_TICKS)

    # ---- ingestion ----------------------------------------------------------------------------

    def _source_path(self, p: Project) -> Path | None:
        if p.upload is None or p.upload.path is None or not p.upload.path.exists():
            return None
        return p.upload.path

    async def probe(self, p: Project) -> mediawork.Probe | None:
        """Look at the upload once (None when its bytes were not kept)."""
        src = self._source_path(p)
        if src is None:
            return None
        result = await self.core.blocking(mediawork.probe, src)
        if result.duration:
            p.media_duration = result.duration
        return result

    async def start_processing(self, p: Project, probe: mediawork.Probe | None) -> None:
        """Run the ingestion: inside this call when ``Timings.step`` is 0, else in the
        background. The caller has checked the preconditions and billed the project."""
        p.process_requested_at = self.core.now()
        self._touch_project(p, status="UPLOADING", progress=5, current_step="Verifying upload")
        if self.core.settings.timings.step == 0:
            await self._process(p, probe)
        else:
            self._processing[p.id] = self.core.spawn(
                self._process(p, probe), name=f"process-{p.id}"
            )

    async def start_url_ingest(self, p: Project) -> None:
        """``create-from-url``: DOWNLOADING, then the usual steps (no upload to verify)."""
        p.process_requested_at = self.core.now()
        self._touch_project(p, status="DOWNLOADING", progress=2, current_step="Downloading video")
        if self.core.settings.timings.step == 0:
            await self._url_ingest(p)
        else:
            self._processing[p.id] = self.core.spawn(self._url_ingest(p), name=f"ingest-{p.id}")

    async def _url_ingest(self, p: Project) -> None:
        started = self.core.now()
        await self.core.alarm.until(started + self.core.settings.timings.step)
        # Nothing is really downloaded: the emulated video is a minute long.
        p.media_duration = _DEFAULT_SOURCE_SECONDS
        ws = self.core.state.workspaces[p.workspace_id]
        try:
            p.charge = self.core.state.charge(
                ws, minutes_for(p.media_duration), "ingest", now=self.core.now(), project_id=p.id
            )
        except InsufficientMinutes:
            self._processing.pop(p.id, None)
            self._fail(p, "FAILED_BILLING")
            return
        await self._process(p, None, steps=PROCESS_STEPS[1:], started=self.core.now())

    async def _process(
        self,
        p: Project,
        probe: mediawork.Probe | None,
        steps: tuple[tuple[str, int, str], ...] = PROCESS_STEPS,
        started: float | None = None,
    ) -> None:
        t0 = p.process_requested_at if started is None else started
        assert t0 is not None
        try:
            for i, (status, progress, step_text) in enumerate(steps, start=1):
                self._touch_project(p, status=status, progress=progress, current_step=step_text)
                await self.core.alarm.until(t0 + i * self.core.settings.timings.step)
                failure = self._failure_after(status, probe)
                if failure is not None:
                    self._fail(p, failure)
                    return
            timings = self.core.settings.timings
            # Without a lag the clips are published with CLIPS_READY: one event, not two.
            self._clips_ready(p, probe, published=timings.clips_lag == 0)
        finally:
            self._processing.pop(p.id, None)
        if timings.complete_after == 0 and timings.clips_lag == 0:
            self._complete(p)
        elif timings.clips_lag or timings.complete_after is not None:
            self.core.spawn(self._after_ready(p), name=f"publish-{p.id}")

    def _failure_after(self, status: str, probe: mediawork.Probe | None) -> str | None:
        settings = self.core.settings
        if (
            status == "UPLOADING"
            and settings.strict_media
            and probe is not None
            and not probe.decodable
        ):
            return "FAILED_CORRUPT_VIDEO"
        wanted = settings.faults.fail_project
        if wanted is not None and _FAILURES[wanted][0] == status:
            return wanted
        return None

    def _fail(self, p: Project, status: str) -> None:
        # A failed ingestion costs nothing: the pre-deducted minutes go back to the pool.
        self.core.state.refund(p.charge)
        self.core.inspection.count("projects_failed")
        self._touch_project(
            p, status=status, current_step="Failed", error_message=_FAILURES[status][1]
        )

    def _clips_ready(self, p: Project, probe: mediawork.Probe | None, *, published: bool) -> None:
        core = self.core
        source_seconds = p.media_duration or p.duration or _DEFAULT_SOURCE_SECONDS
        start = min(p.trim_start or 0.0, source_seconds)
        end = min(p.trim_end or source_seconds, source_seconds)
        rng = core.state.rng_for("clips", core.settings.seed, p.id)
        src = self._source_path(p) if probe is None or probe.decodable else None
        for i, plan in enumerate(plan_clips(rng, start, end)):
            title = plan.title
            if core.settings.variants.hostile_titles:
                title = hostile_title(self._hostile_titles)
                self._hostile_titles += 1
            clip = Clip(
                id=core.state.new_id(),
                project_id=p.id,
                workspace_id=p.workspace_id,
                index=i,
                title=title,
                start_time=plan.start_time,
                end_time=plan.end_time,
                virality_score=plan.virality_score,
                reasoning=plan.reasoning,
                words=plan.words,
                layout_timeline=plan.layout_timeline,
                spatial_matrix=plan.spatial_matrix,
                shots=plan.shots,
                template_config=default_template_config(plan.shots),
            )
            p.clips.append(clip)
            core.state.clips[clip.id] = clip
            self._register_clip_media(p, clip, src)
        title = p.title

        def thumbnail(dst: Path) -> None:
            mediawork.thumbnail(src, dst, start)

        def proxy(dst: Path) -> None:
            mediawork.copy_file(src, dst, 2.0, title)

        core.store.add_lazy(p.prefix + "thumbnail.jpg", "image/jpeg", thumbnail)
        # The proxy is the source itself (linked), so it carries the source's type.
        proxy_type = p.content_type if src is not None else "video/mp4"
        core.store.add_lazy(p.prefix + "proxy_720p.mp4", proxy_type, proxy)
        self._touch_project(
            p,
            status="CLIPS_READY",
            progress=100,
            current_step="Clips ready",
            clips_ready_at=core.now(),
            visual_pipeline_ready=published,
        )

    def _register_clip_media(self, p: Project, clip: Clip, src: Path | None) -> None:
        base = f"{p.prefix}clips/{clip.id}/"
        s, e, title = clip.start_time, clip.end_time, clip.title
        self.core.store.add_lazy(
            base + "thumbnail.jpg", "image/jpeg", lambda dst: mediawork.thumbnail(src, dst, s)
        )
        self.core.store.add_lazy(
            base + "preview.mp4",
            "video/mp4",
            lambda dst: mediawork.preview(src, dst, s, e, title),
        )

    def _publish_clips(self, p: Project) -> None:
        if not p.deleted and not p.visual_pipeline_ready:
            self._touch_project(p, visual_pipeline_ready=True)

    def _complete(self, p: Project) -> None:
        if not p.deleted and p.status == "CLIPS_READY":
            self._touch_project(
                p, status="COMPLETED", current_step="Completed", completed_at=self.core.now()
            )

    async def _after_ready(self, p: Project) -> None:
        timings = self.core.settings.timings
        ready_at = p.clips_ready_at or self.core.now()
        await self.core.alarm.until(ready_at + timings.clips_lag)
        self._publish_clips(p)
        if timings.complete_after is not None:
            await self.core.alarm.until(ready_at + timings.complete_after)
            self._complete(p)

    def cancel(self, p: Project, *, deleting: bool = False) -> None:
        """Stop ingestion. A project that never started processing gets its minutes back."""
        task = self._processing.pop(p.id, None)
        if task is not None:
            task.cancel()
        if not p.started:
            self.core.state.refund(p.charge)
        if deleting:
            p.deleted = True
            p.deleted_at = self.core.now()
            self.core.store.delete_prefix(p.prefix)
            self._touch_project(p)
        else:
            self._touch_project(
                p, status="FAILED", current_step="Cancelled", error_message="Cancelled by user"
            )

    # ---- renders ------------------------------------------------------------------------------

    async def start_render(self, p: Project, clip: Clip, job: RenderJob) -> None:
        """Run a render: inside this call when ``Timings.render`` is 0, else in the background."""
        clip.render = job
        clip.renders.append(job)
        clip.status = "QUEUED"
        faults = self.core.settings.faults
        fail = (
            job.attempt <= faults.render_fail_first
            or clip.index < faults.render_fail_clips
            or self.core.draw(faults.render_fail_rate)
        )
        if self.core.settings.timings.render == 0:
            await self._render(p, clip, job, fail)
        else:
            self.core.spawn(self._render(p, clip, job, fail), name=f"render-{job.id}")

    async def _render(self, p: Project, clip: Clip, job: RenderJob, fail: bool) -> None:
        total = self.core.settings.timings.render
        key = f"{p.prefix}clips/{clip.id}/render-{job.attempt}.mp4"
        src = self._source_path(p)

        def produce(dst: Path) -> None:
            mediawork.render(src, dst, clip.start_time, clip.end_time, clip.title)

        def progress(value: int) -> None:
            job.progress = value

        started = self.core.now()
        await self.core.alarm.until(started + total * 0.1)
        job.status = clip.status = "RENDERING"
        job.progress = 10
        work: asyncio.Task[Any] | None = None
        if not fail:
            work = self.core.spawn(
                self.core.store.put_file(key, produce, "video/mp4", self.core.now()),
                name=f"render-work-{job.id}",
            )
        try:
            if total > 0:
                await self._ticks(started + total * 0.1, total * 0.9, 10, 95, progress)
            if work is not None:
                await work
        except Exception as e:  # a render that cannot produce a file fails like a real one
            log.warning("render %s failed: %s", job.id, e)
            fail = True
        finally:
            if work is not None and not work.done():
                work.cancel()
        job.finished_at = self.core.now()
        if p.deleted:
            self.core.store.delete_prefix(key)  # made after the purge: purge it too
        if fail or p.deleted:
            job.status = clip.status = "FAILED_RENDER"
            job.error_message = "Render failed (worker error); retry with /retry-render"
            self.core.inspection.count("render_failures")
            return
        clip.video_key = key
        job.status = clip.status = "RENDERED"
        job.progress = 100

    # ---- exports ------------------------------------------------------------------------------

    async def start_export(self, p: Project, clip: Clip, e: Export) -> None:
        """Run an export: inside this call when ``Timings.export`` is 0, else in the background."""
        e.attempts += 1
        fail = self.core.draw(self.core.settings.faults.export_fail_rate)
        if self.core.settings.timings.export == 0:
            await self._export(p, clip, e, fail)
        else:
            self.core.spawn(self._export(p, clip, e, fail), name=f"export-{e.id}")

    async def _export(self, p: Project, clip: Clip, e: Export, fail: bool) -> None:
        total = self.core.settings.timings.export
        started = self.core.now()
        await self.core.alarm.until(started + total * 0.1)
        self._touch_export(e, status="PROCESSING", progress=10)
        if total > 0:
            await self._ticks(
                started + total * 0.1,
                total * 0.9,
                10,
                95,
                lambda v: self._touch_export(e, progress=v),
            )
        if fail:
            self._fail_export(e, "Export failed: the NLE packager crashed (emulated fault)")
            return
        try:
            media = await self.core.store.fetch(
                f"{p.prefix}clips/{clip.id}/preview.mp4", now=self.core.now()
            )
            if media is None or media.path is None:
                raise RuntimeError("the clip's media is gone")
            media_path = media.path
            key = f"{p.prefix}exports/{e.id}/{bundles.slug(clip.title)}-{e.target_format}.zip"
            evil = self.core.settings.faults.evil_bundles

            def produce(dst: Path) -> None:
                bundles.build_bundle(
                    dst,
                    e.target_format,
                    clip.title,
                    media_path,
                    duration=clip.duration,
                    proxy_path=media_path if e.include_proxy else None,
                    evil=evil,
                )

            obj = await self.core.store.put_file(key, produce, "application/zip", self.core.now())
        except Exception as exc:
            log.warning("export %s failed: %s", e.id, exc)
            self._fail_export(e, f"Export failed: {exc}")
            return
        done = self.core.settings.variants.export_done_status
        self._touch_export(
            e, status=done, progress=100, object_key=obj.key, file_size=obj.size, error_message=None
        )

    def _fail_export(self, e: Export, message: str) -> None:
        self.core.inspection.count("export_failures")
        self._touch_export(e, status="FAILED", error_message=message)

"""Stages from a settled file to Carmic's clips: probe, create, upload, process, follow.

The rule that matters most here: exactly one billed project per file. The create intent (with the
job's unique marker, which goes into the project title) is on disk before the POST; whenever the
answer to a create may have been lost, the marker is searched for before anything is created again.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from watchd.carmic.errors import (
    ConcurrencyLimited,
    Conflict,
    NotFound,
    RateLimited,
    SourceChanged,
    TransferError,
    TransientError,
    UrlExpired,
)
from watchd.carmic.models import PROJECT_READY_STATUSES, Project, ProjectStatus
from watchd.ledger.db import JobRow
from watchd.ledger.rebuild import rebuilt_without_source
from watchd.ledger.states import Stage
from watchd.pipeline import waits
from watchd.pipeline.identity import FileIdentity, fingerprint, same_work, sha256_file
from watchd.pipeline.outcomes import Fail, Park, RetryLater, SourceMissing, Wait
from watchd.pipeline.selection import choose_clips, render_choice
from watchd.watching.regular import special_kind

if TYPE_CHECKING:
    from watchd.pipeline.runner import Pipeline

# How long to wait after an ambiguous create before searching for its marker: the service may
# still be committing the project when our request timed out.
AMBIGUOUS_CREATE_WAIT = 5.0
MAX_PROCESS_CONFLICTS = 4
# A presigned URL this close to its expiry is not used (a quarter of its lifetime when shorter).
URL_MARGIN = 60.0
TITLE_MAX = 255  # characters in a project's title (the API refuses more)


# ---- queued: check, dedupe, probe ----------------------------------------------------------------


async def handle_queued(p: Pipeline, job: JobRow) -> None:
    path = p.source_path(job)
    current = _stat_or_missing(path, job)
    recorded = FileIdentity(job.size, job.mtime_ns, job.inode, job.dev)
    if not job.fingerprint and current.same_content_as(recorded):
        # Unreadable when it was taken (a failed job since retried): read it now.
        fp = await asyncio.to_thread(fingerprint, path, current.size)
        p.ledger.update(job.id, fingerprint=fp)
        job = p.ledger.require(job.id)
    if not current.same_content_as(recorded):
        # Written to again after it settled: record the new identity and let it settle again.
        fp = await asyncio.to_thread(fingerprint, path, current.size)
        p.ledger.update(
            job.id,
            size=current.size,
            mtime_ns=current.mtime_ns,
            inode=current.ino,
            dev=current.dev,
            fingerprint=fp,
        )
        p.ledger.record_event(job.id, "source_changed", {"size": current.size})
        raise Wait(
            "settling",
            "the file changed after it settled; taken once it stops changing",
            delay=max(1.0, p.settings.settle_seconds),
        )

    original = _original_of(p, job)
    if original is None and (rebuilt := rebuilt_without_source(p.ledger, job.size)):
        # Delivered before the ledger was lost, its source gone: known by its full SHA-256.
        digest = await asyncio.to_thread(sha256_file, path)
        original = next((j for j in rebuilt if j.sha256 == digest and same_work(j, job)), None)
    if original is not None:
        p.advance(
            job,
            Stage.DUPLICATE,
            kind="duplicate",
            detail={"of": original.id},
            duplicate_of=original.id,
        )
        return

    _check_caption_style(p, job)

    from watchd.probe import ProbeError

    try:
        result = await p.probe_fn(
            path, timeout=p.settings.probe_timeout, max_bytes=p.settings.max_bytes
        )
    except ProbeError as e:
        if e.code == "timeout":
            raise RetryLater(f"probing timed out ({e.message})") from e
        if not _unchanged(path, recorded):
            # Written to while it was probed: what was probed is not what is there now.
            raise Wait(
                "settling",
                "the file changed while it was checked; taken once it stops changing",
                delay=max(1.0, p.settings.settle_seconds),
            ) from e
        if e.code == "truncated" and (held := _hold(p, job, e.message)) is not None:
            raise held from e
        raise Fail(f"probe_{e.code}", e.message, resume=Stage.QUEUED) from e
    p.advance(
        job,
        Stage.PROBED,
        kind="probed",
        relaxed=True,  # lost: probed again
        detail={"duration": result.duration, "content_type": result.content_type},
        duration=float(result.duration),
        content_type=result.content_type,
    )


def _check_caption_style(p: Pipeline, job: JobRow) -> None:
    """A caption style the workspace does not have would be refused only at the render, after
    the processing was billed: fail now, before anything is created."""
    from watchd.presetcheck import preset_style_problem

    problem = preset_style_problem(job.preset_dict, p.workspace_styles)
    if problem:
        sidecar = p.source_path(job).with_name(job.name + ".toml")
        where = f"rule {job.rule!r}" if job.rule else "inbox root"
        if sidecar.is_file():
            where += f" or sidecar {sidecar.name}"
        raise Fail(
            "preset_invalid",
            f"the preset ({where}) cannot be used: {problem}",
            resume=Stage.QUEUED,
        )


def _unchanged(path: Path, recorded: FileIdentity) -> bool:
    try:
        return FileIdentity.of(path).same_content_as(recorded)
    except OSError:
        return False


def _hold(p: Pipeline, job: JobRow, what: str) -> Wait | None:
    """A file that looks truncated may be one whose writer paused (closed, and will reopen to
    append): hold it, looking again after a growing grace, until it has stayed unchanged for
    ``hold_seconds``. None when that time is up (it fails as truncated)."""
    now = p.clock.now()
    since = job.wait_since if waits.cause_of(job.wait) == "held" else None
    held_for = now - since if since is not None else 0.0
    left = p.settings.hold_seconds - held_for
    if left <= 0:
        return None
    delay = min(left, max(1.0, p.settings.settle_seconds, held_for))
    return Wait(
        "held",
        f"the file looks incomplete ({what}); unchanged for {held_for:.0f} s of "
        f"{p.settings.hold_seconds:.0f}: taken if its writer comes back, failed after that",
        delay=delay,
    )


def _original_of(p: Pipeline, job: JobRow) -> JobRow | None:
    """An earlier job with the same content, the same rule and the same resolved preset, that
    this one should point to instead of billing again (the same video under another rule, or
    with another sidecar, is other work). An earlier job that failed before any project existed
    does not count: nothing was billed, so the new drop is processed on its own."""
    for other in p.ledger.find_by_fingerprint(job.fingerprint, exclude=job.id):
        if (other.created_at, other.id) >= (job.created_at, job.id):
            continue
        if other.size != job.size:
            continue
        if other.stage is Stage.FAILED and not other.project_id:
            continue
        if not same_work(other, job):
            continue
        if other.duplicate_of:
            root = p.ledger.get(other.duplicate_of)
            if root is not None:
                return root
        return other
    return None


def _stat_or_missing(path: Path, job: JobRow) -> FileIdentity:
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        raise SourceMissing(str(path)) from e
    kind = special_kind(st.st_mode)
    if kind is not None:
        raise Fail(
            "not_regular",
            f"{job.name} is {kind} now, not the file that settled; it is not read",
            hint="Put the video itself into the inbox, then drop it again.",
            resume=Stage.QUEUED,
        )
    return FileIdentity(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


# ---- creating: one billed project per file ------------------------------------------------------


def project_title(job: JobRow) -> str:
    preset = job.preset_dict
    title = preset.get("title") or Path(job.name).stem
    marker = f" [{job.marker}]"
    # The API takes at most 255 characters: a long file name must not refuse the create.
    return title[: TITLE_MAX - len(marker)] + marker


def _create_fields(job: JobRow) -> dict[str, Any]:
    preset = job.preset_dict
    fields: dict[str, Any] = {
        "filename": job.name,
        "filesize": job.size,
        "content_type": job.content_type or "video/mp4",
        "duration": job.duration,
        "title": project_title(job),
    }
    for key in (
        "video_type",
        "language",
        "language_mode",
        "enable_multimodal",
        "custom_instructions",
        "trim_start",
        "trim_end",
    ):
        value = preset.get(key)
        if value is not None and value != "":
            fields[key] = value
    return fields


async def _reconcile_lost_create(p: Pipeline, job: JobRow) -> bool:
    """Find projects our lost create may have made. Returns True when the job was moved on."""
    found = [
        d
        for d in await p.client.find_projects(job.marker)
        if job.marker in str(d.get("title", "")) and not d.get("deleted")
    ]
    jl = p.job_log(job)

    def pid_of(d: dict[str, Any]) -> str:
        return str(d.get("id") or d.get("project_id"))

    def status_of(d: dict[str, Any]) -> str:
        return str(d.get("status", "")).upper()

    # Processing already started (we must have uploaded it) beats a project waiting with its
    # upload URL; a project waiting without one is of no use (its URL was in the lost answer).
    started = [d for d in found if status_of(d) not in ("PENDING_UPLOAD", "")]
    waiting = [d for d in found if d not in started and d.get("upload_url")]
    candidates = started or waiting
    adopt: dict[str, Any] | None = candidates[0] if candidates else None
    for d in found:
        if d is adopt:
            continue
        if d in started:
            jl.warning("project %s also carries this job's marker and has started", pid_of(d))
            continue
        # Never processed, so not billed: delete it rather than leave it waiting for ever.
        with contextlib.suppress(NotFound):
            p.durable()
            await p.client.delete_project(pid_of(d))
        reason = "create answer lost; no upload URL" if adopt is None else "a second lost create"
        p.ledger.record_event(job.id, "orphan_deleted", {"project_id": pid_of(d), "reason": reason})
        jl.warning("deleted project %s whose create answer was lost (%s)", pid_of(d), reason)
    if adopt is None:
        return False
    pid = pid_of(adopt)
    if adopt in started:
        p.advance(
            job,
            Stage.UPLOADING,
            kind="create_recovered",
            detail={"project_id": pid, "status": status_of(adopt)},
            project_id=pid,
            upload_url=None,
        )
        return True
    remember_upload_url(p, job.id, str(adopt["upload_url"]))
    p.advance(
        job,
        Stage.UPLOADING,
        kind="create_recovered",
        detail={"project_id": pid},
        project_id=pid,
        upload_url=str(adopt["upload_url"]),
        object_key=adopt.get("object_key"),
    )
    return True


async def handle_creating(p: Pipeline, job: JobRow) -> None:
    fresh = job.id in p.fresh_intents
    p.fresh_intents.discard(job.id)
    if not fresh and await _reconcile_lost_create(p, job):
        return
    # The file may have gone while the job waited for a slot: a project made now would be
    # billed for bytes that never come.
    _stat_or_missing(p.source_path(job), job)
    try:
        p.durable()
        created = await p.client.create_project(**_create_fields(job))
    except ConcurrencyLimited as e:
        # Nothing was created: the slot goes back while the job waits on the tier.
        raise p.tier_refused(job, e, at_process=False) from e
    except RateLimited as e:
        # Nothing was created: give the slot back and wait.
        delay = e.retry_after if e.retry_after is not None else 30.0
        now = p.clock.now()
        p.ledger.transition(
            job.id,
            Stage.PROBED,
            expect=Stage.CREATING,
            kind="create_deferred",
            detail={"reason": str(e)},
            next_attempt_at=now + delay,
            **waits.wait_fields(job, "create rate limit", e.message, now + delay, now),
        )
        if waits.cause_of(job.wait) != "create rate limit":
            p.job_log(job).info("waiting: create rate limit %.0fs: %s", delay, e.message)
        return
    except TransientError as e:
        # The answer is lost, not the request: the project may exist. Search before creating.
        raise RetryLater(
            f"create answer lost ({e}); will look for the project before creating again",
            delay=AMBIGUOUS_CREATE_WAIT,
        ) from e
    remember_upload_url(p, job.id, created.upload_url)
    p.advance(
        job,
        Stage.UPLOADING,
        kind="created",
        detail={"project_id": created.project_id, "object_key": created.object_key},
        project_id=created.project_id,
        upload_url=created.upload_url,
        object_key=created.object_key,
        step="uploading",
        progress=0,
        bytes_uploaded=0,
    )


# ---- uploading ----------------------------------------------------------------------------------


def presigned_window(url: str) -> tuple[float, float | None] | None:
    """When an S3-style presigned URL stops working, by the signer's clock, and for how long it
    was signed (SigV4: X-Amz-Date + X-Amz-Expires; SigV2: ``Expires``, no lifetime)."""
    try:
        q = parse_qs(urlsplit(url).query)
        date = q.get("X-Amz-Date", [None])[0]
        expires = q.get("X-Amz-Expires", [None])[0]
        if date and expires:
            signed = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
            return signed + float(expires), float(expires)
        exp = q.get("Expires", [None])[0]
        return (float(exp), None) if exp else None
    except (ValueError, TypeError):
        return None


def remember_upload_url(p: Pipeline, job_id: str, url: str) -> None:
    """Note when this process was handed ``url``: its age is then measured on our own monotonic
    clock, which a wrong NAS clock or a short signing lifetime cannot fool."""
    p.upload_urls[job_id] = (url, p.clock.monotonic())


def upload_url_expired(p: Pipeline, job: JobRow) -> bool:
    """Whether the job's upload URL has (nearly) expired, so an upload would be refused.

    The margin leaves time for the request to start; it is a quarter of the URL's lifetime at
    most, so short-lived URLs are still used. A URL this process received is judged by its age;
    one recorded by an earlier run only by comparing our wall clock with the signer's, which
    a skewed clock can get wrong once (the fresh URL that follows is judged by its age)."""
    assert job.upload_url
    window = presigned_window(job.upload_url)
    if window is None:
        return False
    expires_at, lifetime = window
    margin = URL_MARGIN if lifetime is None else min(URL_MARGIN, lifetime / 4)
    got = p.upload_urls.get(job.id)
    if got is not None and got[0] == job.upload_url and lifetime is not None:
        return p.clock.monotonic() - got[1] > lifetime - margin
    return expires_at - margin < p.clock.now()


async def _restart_project(p: Pipeline, job: JobRow, reason: str) -> None:
    """The project can no longer take our upload: delete it (it was never processed, so nothing is
    billed) and go back for a fresh one. Restarts after the first wait longer each time, so a
    cause that keeps coming back cannot churn projects at the API's create rate."""
    assert job.project_id
    with contextlib.suppress(NotFound):
        p.durable()
        await p.client.delete_project(job.project_id)
    earlier = sum(1 for e in p.ledger.events(job.id) if e.kind == "project_restarted")
    p.job_log(job).warning(
        "deleted project %s and will create a fresh one: %s", job.project_id, reason
    )
    p.advance(
        job,
        Stage.PROBED,
        kind="project_restarted",
        detail={"reason": reason, "old_project_id": job.project_id},
        project_id=None,
        upload_url=None,
        object_key=None,
        bytes_uploaded=0,
        progress=0,
    )
    p.upload_urls.pop(job.id, None)
    if earlier:
        delay = p.backoff(earlier)
        p.ledger.update(
            job.id,
            next_attempt_at=p.clock.now() + delay,
            error=f"project restarted {earlier + 1} times ({reason}); next try in {delay:.0f}s",
        )


async def handle_uploading(p: Pipeline, job: JobRow) -> None:
    assert job.project_id
    if not job.upload_url:
        status = await p.client.project_status(job.project_id)
        if status.status == "PENDING_UPLOAD":
            await _restart_project(p, job, "no upload URL known for the project")
        else:
            p.advance(job, Stage.UPLOADED, kind="upload_found_done")
        return
    if upload_url_expired(p, job):
        await _expired(p, job)
        return
    path = p.source_path(job)
    try:
        current = _stat_or_missing(path, job)
    except SourceMissing:
        # (Not while the inbox is paused: an unmounted share says nothing about the upload.)
        if job.inbox not in p.paused_inboxes and not any(
            e.kind == "upload_unconfirmed" for e in p.ledger.events(job.id)
        ):
            # The upload may have ended just before a crash (the ledger still says uploading)
            # and the source gone since: /process tells. If the storage lacks the object, the
            # 409 path brings the job back here, and then the file is really missing.
            p.advance(
                job,
                Stage.UPLOADED,
                kind="upload_unconfirmed",
                detail={"reason": "source gone; the upload may have completed before a restart"},
            )
            return
        raise
    if not current.same_content_as(FileIdentity(job.size, job.mtime_ns, job.inode, job.dev)):
        await _source_changed(p, job, current)
        return
    # The last look before the bytes leave: nobody may be writing to it now.
    if await p.open_checks.is_open_for_write(path):
        raise Wait("settling", "a local process has the file open for writing", delay=5.0)
    async with p.upload_slots:
        if (job.step, job.progress, job.bytes_uploaded) != ("uploading", 0, 0):
            p.ledger.update(job.id, step="uploading", progress=0, bytes_uploaded=0)
        reporter = _ProgressReporter(p, job)
        started = time.monotonic()
        try:
            result = await p.client.upload(
                job.upload_url,
                path,
                job.content_type or "video/mp4",
                expect=current,
                progress=reporter,
            )
        except UrlExpired:
            await _expired(p, job)
            return
        except SourceChanged:
            await _source_changed(p, job, _stat_or_missing(path, job))
            return
        except TransferError as e:
            if job.attempts + 1 >= 5:
                await _restart_project(p, job, f"upload refused {job.attempts + 1} times: {e}")
                return
            raise RetryLater(f"upload failed: {e}; it will start again from the beginning") from e
    secs = max(1e-6, time.monotonic() - started)
    p.on_event("uploaded", {"job_id": job.id, "bytes": result.size, "seconds": secs})
    p.advance(
        job,
        Stage.UPLOADED,
        kind="uploaded",
        say=f"{result.size} bytes at {result.size / secs / 1e6:.1f} MB/s",
        detail={"sha256": result.sha256, "bytes": result.size},
        sha256=result.sha256,
        bytes_uploaded=result.size,
        progress=100,
        step=None,
    )


class _ProgressReporter:
    """Upload progress into the ledger (throttled) and the log (at 25, 50 and 75 %: the start
    and the end have their own lines, ``creating -> uploading`` and ``uploading -> uploaded: N bytes
    at X MB/s``)."""

    def __init__(self, p: Pipeline, job: JobRow) -> None:
        self.p = p
        self.job = job
        # The upload's start is already in the ledger (step "uploading", 0 bytes) and its end is
        # the transition's: writes are due every half second between (none for a small file).
        self.last_write = time.monotonic()
        self.last_logged = -1

    def __call__(self, sent: int, total: int) -> None:
        now = time.monotonic()
        pct = 100.0 * sent / total if total else 100.0
        # The end is written by the transition to ``uploaded`` (bytes and 100 %), not here.
        if now - self.last_write >= 0.5 and sent < total:
            self.last_write = now
            with contextlib.suppress(Exception), self.p.ledger.relaxed():
                self.p.ledger.update(self.job.id, bytes_uploaded=sent, progress=round(pct, 1))
        quarter = int(pct // 25)
        if quarter > self.last_logged:
            self.last_logged = quarter
            if 0 < quarter < 4:
                self.p.job_log(self.job).info("uploading %s: %d%%", self.job.name, quarter * 25)


async def _expired(p: Pipeline, job: JobRow) -> None:
    assert job.project_id
    status = await p.client.project_status(job.project_id)
    if status.status == "PENDING_UPLOAD":
        await _restart_project(p, job, "the presigned upload URL expired")
    else:
        p.advance(job, Stage.UPLOADED, kind="upload_found_done")


async def _source_changed(p: Pipeline, job: JobRow, current: FileIdentity) -> None:
    """The source changed after it was taken: the project was made for other bytes. Delete it and
    take the file again from the start once it settles."""
    if job.project_id:
        with contextlib.suppress(NotFound):
            p.durable()
            await p.client.delete_project(job.project_id)
    fp = await asyncio.to_thread(fingerprint, p.source_path(job), current.size)
    p.advance(
        job,
        Stage.QUEUED,
        kind="source_changed",
        detail={"old_project_id": job.project_id, "size": current.size},
        project_id=None,
        upload_url=None,
        object_key=None,
        size=current.size,
        mtime_ns=current.mtime_ns,
        inode=current.ino,
        dev=current.dev,
        fingerprint=fp,
        bytes_uploaded=0,
        progress=0,
        sha256=None,
    )


# ---- uploaded: start processing ------------------------------------------------------------------


async def handle_uploaded(p: Pipeline, job: JobRow) -> None:
    assert job.project_id
    try:
        with p.asking_to_process(job.id):
            p.durable()
            await p.client.process_project(job.project_id)
    except ConcurrencyLimited as e:
        raise p.tier_refused(job, e, at_process=True) from e
    except Conflict as e:
        status = await p.client.project_status(job.project_id)
        if status.status == "PENDING_UPLOAD":
            if job.attempts + 1 >= MAX_PROCESS_CONFLICTS:
                p.advance(
                    job,
                    Stage.UPLOADING,
                    kind="reupload",
                    detail={"reason": "the storage does not have the upload"},
                )
                return
            raise RetryLater("Carmic has not registered the upload yet", delay=5.0) from e
        # Already past PENDING_UPLOAD: a previous /process went through.
    # Lost: /process is asked again and answers that it went through (above).
    p.advance(job, Stage.PROCESSING, kind="processing", relaxed=True, progress=0, step="queued")


# ---- processing: follow until the clips are there ------------------------------------------------


async def handle_processing(p: Pipeline, job: JobRow) -> None:
    assert job.project_id
    # One look at the project first. One that is done already (a daemon restarted after a long
    # stop, a service quicker than the upload) then needs no other call before its clips; one
    # still processing is followed on from what this look says, so it costs no more calls than
    # the status check it replaces.
    project = await p.client.get_project(job.project_id)
    if not _clips_listed(project):
        project = await _clips_after_processing(p, job, project)
    if not project.clips:
        raise Fail(
            "no_clips",
            "Carmic found no clips in this video",
        )
    rule = render_choice(job.preset_dict.get("render", "all"))
    rows = [
        {
            "clip_id": c.id,
            "rank": rank,
            "title": c.title,
            "start_time": c.start_time,
            "end_time": c.end_time,
            "virality_score": c.virality_score,
            "reasoning": c.reasoning,
            "thumbnail_url": c.thumbnail_url,
            "selected": int(picked),
        }
        for c, rank, picked in choose_clips(project.clips, rule)
    ]
    chosen = sum(1 for r in rows if r["selected"])
    # The clips and the transition: one commit; lost, they are read again.
    with p.ledger.relaxed(), p.ledger.batch():
        p.ledger.put_clips(job.id, rows)
        p.advance(
            job,
            Stage.CLIPS_READY,
            kind="clips_ready",
            detail={"clips": len(rows), "chosen": chosen},
            say=f"{len(rows)} clip(s) found, {chosen} chosen",
            progress=100,
            step="clips ready",
        )


def _clips_listed(project: Project) -> bool:
    """Done processing, with its clips listed (which may lag CLIPS_READY: see
    ``visual_pipeline_ready``)."""
    return (
        project.status in PROJECT_READY_STATUSES
        and project.visual_pipeline_ready
        and bool(project.clips or project.clip_count == 0)
    )


async def _clips_after_processing(p: Pipeline, job: JobRow, seen: Project) -> Project:
    """Follow the project (``seen`` is the last look at it) until it is done; its clips then.

    A failed project is asked for its status, which carries the reason."""
    first = None if seen.failed else ProjectStatus.from_api(seen.raw)
    status = await _follow(p, job, first)
    if status.failed:
        reason = status.raw.get("error") or status.raw.get("error_message") or status.current_step
        if status.status == "FAILED_BILLING":
            raise Park(f"billing: project {status.status}", resume=Stage.PROBED)
        raise Fail(
            status.status.lower(),
            f"Carmic processing ended in {status.status}" + (f": {reason}" if reason else ""),
            # A failed project never processes again (/process answers 409): `watchd retry`
            # starts over with a new one.
            resume=Stage.PROBED,
        )
    # Ready when looked at, but the clips not listed yet: wait a little before looking again.
    return await _wait_for_clips(p, job, look_now=status is not first)


async def _follow(p: Pipeline, job: JobRow, first: ProjectStatus | None = None) -> ProjectStatus:
    """Until the project is ready or failed: SSE first when configured, polling as the fallback.
    ``first`` is what a look just now said (None: ask for the status first)."""
    assert job.project_id
    pid = job.project_id
    tracker = _StepTracker(p, job)
    if p.settings.realtime == "sse":
        try:
            status = first or await p.client.project_status(pid)
            first = None
            tracker(status)
            if status.ready or status.failed:
                return status
            async for event in p.client.project_events(pid):
                st = ProjectStatus.from_api({"id": pid, **event})
                if not st.status:
                    continue
                tracker(st)
                if st.ready or st.failed:
                    return st
        except TransientError as e:
            p.job_log(job).warning(
                "progress stream unavailable (%s); polling every %.0fs", e, p.settings.poll_seconds
            )
    while True:
        status = first or await p.client.project_status(pid)
        first = None
        tracker(status)
        if status.ready or status.failed:
            return status
        await p.clock.sleep(p.settings.poll_seconds)


class _StepTracker:
    def __init__(self, p: Pipeline, job: JobRow) -> None:
        self.p = p
        self.job = job
        self.last: tuple[str, str, int] | None = None

    def __call__(self, st: ProjectStatus) -> None:
        key = (st.status, st.current_step, int(st.progress))
        if key == self.last or st.ready or st.failed:
            # The end is told by what follows: the transition to clips_ready, or the failure.
            return
        if self.last is None or self.last[:2] != key[:2]:
            # A look at the whole project (the first one) has a status but no step.
            what = f"{st.status} {st.current_step}" if st.current_step else st.status
            self.p.job_log(self.job).info("processing: %s (%d%%)", what, st.progress)
        self.last = key
        step = st.current_step or st.status
        with contextlib.suppress(Exception), self.p.ledger.relaxed():
            self.p.ledger.update(self.job.id, progress=float(st.progress), step=step)


async def _wait_for_clips(p: Pipeline, job: JobRow, *, look_now: bool = True) -> Project:
    """Clips are only listed once ``visual_pipeline_ready`` is true, which may lag CLIPS_READY."""
    assert job.project_id
    delay = min(1.0, p.settings.poll_seconds)
    if not look_now:
        await p.clock.sleep(delay)
        delay = min(p.settings.poll_seconds, delay * 2)
    while True:
        project = await p.client.get_project(job.project_id)
        if project.failed:
            raise Fail(
                project.status.lower(),
                f"Carmic processing ended in {project.status}",
                resume=Stage.PROBED,
            )
        if project.visual_pipeline_ready and (project.clips or project.clip_count == 0):
            return project
        await p.clock.sleep(delay)
        delay = min(p.settings.poll_seconds, delay * 2)

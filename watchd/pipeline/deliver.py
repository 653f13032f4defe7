"""The last stages: write results into the outbox, or write down why there are none.

Order matters and is the same after any crash: every file goes in under a temporary name and is
renamed when complete; ``manifest.json`` goes in last; the delivery is verified on disk; only then
is the source moved or deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from watchd import failures
from watchd.carmic.errors import CarmicError, NotFound
from watchd.carmic.models import ClipDetail, Word
from watchd.ledger.db import ClipRow, JobRow
from watchd.ledger.states import Stage
from watchd.outbox import atomic, bundles, delivery, manifest, names, srt
from watchd.pipeline.identity import FileIdentity, sha256_file
from watchd.pipeline.outcomes import Fail, RetryLater, Wait
from watchd.pipeline.render import _renders
from watchd.pipeline.selection import manifest_preset, not_chosen_reason, render_choice
from watchd.watching.regular import NotRegularFile

if TYPE_CHECKING:
    from watchd.pipeline.runner import Pipeline


@dataclass(frozen=True)
class Target:
    inbox: Path
    outbox: Path
    on_success: str
    on_failure: str


def target_of(job: JobRow, p: Pipeline | None = None) -> Target:
    """Where the job's results and source go. With several hosts (``p`` given), the inbox and
    outbox are this host's mounts of the job's inbox (the paths recorded are those of the host
    that took the file)."""
    d = job.preset_dict.get("_delivery") or {}
    inbox = Path(d.get("inbox") or job.inbox)
    outbox = Path(d.get("outbox") or inbox.parent / "outbox")
    if p is not None and job.inbox in p.inbox_paths:
        inbox = p.inbox_paths[job.inbox]
        outbox = p.outbox_paths.get(job.inbox, outbox)
    return Target(
        inbox=inbox,
        outbox=outbox,
        on_success=str(d.get("on_success", "move")),
        on_failure=str(d.get("on_failure", "move")),
    )


def outbox_dir_here(p: Pipeline, job: JobRow, recorded: str) -> Path:
    """A delivery folder recorded by whichever host: here, under this host's outbox (its last
    parts, the rule's folders and its own name, are the same on every host)."""
    root = p.outbox_paths.get(job.inbox)
    if root is None:
        return Path(recorded)
    depth = len(PurePosixPath(job.rel_path).parent.parts) + 1
    return root.joinpath(*Path(recorded).parts[-depth:])


def _folder(p: Pipeline, job: JobRow, t: Target) -> Path:
    """The job's outbox folder: chosen (and reserved by mkdir) once, then remembered."""
    if job.outbox_dir:
        folder = outbox_dir_here(p, job, job.outbox_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    rel = PurePosixPath(job.rel_path)
    # A crash between the reservation (mkdir) and its record below leaves an empty folder no
    # job owns: taking it again keeps the delivery under its own name.
    folder = delivery.choose_outbox_folder(
        t.outbox,
        rel.parent,
        Path(rel.name).stem,
        unclaimed=lambda f: not p.ledger.outbox_dir_taken(str(f), exclude=job.id),
    )
    p.ledger.update(job.id, outbox_dir=str(folder))
    return folder


def _now_iso(p: Pipeline) -> str:
    return datetime.fromtimestamp(p.clock.now(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _source_sha256(job: JobRow, path: Path | None = None) -> str | None:
    if job.sha256:
        return job.sha256
    try:
        return await asyncio.to_thread(sha256_file, path or Path(job.path))
    except (FileNotFoundError, NotRegularFile):
        return None  # gone, or a link put in its place: never read through it


def _words(clip: ClipRow) -> list[Word]:
    if not clip.words:
        return []
    return [Word(str(t), float(s), float(e)) for t, s, e in json.loads(clip.words)]


def _base_names(clips: list[ClipRow]) -> dict[str, str]:
    """``NN - Title`` per clip in score order: computed from the ledger, never from what is on
    disk, so a resumed delivery gives every clip the same name it had before."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for n, clip in enumerate(clips, start=1):
        base = names.unique_name(taken, names.clip_basename(n, clip.title))
        taken.add(base)
        out[clip.clip_id] = base
    return out


def _file_ok(folder: Path, rel: str | None, size: int | None) -> bool:
    if not rel:
        return False
    try:
        return (
            (folder / rel).stat().st_size == size if size is not None else (folder / rel).exists()
        )
    except OSError:
        return False


async def handle_delivering(p: Pipeline, job: JobRow) -> None:
    t = target_of(job, p)
    resumed = bool(job.outbox_dir)
    folder = _folder(p, job, t)
    if resumed:  # a folder reserved just now has nothing in it to sweep
        await asyncio.to_thread(atomic.clean_stale_temps, folder)
    for stale in (folder / delivery.FAILED_TXT, delivery.failed_txt_beside(p.source_path(job))):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()  # from a failure before a `watchd retry`
    preset = job.preset_dict
    renders = _renders(job)
    chosen = p.ledger.clips(job.id, selected_only=True)
    failed_renders = [c for c in chosen if renders and c.state == "failed"]
    delivered = [c for c in chosen if (c.state == "rendered" or c.file) or not renders]
    delivered = [c for c in delivered if c not in failed_renders]
    bases = _base_names(delivered)
    skipped: list[dict[str, str]] = []
    entries: list[dict[str, Any]] = []
    # What each clip's files add to its row: written with the transition (one commit), or on
    # the way out when a later step fails, so that a retry does not fetch them again.
    records: dict[str, dict[str, Any]] = {}
    # Captions are written with the manifest, in its hand-off to a thread (one instead of two).
    captions: dict[str, Caption] = {}
    total = max(1, len(delivered))
    try:
        for i, clip in enumerate(delivered):
            if total > 1:  # one clip: the transition's step ("delivering") says it all
                with p.ledger.relaxed():
                    p.ledger.update(
                        job.id,
                        progress=round(100.0 * i / total, 1),
                        step=f"delivering {i + 1}/{total}",
                    )
            entries.append(
                await _deliver_clip(
                    p,
                    job,
                    clip,
                    bases[clip.clip_id],
                    folder,
                    skipped,
                    records.setdefault(clip.clip_id, {}),
                    captions if preset.get("captions", True) else None,
                    renders=renders,
                )
            )
        for c in failed_renders:
            skipped.append({"what": f"render {c.title}", "reason": c.error or "render failed"})
        skipped.extend(_not_chosen(p, job))
        status = "partial" if failed_renders else "delivered"
        doc = manifest.build_manifest(
            status=status,
            source={
                "name": job.name,
                "size": job.size,
                "sha256": await _source_sha256(job, p.source_path(job)),
            },
            rule=job.rule,
            project_id=job.project_id,
            clips=entries,
            skipped=skipped,
            error=None,
            completed_at=_now_iso(p),
            job_id=job.id,
            preset=manifest_preset(preset),
        )
        written: list[str] = []
        if p.lease_gate is not None:
            await p.lease_gate()  # with several hosts: the job must still be ours to publish
        try:
            problems = await asyncio.to_thread(_write_and_verify, folder, doc, captions, written)
        finally:  # captions written before a failure are recorded like the clips' files
            for name in written:
                if captions[name].recorded != name:
                    records.setdefault(captions[name].clip_id, {})["captions"] = name
        if problems:
            records.clear()
            with p.ledger.batch():
                for c in delivered:
                    p.ledger.update_clip(job.id, c.clip_id, file=None)
            raise RetryLater("delivery did not verify: " + "; ".join(problems[:3]))
        # The source's new path goes into the transition's write: a stop between the move and
        # that write finds the moved file again by its inode (see _dispose).
        if p.lease_gate is not None:
            await p.lease_gate()
        disposed = _dispose(p, job, t, kind="done", record=False)
    except BaseException:
        _record_clips(p, job, records)
        raise
    path = disposed if disposed is not None else job.path  # deleted: the old path stays
    with p.ledger.batch():
        _record_clips(p, job, records)
        p.advance(
            job,
            Stage.DELIVERED,
            kind="delivered",
            detail={"status": status, "clips": len(entries), "folder": str(folder)},
            say=f"{len(entries)} clip(s) in {folder}" + (" (partial)" if failed_renders else ""),
            progress=100,
            step=None,
            disposed_to=disposed,
            outbox_dir=str(folder),
            path=path,
        )


def _not_chosen(p: Pipeline, job: JobRow) -> list[dict[str, Any]]:
    """The clips Carmic found that the rule's ``render`` left out, each with why."""
    clips = p.ledger.clips(job.id)
    rule = render_choice(job.preset_dict.get("render", "all"))
    return [
        {
            "what": f"clip {c.title}",
            "reason": not_chosen_reason(c.virality_score, c.rank, len(clips), rule),
            "clip_id": c.clip_id,
        }
        for c in sorted(clips, key=lambda c: c.rank)
        if not c.selected
    ]


def _record_clips(p: Pipeline, job: JobRow, records: dict[str, dict[str, Any]]) -> None:
    """The clips' new files into their rows, in one transaction (none when nothing is new)."""
    learned = {clip_id: values for clip_id, values in records.items() if values}
    if not learned:
        return
    with p.ledger.batch():
        for clip_id, values in learned.items():
            p.ledger.update_clip(job.id, clip_id, **values)


@dataclass(frozen=True)
class Caption:
    """A clip's SRT, waiting to be written with the manifest."""

    clip_id: str
    text: str
    recorded: str | None  # the name the clip's row already has


def _write_and_verify(
    folder: Path, doc: dict[str, Any], captions: dict[str, Caption], written: list[str]
) -> list[str]:
    """The captions (their names into ``written`` as they land), then the manifest last (each
    atomically, fsynced), then the whole delivery checked against it: in one hand-off to a
    thread, off the event loop."""
    for name, caption in captions.items():
        atomic.atomic_write_text(folder / name, caption.text)
        written.append(name)
    manifest.write_manifest(folder, doc)
    return delivery.verify_delivery(folder, doc)


async def _deliver_clip(
    p: Pipeline,
    job: JobRow,
    clip: ClipRow,
    base: str,
    folder: Path,
    skipped: list[dict[str, str]],
    record: dict[str, Any],
    captions: dict[str, Caption] | None,
    *,
    renders: bool,
) -> dict[str, Any]:
    """One clip's files into ``folder``; what its ledger row learns goes into ``record`` (the
    caller writes it); its SRT into ``captions`` (None: no captions wanted), which the caller
    writes with the manifest."""
    detail = None
    entry: dict[str, Any] = {
        "id": clip.clip_id,
        "title": clip.title,
        "start_time": clip.start_time,
        "end_time": clip.end_time,
        "virality_score": clip.virality_score,
        "reasoning": clip.reasoning,
        "file": None,
        "captions": None,
        "sha256": None,
        "exports": [],
    }
    if renders:
        mp4 = f"{base}.mp4"
        sha256 = clip.sha256
        if not (clip.file == mp4 and clip.sha256 and _file_ok(folder, mp4, clip.size)):
            res = await p.client.download_clip_video(clip.clip_id, folder / mp4)
            record.update(file=mp4, size=res.size, sha256=res.sha256)
            sha256 = res.sha256
        entry["file"] = mp4
        entry["sha256"] = sha256
    # The transcript and the thumbnail's link were saved when the preset was applied: the
    # clip is only read again when they are not known (nothing rendered) or the link fails.
    words = _words(clip)
    if not clip.words:
        detail = await _clip_detail(p, clip)
        if detail is not None:
            words = list(detail.words) or words
    if captions is not None:
        rel_words = srt.to_clip_relative(words, clip.start_time, clip.end_time)
        text = srt.words_to_srt(rel_words)
        if text:
            name = f"{base}.srt"
            captions[name] = Caption(clip.clip_id, text, clip.captions)
            entry["captions"] = name
        else:
            skipped.append(
                {"what": f"captions {clip.title}", "reason": "the transcript has no words"}
            )
    thumb_url = clip.thumbnail_url or (detail.thumbnail_url if detail is not None else None)
    if thumb_url:
        jpg = f"{base}.jpg"
        try:
            if not _file_ok(folder, clip.thumbnail, None) or clip.thumbnail != jpg:
                try:
                    await p.client.download(thumb_url, folder / jpg)
                except CarmicError:
                    # A saved link may have expired (presigned): ask for a fresh one, once.
                    fresh = await _clip_detail(p, clip) if detail is None else None
                    if fresh is None or fresh.thumbnail_url in (None, "", thumb_url):
                        raise
                    await p.client.download(fresh.thumbnail_url, folder / jpg)
                record["thumbnail"] = jpg
            entry["thumbnail"] = jpg
        except (CarmicError, OSError) as err:
            skipped.append({"what": f"thumbnail {clip.title}", "reason": str(err)})
    for ex in p.ledger.exports(job.id):
        if ex.clip_id != clip.clip_id:
            continue
        what = f"export {ex.format} of {clip.title}"
        if ex.state == "skipped":
            skipped.append({"what": what, "reason": ex.reason or "skipped"})
            continue
        rel_dir = f"exports/{base}/{ex.format}/"
        if ex.state != "delivered" or not (folder / rel_dir).is_dir():
            try:
                left_out = await _deliver_export(p, job, ex.export_id, folder, rel_dir)
            except (bundles.BundleError, CarmicError) as err:
                p.ledger.put_export(job.id, ex.clip_id, ex.format, state="skipped", reason=str(err))
                skipped.append({"what": what, "reason": str(err)})
                continue
            p.ledger.put_export(job.id, ex.clip_id, ex.format, state="delivered", path=rel_dir)
            for m in left_out:
                skipped.append({"what": f"{what}: member {m.name}", "reason": m.reason})
        entry["exports"].append({"format": ex.format, "path": rel_dir})
    return entry


async def _clip_detail(p: Pipeline, clip: ClipRow) -> ClipDetail | None:
    """The clip as the API has it now (None when it is gone)."""
    with contextlib.suppress(NotFound):
        return await p.client.get_clip(clip.clip_id)
    return None


async def _deliver_export(
    p: Pipeline, job: JobRow, export_id: str | None, folder: Path, rel_dir: str
) -> list[bundles.SkippedMember]:
    """Download an export's zip next to the delivery and unpack it safely into ``rel_dir``;
    returns the members left out (links, paths escaping the folder, ...)."""
    assert export_id
    info = await p.client.get_export(export_id)
    if not info.download_url:
        raise bundles.BundleError(f"export {export_id} has no download URL ({info.status})")
    tmp_zip = atomic.tmp_path_for(folder / f"{export_id}.zip")
    try:
        await p.client.download(info.download_url, tmp_zip, expected_size=info.file_size)
        result = await asyncio.to_thread(bundles.extract_bundle, tmp_zip, folder / rel_dir)
        return list(result.skipped)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_zip.unlink()


def _dispose(p: Pipeline, job: JobRow, t: Target, *, kind: str, record: bool = True) -> str | None:
    """Move/delete/keep the source per the inbox's policy (never before verification); its new
    path is written to the ledger unless ``record`` is false (the caller's next write has it)."""
    src = p.source_path(job)
    mode = t.on_success if kind == "done" else t.on_failure
    if not src.exists():
        moved = None
        if mode == "move" and job.disposed_to is None:
            # Moved, then stopped before the new path was recorded: find it by its inode.
            moved = delivery.find_disposed(
                src.name, t.inbox, job.rule, kind, inode=job.inode, dev=job.dev
            )
        if moved is None:
            return job.disposed_to
        if record:
            p.ledger.update(job.id, path=str(moved))
        return str(moved)
    if mode != "keep" and _changed_since_taken(src, job):
        # Written to since it was probed: its writer may still be at it. Leave it be (what it
        # became is a new file to the watcher).
        p.job_log(job).warning(
            "%s changed since it was checked: left in place, not moved to _%s", job.name, kind
        )
        return str(src)
    new = delivery.dispose_source(src, t.inbox, job.rule, mode, kind)
    if record and new is not None and new != src:
        p.ledger.update(job.id, path=str(new))
    if new != src and src.parent == t.inbox:
        # One entry fewer at the inbox's top level, taken by us: an inbox we emptied ourselves
        # (on_success = "delete") is not an unmounted share.
        p.on_event("source_removed", {"job_id": job.id, "inbox": str(t.inbox)})
    return str(new) if new is not None else None


def _changed_since_taken(src: Path, job: JobRow) -> bool:
    try:
        current = FileIdentity.of(src)
    except OSError:
        return False
    return not current.same_content_as(FileIdentity(job.size, job.mtime_ns, job.inode, job.dev))


async def fail_job(p: Pipeline, job: JobRow, f: Fail) -> None:
    """Record the failure where a person will see it: the log, the ledger (``watchd status``) and
    the outbox (``FAILED.txt`` and a manifest with status ``failed``); then the source goes per
    ``on_failure``."""
    jl = p.job_log(job)
    hint = f.hint or failures.hint(f.code, job.id)
    jl.error("%s failed [%s]: %s — %s", job.name, f.code, f.message, hint)
    t = target_of(job, p)
    folder_str = job.outbox_dir
    disposed = job.disposed_to
    if f.code != "source_missing":
        try:
            folder = _folder(p, job, t)
            folder_str = str(folder)
            told = {
                "source_name": job.name,
                "error_code": f.code,
                "message": f.message,
                "hint": hint,
                "job_id": job.id,
                "log_hint": failures.log_hint(job.id),
            }
            delivery.write_failed_txt(folder, **told)
            doc = manifest.build_manifest(
                status="failed",
                source={"name": job.name, "size": job.size, "sha256": job.sha256},
                rule=job.rule,
                project_id=job.project_id,
                clips=[],
                skipped=[],
                error={"code": f.code, "message": f.message},
                completed_at=_now_iso(p),
                job_id=job.id,
                preset=manifest_preset(job.preset_dict),
            )
            manifest.write_manifest(folder, doc)
            disposed = _dispose(p, job, t, kind="failed")
            if disposed is not None and disposed != job.path:
                # Moved to _failed/<rule>/: the same text beside it, for whoever looks there.
                delivery.write_failed_txt_beside(Path(disposed), **told)
        except OSError as e:
            jl.error("could not write the failure into the outbox: %s", e)
    resume = f.resume or job.stage
    if resume in (Stage.FAILED, Stage.DELIVERED, Stage.PARKED):
        resume = Stage.QUEUED
    dropped: dict[str, Any] = {}
    if (
        f.code == "source_missing"
        and job.stage is Stage.UPLOADING
        and job.project_id
        and await _drop_waiting_project(p, job, f.message)
    ):
        dropped = {"project_id": None, "upload_url": None, "object_key": None}
    p.ledger.transition(
        job.id,
        Stage.FAILED,
        kind="failed",
        detail={"code": f.code, "message": f.message},
        error_code=f.code,
        error=f"{f.message} — {hint}",
        resume_stage=resume.value,
        outbox_dir=folder_str,
        disposed_to=disposed,
        next_attempt_at=0,
        **dropped,
    )


async def _drop_waiting_project(p: Pipeline, job: JobRow, reason: str) -> bool:
    """Delete the job's project while it still waits for its upload: the source is gone, a retry
    starts over with a new project, and this one would stay billed for bytes that never come.
    Returns whether it is gone (one that got its upload is kept)."""
    assert job.project_id
    try:
        status = await p.client.project_status(job.project_id)
        if status.status != "PENDING_UPLOAD":
            return False
        p.durable()
        await p.client.delete_project(job.project_id)
    except NotFound:
        pass
    except CarmicError as e:
        p.job_log(job).warning("could not delete project %s: %s", job.project_id, e)
        return False
    p.ledger.record_event(
        job.id, "project_deleted", {"project_id": job.project_id, "reason": reason}
    )
    return True


async def handle_duplicate(p: Pipeline, job: JobRow) -> None:
    orig = p.ledger.get(job.duplicate_of or "")
    if orig is None:
        p.advance(job, Stage.QUEUED, kind="duplicate_orphaned", duplicate_of=None)
        return
    if orig.stage is Stage.FAILED:
        raise Fail(
            "duplicate_of_failed",
            # The first job's message without its hint: this failure has a hint of its own.
            f"same content as {orig.rel_path} (job {orig.id}), which failed: "
            + (orig.error or "").split(" — ")[0],
            resume=Stage.DUPLICATE,
        )
    if orig.stage is not Stage.DELIVERED:
        raise Wait(
            "duplicate",
            f"same content as job {orig.id} ({orig.state}); delivered when it is",
            delay=max(2.0, p.settings.poll_seconds / 2),
        )
    t = target_of(job, p)
    folder = _folder(p, job, t)
    first = outbox_dir_here(p, orig, orig.outbox_dir) if orig.outbox_dir else None
    where = os.path.relpath(first, t.outbox) if first else "(unknown)"
    doc = manifest.build_manifest(
        status="delivered",
        source={
            "name": job.name,
            "size": job.size,
            "sha256": await _source_sha256(orig) or orig.sha256,
        },
        rule=job.rule,
        project_id=orig.project_id,
        clips=[],
        skipped=[
            {
                "what": "duplicate",
                "reason": f"same content as {orig.rel_path}, already delivered to {where}",
            }
        ],
        error=None,
        completed_at=_now_iso(p),
        job_id=job.id,
        duplicate_of={"job_id": orig.id, "source": orig.rel_path, "outbox_folder": where},
        preset=manifest_preset(job.preset_dict),
    )
    manifest.write_manifest(folder, doc)
    disposed = _dispose(p, job, t, kind="done")
    p.advance(
        job,
        Stage.DELIVERED,
        kind="delivered_duplicate",
        detail={"of": orig.id},
        disposed_to=disposed,
        outbox_dir=str(folder),
        project_id=orig.project_id,
    )
    p.job_log(job).info(
        "%s is a duplicate of %s (job %s); pointed to %s", job.name, orig.rel_path, orig.id, where
    )

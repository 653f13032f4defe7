"""Files from a job's outbox folder, for the dashboard: no request path reaches the file system
unchecked. A name is one plain component or a relative path inside the folder; the resolved file
must lie inside the job's recorded outbox folder, which must itself lie inside the outbox the
job's inbox delivers to, and be a regular file of a kind the page links to."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from watchd.ledger.db import JobRow

# What the page shows or links to: thumbnails, clips, captions, the manifest, exports.
SERVED_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".mp4",
        ".srt",
        ".json",
        ".txt",
        ".xml",
        ".fcpxml",
        ".prproj",
        ".drp",
        ".zip",
        ".aep",
        ".edl",
    }
)


def outbox_root(job: JobRow) -> Path | None:
    """The outbox the job delivers to, as recorded with its preset."""
    delivery = job.preset_dict.get("_delivery")
    if isinstance(delivery, dict) and isinstance(delivery.get("outbox"), str):
        return Path(delivery["outbox"])
    return None


def _clean(name: str) -> PurePosixPath | None:
    if not name or "\x00" in name or "\\" in name:
        return None
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
        return None
    return rel


def job_file(job: JobRow, name: str) -> Path | None:
    """The file ``name`` of the job's outbox folder, or None when it may not be served."""
    rel = _clean(name)
    root = outbox_root(job)
    if rel is None or root is None or not job.outbox_dir:
        return None
    if rel.suffix.lower() not in SERVED_SUFFIXES:
        return None
    try:
        real_root = root.resolve(strict=True)
        folder = Path(job.outbox_dir).resolve(strict=True)
        target = (folder / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not folder.is_relative_to(real_root) or not target.is_relative_to(folder):
        return None
    try:
        if not os.path.isfile(target):
            return None
    except OSError:
        return None
    return target

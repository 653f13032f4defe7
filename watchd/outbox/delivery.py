"""Where results go, how a failure is told, and what becomes of the source file.

The order is the caller's duty and the same after any crash: choose (reserve) the folder, put
every file in place, write the manifest last, :func:`verify_delivery`, and only then
:func:`dispose_source`. A source is never moved or deleted on the strength of an unverified
delivery.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from watchd.outbox.atomic import atomic_write_text, copy_into_place, fsync_dir, replace_with_retry
from watchd.outbox.manifest import MANIFEST_NAME, ManifestError, path_problems, read_manifest
from watchd.outbox.names import numbered, sanitize_component
from watchd.redact import redact

log = logging.getLogger(__name__)

FAILED_TXT = "FAILED.txt"
DONE_DIR = "_done"
FAILED_DIR = "_failed"
SIDECAR_SUFFIX = ".toml"
MAX_NUMBER = 10_000
"""Collision numbers tried before giving up (a folder with this many copies is a loop)."""

Mode = Literal["move", "keep", "delete"]
Kind = Literal["done", "failed"]


def _rel_parts(rel: PurePosixPath | str, what: str) -> list[str]:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"{what} must be a relative path inside its root: {str(rel)!r}")
    return [part for part in p.parts if part != "."]


def choose_outbox_folder(
    outbox_root: Path,
    rel_folder: PurePosixPath,
    stem: str,
    *,
    unclaimed: Callable[[Path], bool] | None = None,
) -> Path:
    """Create and return ``<outbox>/<rel_folder>/<stem>/``, or ``<stem> (2)/``, … when taken.

    Every component is sanitised (the outbox may be an SMB share). The exclusive ``mkdir`` is
    the reservation: two jobs with the same name never get the same folder. A folder that
    exists but is empty and for which ``unclaimed`` says no one has it recorded is a
    reservation left by a crash before it was recorded: it is taken again rather than left
    empty beside a ``<stem> (2)/``.
    """
    parts = _rel_parts(rel_folder, "rel_folder")
    parent = outbox_root.joinpath(*(sanitize_component(p) for p in parts))
    parent.mkdir(parents=True, exist_ok=True)
    base = sanitize_component(stem)
    for n in range(1, MAX_NUMBER + 1):
        folder = parent / numbered(base, n, ext="")
        try:
            folder.mkdir()
        except FileExistsError:
            if unclaimed is not None and _empty_dir(folder) and unclaimed(folder):
                return folder
            continue
        fsync_dir(parent)
        return folder
    raise FileExistsError(errno.EEXIST, f"no free folder name for {base!r}", str(parent))


def _empty_dir(path: Path) -> bool:
    if path.is_symlink() or not path.is_dir():
        return False
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def _default_hint(error_code: str, job_id: str) -> str:
    if "billing" in error_code.lower() or "minutes" in error_code.lower():
        return f"Top up processing minutes (or the plan), then run `watchd retry {job_id}`."
    return (
        "Fix the file and drop it into the inbox again, or run "
        f"`watchd retry {job_id}` once the cause is gone."
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line if line.strip() else "" for line in text.strip().splitlines())


def failed_text(
    *,
    source_name: str,
    error_code: str,
    message: str,
    hint: str | None,
    job_id: str,
    log_hint: str | None = None,
) -> str:
    """The text of ``FAILED.txt``: what went wrong and what to do, for a person."""
    log_hint = log_hint or f"journalctl -u carmic-watchd JOB_ID={job_id}"
    return "\n".join(
        [
            f"FAILED: {source_name}",
            "",
            "carmic-watchd could not turn this video into clips.",
            "",
            "What went wrong:",
            _indent(redact(message) or "(no details)"),
            f"  (error code: {error_code})",
            "",
            "What to do:",
            _indent(redact(hint) if hint else _default_hint(error_code, job_id)),
            "",
            "Details:",
            f"  job:    {job_id}",
            f"  status: watchd status   (the row with id {job_id})",
            f"  log:    {log_hint}",
            "",
        ]
    )


def failed_txt_beside(source: Path) -> Path:
    """``_failed/<rule>/ep12.mp4`` -> ``_failed/<rule>/ep12.mp4.FAILED.txt``."""
    return source.with_name(source.name + ".FAILED.txt")


def write_failed_txt_beside(source: Path, **told: Any) -> Path:
    """The ``FAILED.txt`` text beside a source moved to ``_failed/<rule>/``, as
    ``<name>.FAILED.txt`` (the arguments are :func:`write_failed_txt`'s)."""
    path = failed_txt_beside(source)
    atomic_write_text(path, failed_text(**told))
    return path


def write_failed_txt(
    folder: Path,
    *,
    source_name: str,
    error_code: str,
    message: str,
    hint: str | None = None,
    job_id: str,
    log_hint: str | None = None,
) -> Path:
    """Write ``FAILED.txt`` into ``folder`` (atomically) and return its path; secrets in the
    message or hint are redacted."""
    path = folder / FAILED_TXT
    atomic_write_text(
        path,
        failed_text(
            source_name=source_name,
            error_code=error_code,
            message=message,
            hint=hint,
            job_id=job_id,
            log_hint=log_hint,
        ),
    )
    return path


# A placeholder is an empty file with no permission bits: nobody else makes those, so one left by
# a daemon killed between the reservation and the rename can be told from a real file.
PLACEHOLDER_MODE = 0o000
_PROCESS_STARTED = time.time()


def _reserve(path: Path) -> bool:
    """Create an empty placeholder at ``path`` unless something is there (any case, on shares
    that ignore it); the file that is moved in replaces it. A placeholder left by an earlier
    process (killed before its rename) is taken over instead of numbering around it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PLACEHOLDER_MODE)
    except FileExistsError:
        return _stale_placeholder(path)
    os.close(fd)
    return True


def _stale_placeholder(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    # Made before this process started: no disposal of ours is still about to rename onto it.
    return (
        stat.S_ISREG(st.st_mode)
        and stat.S_IMODE(st.st_mode) == PLACEHOLDER_MODE
        and st.st_size == 0
        and st.st_mtime < _PROCESS_STARTED
    )


def _move(src: Path, dst: Path) -> None:
    try:
        replace_with_retry(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        # Another filesystem: the copy is complete and on disk before the original goes.
        copy_into_place(src, dst, keep_metadata=True)
        src.unlink()


def _reserve_pair(folder: Path, name: str, with_sidecar: bool) -> tuple[Path, Path | None]:
    for n in range(1, MAX_NUMBER + 1):
        dst = folder / numbered(name, n)
        if not _reserve(dst):
            continue
        if not with_sidecar:
            return dst, None
        side = dst.with_name(dst.name + SIDECAR_SUFFIX)
        if _reserve(side):
            return dst, side
        dst.unlink()
    raise FileExistsError(errno.EEXIST, f"no free name for {name!r}", str(folder))


def sidecar_of(src: Path) -> Path:
    """The per-file settings beside a video: ``ep12.mp4`` → ``ep12.mp4.toml``."""
    return src.with_name(src.name + SIDECAR_SUFFIX)


def dispose_source(
    src: Path, inbox_root: Path, rule: str, mode: Mode | str, kind: Kind | str
) -> Path | None:
    """Do with the source file what the inbox's policy says, once its delivery is verified.

    ``move``: to ``<inbox>/_done/<rule>/<name>`` (``_failed`` for ``kind="failed"``), numbered
    ``name (2).ext`` on collision, its sidecar ``<name>.toml`` along with it; across filesystems
    by copy + fsync, then unlink. Returns the new path. A ``src`` already in that folder was
    moved there by this same disposal (repeated after a crash before the job was marked done):
    it stays where it is and is returned. ``delete``: unlinks the file and its sidecar; returns
    None. ``keep``: returns ``src``.
    """
    if kind not in ("done", "failed"):
        raise ValueError(f"kind must be 'done' or 'failed', not {kind!r}")
    if mode == "keep":
        return src
    sidecar = sidecar_of(src)
    if mode == "delete":
        src.unlink()
        if _regular(sidecar) is not None:
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
        fsync_dir(src.parent)
        return None
    if mode != "move":
        raise ValueError(f"mode must be 'move', 'keep' or 'delete', not {mode!r}")
    if not src.is_file():
        raise FileNotFoundError(errno.ENOENT, "source file is gone", str(src))
    parts = _rel_parts(rule, "rule")
    dest_dir = inbox_root.joinpath(DONE_DIR if kind == "done" else FAILED_DIR, *parts)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if src.parent.samefile(dest_dir):
        # Moving it again would only rename it to "name (2).ext" in the same folder.
        return src
    # By lstat: a link is no sidecar, and a name too long for one (ENAMETOOLONG) has none.
    has_sidecar = _regular(sidecar) is not None
    dst, side_dst = _reserve_pair(dest_dir, src.name, has_sidecar)
    try:
        _move(src, dst)
    except BaseException:
        for placeholder in (dst, side_dst):
            if placeholder is not None:
                with contextlib.suppress(OSError):
                    placeholder.unlink()
        raise
    if side_dst is not None:
        try:
            _move(sidecar, side_dst)
        except OSError as e:
            # The video is disposed of already; a sidecar left behind is harmless.
            log.warning("could not move %s to %s: %s", sidecar, side_dst, e)
            with contextlib.suppress(OSError):
                side_dst.unlink()
    fsync_dir(dest_dir)
    fsync_dir(src.parent)
    return dst


def find_disposed(
    name: str, inbox_root: Path, rule: str, kind: Kind | str, *, inode: int, dev: int
) -> Path | None:
    """Where :func:`dispose_source` moved a source called ``name`` that was the file
    ``(dev, inode)`` (a rename keeps both), or None: the daemon may have been stopped after
    the move and before it wrote the new path down. Looks at ``name``, ``name (2)``, … up to
    the first free one."""
    folder = inbox_root.joinpath(
        DONE_DIR if kind == "done" else FAILED_DIR, *_rel_parts(rule, "rule")
    )
    for n in range(1, MAX_NUMBER + 1):
        candidate = folder / numbered(name, n)
        try:
            st = candidate.lstat()
        except FileNotFoundError:
            return None
        except OSError:
            continue
        if st.st_ino == inode and st.st_dev == dev and stat.S_ISREG(st.st_mode):
            return candidate
    return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _check_clip(folder: Path, clip: Mapping[str, Any], problems: list[str]) -> None:
    label = clip.get("file") or clip.get("title") or clip.get("id")
    if rel := clip.get("file"):
        st = _regular(folder / rel)
        if st is None:
            problems.append(f"{rel}: missing")
        elif isinstance(clip.get("size"), int) and st.st_size != clip["size"]:
            problems.append(f"{rel}: {st.st_size} bytes, expected {clip['size']}")
        elif clip.get("sha256") and _sha256(folder / rel) != clip["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest's")
    for key in ("captions", "thumbnail"):
        if rel := clip.get(key):
            st = _regular(folder / rel)
            if st is None:
                problems.append(f"{rel}: missing ({key} of {label})")
            elif st.st_size == 0:
                problems.append(f"{rel}: empty ({key} of {label})")
    for exp in clip.get("exports") or []:
        rel = exp.get("path")
        target = folder / rel
        if not target.is_dir():
            problems.append(f"{rel}: missing (export {exp.get('format')} of {label})")
        elif not any(p.is_file() for p in target.rglob("*")):
            problems.append(f"{rel}: empty (export {exp.get('format')} of {label})")


def verify_delivery(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    """What is wrong with the delivery in ``folder`` against ``manifest``: the manifest missing
    or different on disk, unsafe paths, missing or empty files, wrong sizes, wrong sha256.
    An empty list means the source may be disposed of."""
    problems = path_problems(manifest, folder)
    if problems:
        return problems  # never open a path that leads out of the folder
    try:
        on_disk = read_manifest(folder)
    except ManifestError as e:
        on_disk = None
        problems.append(str(e))
    else:
        if on_disk is None:
            problems.append(f"{MANIFEST_NAME}: missing")
        elif on_disk != json.loads(json.dumps(manifest)):
            problems.append(f"{MANIFEST_NAME}: differs from the manifest written")
    for clip in manifest.get("clips") or []:
        if isinstance(clip, Mapping):
            _check_clip(folder, clip, problems)
    return problems

"""``manifest.json``: the record of one delivery, and the sign that it is complete.

Its shape is documented in docs/outbox.md, its JSON Schema is docs/manifest.schema.json; extra
top-level keys are ``watchd_version``, ``job_id``, ``duplicate_of`` and ``preset`` (the resolved
preset the job was given). It is written last, atomically: a reader that sees it may trust every
file it names. Every path in it is relative to its folder and stays inside it.
"""

from __future__ import annotations

import json
import math
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import watchd
from watchd.outbox.atomic import atomic_write_json

MANIFEST_NAME = "manifest.json"
STATUSES = ("delivered", "partial", "failed")
TOP_KEYS = (
    "status",
    "source",
    "rule",
    "project_id",
    "clips",
    "skipped",
    "error",
    "completed_at",
)
CLIP_KEYS = (
    "id",
    "title",
    "start_time",
    "end_time",
    "virality_score",
    "reasoning",
    "file",
    "captions",
    "sha256",
    "exports",
)
_DRIVE = re.compile(r"^[A-Za-z]:")


class ManifestError(ValueError):
    """A manifest that does not have the documented shape, or names a path outside its folder."""


@dataclass(frozen=True)
class SourceInfo:
    name: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class ExportEntry:
    format: str
    path: str
    """Relative folder of the unpacked bundle, ending in ``/``."""


@dataclass(frozen=True)
class ClipEntry:
    id: str
    title: str
    start_time: float
    end_time: float
    virality_score: float
    reasoning: str = ""
    file: str | None = None
    captions: str | None = None
    sha256: str | None = None
    exports: Sequence[ExportEntry] = field(default_factory=tuple)


@dataclass(frozen=True)
class Skipped:
    what: str
    reason: str


@dataclass(frozen=True)
class ErrorInfo:
    code: str
    message: str


def _plain(obj: Any) -> Any:
    """Dataclasses and mappings as plain dicts (JSON-ready), sequences as lists."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _number(v: Any) -> Any:
    # 87.0 reads as 87, as docs/outbox.md shows it; non-finite numbers are not JSON.
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        if v.is_integer():
            return int(v)
    return v


def _ordered(d: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """``d`` with ``keys`` first, in order (missing ones as None), then its other keys."""
    out = {k: d.get(k) for k in keys}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def _clip(entry: Any) -> dict[str, Any]:
    d = _ordered(_plain(entry), CLIP_KEYS)
    d["virality_score"] = _number(d["virality_score"])
    for k in ("start_time", "end_time"):
        if isinstance(d[k], float) and not math.isfinite(d[k]):
            d[k] = None
    d["exports"] = [_ordered(e, ("format", "path")) for e in d["exports"] or []]
    return d


def _timestamp(when: datetime | str) -> str:
    if isinstance(when, str):
        return when
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # naive times in this code base are UTC
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_manifest(
    *,
    status: str,
    source: SourceInfo | Mapping[str, Any],
    rule: str,
    project_id: str | None,
    clips: Sequence[ClipEntry | Mapping[str, Any]],
    skipped: Sequence[Skipped | Mapping[str, Any]],
    error: ErrorInfo | Mapping[str, Any] | None,
    completed_at: datetime | str,
    duplicate_of: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    preset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest document in its documented shape and key order (docs/outbox.md).

    Entries may be the dataclasses of this module or plain mappings (extra keys of a clip, such
    as ``thumbnail``, are kept after the documented). ``completed_at`` is a datetime (UTC) or an
    ISO string as it should appear. Raises :class:`ManifestError` for an unknown status, a
    ``failed`` manifest without an error, or a path that leaves the folder.
    """
    if status not in STATUSES:
        raise ManifestError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    err = _plain(error) if error is not None else None
    if status == "failed" and not err:
        raise ManifestError("a failed manifest needs an error")
    doc: dict[str, Any] = {
        "status": status,
        "source": _ordered(_plain(source), ("name", "size", "sha256")),
        "rule": rule,
        "project_id": project_id,
        "clips": [_clip(c) for c in clips],
        "skipped": [_ordered(_plain(s), ("what", "reason")) for s in skipped],
        "error": _ordered(err, ("code", "message")) if err else None,
        "completed_at": _timestamp(completed_at),
        "watchd_version": watchd.__version__,
    }
    if job_id is not None:
        doc["job_id"] = job_id
    if duplicate_of is not None:
        doc["duplicate_of"] = _plain(duplicate_of)
    if preset is not None:
        doc["preset"] = _plain(preset)
    if problems := path_problems(doc):
        raise ManifestError("; ".join(problems))
    return doc


def manifest_paths(manifest: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Every path the manifest names, as ``(where, path)``: clip files, captions, thumbnails
    and export folders."""
    for i, clip in enumerate(manifest.get("clips") or []):
        if not isinstance(clip, Mapping):
            continue
        for key in ("file", "captions", "thumbnail"):
            if clip.get(key) is not None:
                yield f"clips[{i}].{key}", clip[key]
        for j, exp in enumerate(clip.get("exports") or []):
            if isinstance(exp, Mapping):
                yield f"clips[{i}].exports[{j}].path", exp.get("path")


def _path_problem(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return "not a path"
    if "\\" in path or "\x00" in path:
        return "contains a backslash or NUL"
    if path.startswith("/") or _DRIVE.match(path):
        return "absolute"
    if ".." in path.split("/"):
        return "leaves the folder"
    return None


def path_problems(manifest: Mapping[str, Any], folder: Path | None = None) -> list[str]:
    """What is wrong with the manifest's paths: each must be relative, use ``/``, never ``..``,
    and (with ``folder``) resolve inside ``folder`` even through links on disk."""
    problems = []
    root = folder.resolve() if folder is not None else None
    for where, path in manifest_paths(manifest):
        why = _path_problem(path)
        if why is None and root is not None and _leads_out(root, path):
            why = "leads outside the folder"
        if why:
            problems.append(f"{where} {path!r}: {why}")
    return problems


def _leads_out(root: Path, path: str) -> bool:
    """Whether ``path`` (relative, no ``..``: checked before) ends outside ``root`` on disk. Only
    a link can take it out, so the whole path is resolved only when one of its components
    inside ``root`` is a link (an lstat per component, not per component from ``/``)."""
    here = root
    for part in PurePosixPath(path).parts:
        here = here / part
        if here.is_symlink():
            target = Path(posixpath.normpath(str(root / path)))
            return not target.resolve().is_relative_to(root)
    return False


def validate_paths(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ManifestError` unless every path in ``manifest`` is relative and stays
    inside ``folder`` (on disk too: a link inside the folder may not lead out)."""
    if problems := path_problems(manifest, folder):
        raise ManifestError("; ".join(problems))


def write_manifest(folder: Path, manifest: Mapping[str, Any]) -> Path:
    """Write ``manifest.json`` into ``folder`` atomically; call it after every other file is in
    place. Refuses a manifest with a path outside the folder."""
    validate_paths(folder, manifest)
    path = folder / MANIFEST_NAME
    atomic_write_json(path, dict(manifest))
    return path


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest in ``folder``, or None when there is none (the delivery is not complete).
    Raises :class:`ManifestError` for one that is not a JSON object."""
    try:
        text = (folder / MANIFEST_NAME).read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ManifestError(f"{folder / MANIFEST_NAME}: not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ManifestError(f"{folder / MANIFEST_NAME}: not a JSON object")
    return doc

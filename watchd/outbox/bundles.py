"""Safe extraction of NLE export bundles (zip files from the API's storage).

A bundle is untrusted input that lands on a share other people use. Nothing in it may write
outside its folder or plant anything but plain files: members with ``..``, absolute paths,
drive letters or backslash tricks are skipped, as are links, devices and encrypted members;
every path component goes through :func:`watchd.outbox.names.sanitize_component`. Declared and
actual sizes are capped (zip bombs). Each file appears under its final name only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from watchd.outbox.atomic import fsync_dir, write_via_tmp
from watchd.outbox.names import sanitize_component

log = logging.getLogger(__name__)

GiB = 1 << 30
RATIO_FLOOR = 1 << 20
"""Compression ratios are judged only past this many uncompressed bytes: a small file of
repeated text compresses far better than any limit and harms nobody."""

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class BundleError(Exception):
    """The bundle cannot be used: not a zip, corrupt, or over a cap. The message says which."""


@dataclass(frozen=True)
class SkippedMember:
    name: str
    """The member's name as the zip gives it."""
    reason: str


@dataclass(frozen=True)
class Extraction:
    """What :func:`extract_bundle` did: ``written`` holds the files' POSIX paths relative to the
    destination (sanitised names), ``skipped`` the members left out and why."""

    written: list[str] = field(default_factory=list)
    skipped: list[SkippedMember] = field(default_factory=list)


def _kind(info: zipfile.ZipInfo) -> str:
    """``"file"``, ``"dir"`` or the reason the member is refused."""
    if info.flag_bits & 0x1:
        return "encrypted"
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        return "symbolic link"
    if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "device or special file"
    if fmt == stat.S_IFDIR or info.filename.endswith(("/", "\\")):
        return "dir"
    return "file"


def member_parts(name: str) -> list[str] | str:
    """The sanitised path components a member name maps to, or why it is refused."""
    raw = name.replace("\\", "/")  # zips made on Windows, and tricks hiding ".." behind "\\"
    if raw.startswith("/"):
        return "absolute path"
    if _DRIVE.match(raw):
        return "drive letter"
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        return "parent folder reference (..)"
    if not parts:
        return "empty name"
    return [sanitize_component(p) for p in parts]


@dataclass
class _Plan:
    files: list[tuple[zipfile.ZipInfo, list[str]]] = field(default_factory=list)
    dirs: list[list[str]] = field(default_factory=list)
    skipped: list[SkippedMember] = field(default_factory=list)


def _plan(infos: list[zipfile.ZipInfo]) -> _Plan:
    plan = _Plan()
    file_keys: set[str] = set()
    dir_keys: set[str] = set()

    def skip(info: zipfile.ZipInfo, reason: str) -> None:
        plan.skipped.append(SkippedMember(info.filename, reason))

    for info in infos:
        kind = _kind(info)
        parts = member_parts(info.filename)
        if isinstance(parts, str):
            skip(info, parts)
            continue
        if kind not in ("file", "dir"):
            skip(info, kind)
            continue
        # Shares compare names without case: "A.xml" and "a.xml" would land on one file.
        prefixes = ["/".join(parts[:i]).casefold() for i in range(1, len(parts))]
        key = "/".join(parts).casefold()
        if any(p in file_keys for p in prefixes) or (kind == "dir" and key in file_keys):
            skip(info, "a file of the bundle is in the way")
            continue
        if kind == "dir":
            dir_keys.update([*prefixes, key])
            plan.dirs.append(parts)
            continue
        if key in file_keys:
            skip(info, "duplicate name")
            continue
        if key in dir_keys:
            skip(info, "a folder of the bundle is in the way")
            continue
        file_keys.add(key)
        dir_keys.update(prefixes)
        plan.files.append((info, parts))
    return plan


def _check_caps(
    plan: _Plan, n_members: int, *, max_total_bytes: int, max_files: int, max_ratio: float
) -> None:
    if n_members > max_files:
        raise BundleError(f"bundle has {n_members} members, more than the cap of {max_files}")
    total = sum(i.file_size for i, _ in plan.files)
    packed = sum(i.compress_size for i, _ in plan.files)
    if total > max_total_bytes:
        raise BundleError(
            f"bundle would unpack to {total} bytes, more than the cap of {max_total_bytes}"
        )
    for info, _ in plan.files:
        if info.file_size > RATIO_FLOOR and info.file_size > max_ratio * max(1, info.compress_size):
            raise BundleError(
                f"member {info.filename!r} expands {info.file_size // max(1, info.compress_size)}"
                f" times, more than the cap of {max_ratio} (a zip bomb?)"
            )
    if total > RATIO_FLOOR and total > max_ratio * max(1, packed):
        raise BundleError(f"bundle expands more than {max_ratio} times (a zip bomb?)")


class _Writer:
    """Writes planned members under ``dest``, remembering what it made so a failure can undo it."""

    def __init__(self, zf: zipfile.ZipFile, dest: Path, max_total_bytes: int) -> None:
        self.zf = zf
        self.dest = dest
        self.root = dest.resolve()
        self.budget = max_total_bytes
        self.files: list[Path] = []
        self.made_dirs: list[Path] = []
        self.touched: set[Path] = set()

    def mkdirs(self, path: Path) -> str | None:
        """Create ``path`` level by level below ``dest``; the reason if something is in the way."""
        missing: list[Path] = []
        p = path
        while p != self.dest and not p.exists() and not p.is_symlink():
            missing.append(p)
            p = p.parent
        if p != self.dest and (p.is_symlink() or not p.is_dir()):
            return "a file or link is in the way"
        for d in reversed(missing):
            d.mkdir()
            self.made_dirs.append(d)
            self.touched.add(d.parent)
        for d in self._between(path):
            if d.is_symlink() or not d.is_dir():
                return "a file or link is in the way"
        return None

    def _between(self, path: Path) -> Iterator[Path]:
        while path != self.dest:
            yield path
            path = path.parent

    def write(self, info: zipfile.ZipInfo, target: Path) -> None:
        declared = info.file_size

        def fill(out: BinaryIO) -> None:
            written = 0
            with self.zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    self.budget -= len(chunk)
                    if written > declared or self.budget < 0:
                        raise BundleError(
                            f"member {info.filename!r} holds more than its declared size"
                        )
                    out.write(chunk)

        # The folder must not have been swapped for a link to somewhere else meanwhile.
        if not target.parent.resolve().is_relative_to(self.root):
            raise BundleError(f"member {info.filename!r} would land outside the bundle folder")
        write_via_tmp(target, fill, sync_dir=False)
        self.files.append(target)
        self.touched.add(target.parent)

    def sync(self) -> None:
        for d in sorted(self.touched, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(d)

    def undo(self) -> None:
        for f in self.files:
            with contextlib.suppress(OSError):
                f.unlink()
        for d in reversed(self.made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: never remove what was there before


def _open(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as e:
        raise BundleError(f"not a usable zip archive: {e}") from e


def extract_bundle(
    zip_path: Path,
    dest_dir: Path,
    *,
    max_total_bytes: int = 4 * GiB,
    max_files: int = 10_000,
    max_ratio: float = 200,
) -> Extraction:
    """Unpack the bundle ``zip_path`` into ``dest_dir`` (created with its parents).

    Only regular files and folders are written, each file through a temporary name; skipped
    members are logged and returned. Raises :class:`BundleError` for a file that is not a zip,
    a corrupt one, or one over ``max_files`` members, ``max_total_bytes`` unpacked, or
    ``max_ratio`` compression, or one without a single usable file; whatever this call had
    written is then removed again.
    """
    with _open(zip_path) as zf:
        infos = zf.infolist()
        plan = _plan(infos)
        _check_caps(
            plan,
            len(infos),
            max_total_bytes=max_total_bytes,
            max_files=max_files,
            max_ratio=max_ratio,
        )
        result = Extraction(skipped=plan.skipped)
        made_dest: list[Path] = []
        d = dest_dir
        while not d.exists():
            made_dest.append(d)
            d = d.parent
        dest_dir.mkdir(parents=True, exist_ok=True)
        w = _Writer(zf, dest_dir, max_total_bytes)
        w.made_dirs[:0] = reversed(made_dest)
        try:
            for parts in plan.dirs:
                if reason := w.mkdirs(dest_dir.joinpath(*parts)):
                    result.skipped.append(SkippedMember("/".join(parts) + "/", reason))
            for info, parts in plan.files:
                target = dest_dir.joinpath(*parts)
                reason = w.mkdirs(target.parent)
                if reason is None and target.is_dir() and not target.is_symlink():
                    reason = "a folder is in the way"
                if reason:
                    result.skipped.append(SkippedMember(info.filename, reason))
                    continue
                try:
                    w.write(info, target)
                except NotImplementedError as e:  # a compression method zipfile lacks
                    result.skipped.append(SkippedMember(info.filename, str(e)))
                    continue
                result.written.append("/".join(parts))
            if not result.written:
                why = "; ".join(f"{s.name!r}: {s.reason}" for s in result.skipped[:3])
                raise BundleError("the bundle holds no usable file" + (f" ({why})" if why else ""))
            w.sync()
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            w.undo()
            raise BundleError(f"corrupt bundle: {e}") from e
        except BaseException:
            w.undo()
            raise
    for s in result.skipped:
        log.warning("bundle %s: skipped %r: %s", zip_path.name, s.name, s.reason)
    return result

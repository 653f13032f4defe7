"""The emulator's video work, on top of :mod:`watchd.media`. Every function here blocks:
callers on the event loop run them in the emulator's executor, never inline.

Each producer degrades instead of failing: a source that cannot be cut gives a synthetic clip,
a frame that cannot be read gives a placeholder thumbnail. What the emulator serves must always
be a real, playable file.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import av.error

from watchd import media

__all__ = ["Probe", "copy_file", "preview", "probe", "render", "thumbnail"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Probe:
    """What a look at an upload found."""

    decodable: bool
    duration: float | None
    reason: str = ""


def probe(path: Path) -> Probe:
    """Whether ``path`` holds a decodable video (one frame decoded), and its duration."""
    try:
        with av.open(str(path), "r") as container:
            streams = [s for s in container.streams.video]
            if not streams:
                return Probe(False, None, "no video stream")
            duration = container.duration / av.time_base if container.duration else None
            for packet in container.demux(streams[0]):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue
                if frames:
                    return Probe(True, duration)
            return Probe(False, duration, "no decodable frame")
    except (av.error.FFmpegError, OSError) as e:
        return Probe(False, None, type(e).__name__)


def render(src: Path | None, dst: Path, start: float, end: float, label: str) -> None:
    """The final 9:16 render of ``[start, end)`` of ``src`` (synthetic when there is none)."""
    if src is not None:
        for vertical in (True, False):
            try:
                media.cut_clip(src, dst, start, end, vertical=vertical)
                return
            except (media.MediaError, ValueError, av.error.FFmpegError) as e:
                log.debug("cut of %s failed (vertical=%s): %s", src.name, vertical, e)
    media.synthetic_clip(dst, max(0.5, end - start), label=label)


def preview(src: Path | None, dst: Path, start: float, end: float, label: str) -> None:
    """The span as it is in the source (a remux where possible): previews and NLE media."""
    if src is not None:
        try:
            media.cut_clip(src, dst, start, end)
            return
        except (media.MediaError, ValueError, av.error.FFmpegError) as e:
            log.debug("cut of %s failed: %s", src.name, e)
    media.synthetic_clip(dst, max(0.5, end - start), label=label)


def thumbnail(src: Path | None, dst: Path, at: float) -> None:
    """A JPEG of the frame at ``at`` (a placeholder when the source has none)."""
    media.thumbnail_jpeg(src, dst, at)


def copy_file(src: Path | None, dst: Path, fallback_seconds: float, label: str) -> None:
    """``src`` again under another name (the proxy: a hard link where the filesystem allows),
    or a synthetic video when the source was not stored."""
    if src is None or not src.exists():
        media.synthetic_clip(dst, fallback_seconds, label=label)
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)

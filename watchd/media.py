"""PyAV helpers: sample video generation, clip cutting, JPEG thumbnails, inspection for tests.

Every function here is **blocking and CPU-bound** (encoding, decoding, file I/O). Callers on an
event loop (the emulator's handlers, the pipeline) must run them in a thread, e.g.
``await asyncio.to_thread(cut_clip, src, dst, 1.0, 9.5)``, or they stall every other task for
the length of an encode. PyAV releases the GIL while ffmpeg works, so such threads do run in
parallel.

Outputs are written to a hidden temporary name beside the destination and renamed into place,
so a reader (a watch folder, an HTTP client) never sees a half-written video under its final name.

Pictures are drawn without numpy: a frame is moving colour bars plus a text box (a frame counter
and an optional label) in a 5x7 bitmap font, assembled row by row from ``bytes`` slices straight
into the YUV planes. Rows that do not change are shared, so a 640x360 frame costs about 0.15 ms
of Python; the encoder does the rest (a 20 s 640x360 H.264 sample takes about 1 s on 2 cores).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from array import array
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import av.filter
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

__all__ = [
    "MediaError",
    "cut_clip",
    "is_playable",
    "make_sample_video",
    "media_info",
    "primary_video_stream",
    "synthetic_clip",
    "thumbnail_jpeg",
]

log = logging.getLogger(__name__)

AUDIO_RATE = 48_000
# 480 Hz completes exactly 480 cycles a second at 48 kHz, so one second of samples loops seamlessly.
_TONE_HZ = 480
_TICK_HZ = 960

# Codecs the MP4 muxer holds and common players play; anything else is re-encoded by cut_clip.
_MP4_VIDEO_CODECS = frozenset({"h264", "hevc", "mpeg4", "av1"})
_MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
# AAC's sampling frequency table; other input rates are resampled to 48 kHz when re-encoding.
_AAC_RATES = frozenset(
    {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000}
)
_MPEG_FPS = frozenset({24, 25, 30, 50, 60})
_THUMB_MAX_SIDE = 1280
_VERTICAL_MAX_HEIGHT = 1280


class MediaError(Exception):
    """A source that cannot be read or decoded, or an output that cannot be produced."""


# ---- output recipes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """How to write one container: muxer, codecs and their options."""

    format: str
    video: str
    audio: str
    video_options: Mapping[str, str] = field(default_factory=dict)
    video_bit_rate: int = 0  # 0: the codec's own rate control (x264's CRF)


def _x264_options(fps: int) -> dict[str, str]:
    # A keyframe exactly every second, never more often: clips are cut by remux at keyframes.
    return {
        "preset": "superfast",
        "crf": "26",
        "x264-params": f"keyint={fps}:min-keyint={fps}:scenecut=0",
    }


def _recipe_for(path: Path, fps: int) -> _Recipe:
    suffix = path.suffix.lower()
    h264 = _x264_options(fps)
    vpx = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    recipes = {
        ".mp4": _Recipe("mp4", "libx264", "aac", h264),
        ".m4v": _Recipe("mp4", "libx264", "aac", h264),
        ".mov": _Recipe("mov", "libx264", "aac", h264),
        ".mkv": _Recipe("matroska", "libx264", "aac", h264),
        ".flv": _Recipe("flv", "libx264", "aac", h264),
        ".ts": _Recipe("mpegts", "libx264", "aac", h264),
        ".webm": _Recipe("webm", "libvpx", "libopus", vpx, video_bit_rate=1_000_000),
        # Not MP3: LAME's priming delay gives its first packet a negative time, and the AVI
        # muxer's shift for that moves every video frame after the first by one frame.
        ".avi": _Recipe("avi", "mpeg4", "mp2", {}, video_bit_rate=1_500_000),
        ".mpg": _Recipe("mpeg", "mpeg2video", "mp2", {}, video_bit_rate=2_000_000),
        ".mpeg": _Recipe("mpeg", "mpeg2video", "mp2", {}, video_bit_rate=2_000_000),
    }
    if suffix not in recipes:
        raise ValueError(f"cannot write {path.name!r}: unknown video suffix {suffix or '(none)'!r}")
    recipe = recipes[suffix]
    if recipe.format == "mpeg" and fps not in _MPEG_FPS:
        raise ValueError(f"MPEG-2 needs a standard frame rate {sorted(_MPEG_FPS)}, not {fps}")
    return recipe


@contextmanager
def _atomic_output(dst: Path) -> Iterator[Path]:
    """A hidden temporary path beside ``dst``, renamed onto it only when the block succeeds."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A leading dot and a .tmp suffix: watch folders (ours included) ignore the name.
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- drawing -------------------------------------------------------------------------------------

# A 5x7 bitmap font: enough for frame counters, timecodes and short labels (upper case).
_GLYPHS: dict[str, tuple[str, ...]] = {
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    " ": (".....",) * 7,
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
    "#": (".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "!": ("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
    "'": ("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
}
_GLYPH_W, _GLYPH_H = 5, 7
_CELL_W = _GLYPH_W + 1  # one column of spacing after each glyph

_FG_Y, _BG_Y = 235, 16
_NEUTRAL = 128
# BT.601 limited-range YUV of the classic eight bars: white, yellow, cyan, green, magenta, red,
# blue, black.
_BARS = (
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
)


def _text_rows(text: str, scale: int) -> list[bytes]:
    """Luma rows (foreground on the box's background) of one line of text at ``scale``."""
    on = bytes([_FG_Y]) * scale
    off = bytes([_BG_Y]) * scale
    rows: list[bytes] = []
    for r in range(_GLYPH_H):
        cells = []
        for ch in text.upper():
            glyph = _GLYPHS.get(ch, _GLYPHS["?"])
            cells.append(b"".join(on if px == "#" else off for px in glyph[r]) + off)
        row = b"".join(cells)
        rows.extend([row] * scale)
    return rows


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    words = text.split()
    lines: list[str] = []
    current = ""
    for word in words:
        while len(word) > width:  # a word longer than a line is cut hard
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines[:max_lines]


def _even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


class _Painter:
    """Draws frame ``i`` of a synthetic video: bars moving left, a text box, a progress bar."""

    def __init__(
        self, width: int, height: int, fps: int, total: int, label: str, *, counter: bool = True
    ) -> None:
        self.counter = counter
        self.width, self.height, self.fps, self.total = width, height, fps, max(1, total)
        cw, ch = width // 2, height // 2
        bar = max(2, _even(math.ceil(width / len(_BARS))))
        self.period = bar * len(_BARS)
        # Twice the period plus a screen: any offset in [0, period) slices a full row.
        reps = (width + 2 * self.period) // self.period + 1
        self.bars = [
            b"".join(bytes([c[k]]) * (bar if k == 0 else bar // 2) for c in _BARS) * reps
            for k in range(3)
        ]
        self.speed = max(2, _even(self.period / (4 * fps)))  # one full cycle in about 4 s
        self.margin = _even(max(4, height // 30))
        digits_line = 16  # "MM:SS.ss #NNNNN" and a little room
        self.scale = max(1, min(height // 90, (width - 4 * self.margin) // (digits_line * _CELL_W)))
        per_line = max(1, (width - 4 * self.margin) // (_CELL_W * self.scale))
        self.label_lines = _wrap(label, per_line, 3) if label else []
        self.bar_h = _even(max(2, height // 40))
        self.cw, self.ch = cw, ch

    def _text_box(
        self, lines: list[str], y_rows: list[bytes], u_rows: list[bytes], v_rows: list[bytes]
    ) -> None:
        """Overwrite the top-left corner of the planes' rows with ``lines`` in a dark box."""
        text: list[bytes] = []
        for n, line in enumerate(lines):
            if n:
                text.extend([b""] * self.scale * 2)  # blank rows between lines
            text.extend(_text_rows(line, self.scale))
        w, h = self.width, self.height
        pad = self.margin // 2 * 2 or 2
        box_w = min(w - 2 * self.margin, _even(max(len(r) for r in text) + 2 * pad + 1))
        box_h = min(h - 2 * self.margin - self.bar_h, _even(len(text) + 2 * pad + 1))
        x0 = y0 = self.margin
        bg = bytes([_BG_Y]) * box_w
        for r in range(box_h):
            t = r - pad
            inner = text[t] if 0 <= t < len(text) else b""
            row = y_rows[y0 + r]
            y_rows[y0 + r] = row[:x0] + (bg[:pad] + inner + bg)[:box_w] + row[x0 + box_w :]
        neutral = bytes([_NEUTRAL]) * (box_w // 2)
        for rows in (u_rows, v_rows):
            row = rows[y0 // 2]
            boxed = row[: x0 // 2] + neutral + row[(x0 + box_w) // 2 :]
            for r in range(y0 // 2, (y0 + box_h) // 2):
                rows[r] = boxed

    def frame(self, i: int) -> VideoFrame:
        w, h, cw, ch = self.width, self.height, self.cw, self.ch
        off = (i * self.speed) % self.period
        y_row = self.bars[0][off : off + w]
        u_row = self.bars[1][off // 2 : off // 2 + cw]
        v_row = self.bars[2][off // 2 : off // 2 + cw]
        y_rows: list[bytes] = [y_row] * h
        u_rows: list[bytes] = [u_row] * ch
        v_rows: list[bytes] = [v_row] * ch

        mm, ss = divmod(i / self.fps, 60)
        clock = [f"{int(mm):02d}:{ss:05.2f} #{i:05d}"] if self.counter else []
        lines = [*self.label_lines, *clock]
        if lines:
            self._text_box(lines, y_rows, u_rows, v_rows)

        # A grey progress bar along the bottom shows where in the video this frame sits.
        filled = _even(w * (i + 1) / self.total) if i + 1 < self.total else w
        bar_y = bytes([180]) * filled + bytes([_BG_Y]) * (w - filled)
        bar_c = bytes([_NEUTRAL]) * cw
        for r in range(h - self.bar_h, h):
            y_rows[r] = bar_y
        for r in range((h - self.bar_h) // 2, ch):
            u_rows[r] = v_rows[r] = bar_c

        frame = VideoFrame(w, h, "yuv420p")
        for plane, rows, pw in zip(
            frame.planes, (y_rows, u_rows, v_rows), (w, cw, cw), strict=True
        ):
            slack = plane.line_size - pw
            if slack:
                tail = bytes(slack)
                rows = [r + tail for r in rows]
            plane.update(b"".join(rows))
        return frame


def _tone_second(rate: int = AUDIO_RATE) -> bytes:
    """One second of mono s16 audio: a soft 480 Hz tone, a brighter 100 ms tick on the second."""
    tick = rate // 10
    samples = array("h")
    for n in range(rate):
        if n < tick:
            value = 0.35 * math.sin(2 * math.pi * _TICK_HZ * n / rate)
        else:
            value = 0.15 * math.sin(2 * math.pi * _TONE_HZ * n / rate)
        samples.append(int(value * 32767))
    return samples.tobytes()


def _audio_frames(seconds: float, chunk: int = 1024) -> Iterator[av.AudioFrame]:
    """Mono s16 frames of the tone, ``seconds`` long, pts counted in samples."""
    second = _tone_second()
    looped = second + second  # a chunk may run across the end of the second
    total = round(seconds * AUDIO_RATE)
    pts = 0
    while pts < total:
        n = min(chunk, total - pts)
        start = (pts % AUDIO_RATE) * 2
        data = looped[start : start + n * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=n)
        frame.sample_rate = AUDIO_RATE
        frame.time_base = Fraction(1, AUDIO_RATE)
        frame.pts = pts
        frame.planes[0].update(data)
        yield frame
        pts += n


def _write_synthetic(
    dst: Path,
    *,
    seconds: float,
    width: int,
    height: int,
    fps: int,
    audio: bool,
    label: str,
    recipe: _Recipe,
    faststart: bool,
) -> None:
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, not {seconds}")
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and at least 16, not {width}x{height}")
    if not 1 <= fps <= 120:
        raise ValueError(f"fps must be between 1 and 120, not {fps}")
    total = max(1, round(seconds * fps))
    painter = _Painter(width, height, fps, total, label)
    options = {"movflags": "+faststart"} if faststart and recipe.format in ("mp4", "mov") else {}
    with _atomic_output(dst) as tmp:
        out = av.open(str(tmp), "w", format=recipe.format, options=options)
        with out:
            if label:
                out.metadata["title"] = label
            video = out.add_stream(recipe.video, rate=fps, options=dict(recipe.video_options))
            assert isinstance(video, VideoStream)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.codec_context.gop_size = fps
            if recipe.video_bit_rate:
                video.bit_rate = recipe.video_bit_rate
            sound: AudioStream | None = None
            if audio:
                stream = out.add_stream(recipe.audio, rate=AUDIO_RATE)
                assert isinstance(stream, AudioStream)
                stream.layout = "mono"
                sound = stream
            tones = _audio_frames(total / fps) if sound is not None else iter(())
            pending = next(tones, None)
            for i in range(total):
                frame = painter.frame(i)
                frame.pts = i
                frame.time_base = Fraction(1, fps)
                out.mux(video.encode(frame))
                # Keep audio level with video so the muxer interleaves without buffering it all.
                while (
                    sound is not None
                    and pending is not None
                    and pending.pts is not None
                    and (pending.pts < (i + 1) * AUDIO_RATE / fps)
                ):
                    out.mux(sound.encode(pending))
                    pending = next(tones, None)
            out.mux(video.encode(None))
            if sound is not None:
                while pending is not None:
                    out.mux(sound.encode(pending))
                    pending = next(tones, None)
                out.mux(sound.encode(None))


def make_sample_video(
    path: Path,
    *,
    seconds: float = 20.0,
    width: int = 640,
    height: int = 360,
    fps: int = 25,
    audio: bool = True,
    faststart: bool = False,
    label: str = "",
) -> None:
    """Write a real video to ``path``; the container and codecs follow the suffix.

    ``.mp4 .m4v .mov .mkv .flv .ts``: H.264 + AAC; ``.webm``: VP8 + Opus; ``.avi``: MPEG-4 part 2
    + MP2; ``.mpg .mpeg``: MPEG-2 + MP2 (fps must be 24, 25, 30, 50 or 60). The picture is moving
    colour bars with a frame counter (and ``label``) drawn in; the audio is a tone that ticks
    every second. There is a keyframe exactly every second, so clips can be cut by remux.
    ``faststart`` puts the MP4/MOV index at the front. Blocking and CPU-bound: run it in a
    thread from async code. Raises ``ValueError`` for an unknown suffix or bad dimensions.
    """
    recipe = _recipe_for(path, fps)
    _write_synthetic(
        path,
        seconds=seconds,
        width=width,
        height=height,
        fps=fps,
        audio=audio,
        label=label,
        recipe=recipe,
        faststart=faststart,
    )


def synthetic_clip(dst: Path, seconds: float, *, label: str = "") -> None:
    """A small real 9:16 MP4 (320x568, 10 fps, H.264 + AAC tone) when there is no source to cut.

    ``label`` is drawn on the picture and stored as the title. Blocking: run it in a thread.
    """
    _write_synthetic(
        dst,
        seconds=seconds,
        width=320,
        height=568,
        fps=10,
        audio=True,
        label=label,
        recipe=_Recipe("mp4", "libx264", "aac", _x264_options(10)),
        faststart=True,
    )


# ---- reading -------------------------------------------------------------------------------------


def _open_input(src: Path) -> InputContainer:
    try:
        return av.open(str(src), "r")
    except (av.error.FFmpegError, OSError) as e:
        raise MediaError(f"cannot read {src.name}: {_reason(e)}") from e


def _reason(e: BaseException) -> str:
    if isinstance(e, av.error.FFmpegError):
        return e.strerror or type(e).__name__
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


def primary_video_stream(container: InputContainer) -> VideoStream | None:
    """The first real video stream: cover art (an "attached picture", as MP3s and M4As carry)
    is a still image stored as a one-frame video stream and does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _video_stream(container: InputContainer, src: Path) -> VideoStream:
    stream = primary_video_stream(container)
    if stream is None:
        raise MediaError(f"{src.name} has no video stream")
    return stream


def _time_base(stream: av.stream.Stream) -> Fraction:
    if stream.time_base is None:
        raise MediaError(f"stream {stream.index} has no time base")
    return stream.time_base


def _origin(container: InputContainer) -> float:
    """Where the timeline starts: MPEG streams begin at an offset; clip times count from it."""
    start = container.start_time
    return start / av.time_base if start is not None and start > 0 else 0.0


def _seek_before(container: InputContainer, video: VideoStream, target: float) -> None:
    """Position the demuxer on a video keyframe at or before ``target`` (absolute seconds).

    Index-based demuxers (MP4, Matroska with cues) land exactly; MPEG program streams seek by
    bisecting byte positions and may land after the target. So the first packet is checked and,
    when it is late, the seek is retried from further back.
    """
    tb = _time_base(video)
    for back in (0.0, 2.0, 10.0, 60.0):
        offset = int(max(0.0, target - back) / tb)
        try:
            container.seek(offset, stream=video, backward=True, any_frame=False)
        except av.error.FFmpegError:
            break
        first = _first_video_time(container, video)
        if first is None or first <= target + 1e-3:
            container.seek(offset, stream=video, backward=True, any_frame=False)
            return
    container.seek(0)  # from the beginning: slow for a late target, but always right


def _first_video_time(container: InputContainer, video: VideoStream) -> float | None:
    for n, packet in enumerate(container.demux(video)):
        if packet.pts is not None and packet.time_base is not None:
            return float(packet.pts * packet.time_base)
        if n > 50:
            break
    return None


def _duration(container: InputContainer) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    best = 0.0
    for stream in container.streams:
        if stream.duration and stream.time_base:
            best = max(best, float(stream.duration * stream.time_base))
    return best or None


# ---- cutting -------------------------------------------------------------------------------------


def cut_clip(src: Path, dst: Path, start: float, end: float, *, vertical: bool = False) -> None:
    """Write the ``[start, end)`` span of ``src`` to ``dst`` as a playable MP4 (faststart).

    Without ``vertical`` the packets are copied (a remux: fast, lossless) from the keyframe at or
    before ``start`` up to ``end``, timestamps rebased to 0, so the clip may begin up to one
    keyframe interval early. When the codecs do not fit MP4, or the copy fails, the span is
    re-encoded to H.264/AAC and starts exactly at ``start``. ``vertical`` always re-encodes, to a
    centre-cropped 9:16 picture. ``end`` past the source's end is clamped to it.

    Raises ``MediaError`` when the source cannot be read or has nothing decodable in the span,
    ``ValueError`` for an empty span. Blocking and CPU-bound: run it in a thread.
    """
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise ValueError(f"invalid span {start}..{end}")
    with _open_input(src) as probe:
        video = _video_stream(probe, src)
        duration = _duration(probe)
        if duration is not None and start >= duration:
            raise MediaError(
                f"{src.name} is {duration:.1f} s long; a clip cannot start at {start:.1f} s"
            )
        audio = probe.streams.audio[0] if probe.streams.audio else None
        remuxable = (
            not vertical
            and video.codec_context.name in _MP4_VIDEO_CODECS
            and (audio is None or audio.codec_context.name in _MP4_AUDIO_CODECS)
        )
    if remuxable:
        try:
            with _atomic_output(dst) as tmp:
                _remux(src, tmp, start, end)
            return
        except (av.error.FFmpegError, MediaError) as e:
            log.debug("remux of %s failed (%s); re-encoding", src.name, _reason(e))
    try:
        with _atomic_output(dst) as tmp:
            _reencode(src, tmp, start, end, vertical=vertical)
    except av.error.FFmpegError as e:
        raise MediaError(f"cannot cut {src.name}: {_reason(e)}") from e


def _remux(src: Path, tmp: Path, start: float, end: float) -> None:
    with (
        _open_input(src) as inp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        vin = _video_stream(inp, src)
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream_from_template(ain) if ain is not None else None
        streams: list[Any] = [vin] if ain is None else [vin, ain]
        start, end = start + _origin(inp), end + _origin(inp)
        _seek_before(inp, vin, start)
        base: float | None = None  # seconds: where the clip begins in the source
        video_done = False
        audio_done = ain is None
        written = 0
        for packet in inp.demux(streams):
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is None or packet.time_base is None:
                continue  # the demuxer's end-of-stream flush packet
            t = float(stamp * packet.time_base)
            is_video = packet.stream.index == vin.index
            if base is None:
                # Copy nothing before the first keyframe: frames before it cannot be decoded.
                if not (is_video and packet.is_keyframe):
                    continue
                # Rebase on its presentation time so the clip's first picture shows at 0; the
                # decode times of reordered (B-)frames may go negative, which MP4 expresses.
                base = float(packet.pts * packet.time_base) if packet.pts is not None else t
            if is_video:
                # Cut in decode order, so that every kept frame keeps the frames it refers to.
                if t >= end:
                    video_done = True
                if video_done:
                    if audio_done:
                        break
                    continue
            else:
                pts_t = float(packet.pts * packet.time_base) if packet.pts is not None else t
                if pts_t >= end:
                    audio_done = True
                if audio_done or pts_t < base:
                    if video_done and audio_done:
                        break
                    continue
            shift = round(base / packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = vout if is_video else aout  # type: ignore[assignment]
            out.mux(packet)
            written += is_video
        if not written:
            raise MediaError(f"{src.name} has no keyframe before {end:.1f} s")


def _vertical_size(width: int, height: int) -> tuple[int, int, int, int]:
    """The 9:16 centre crop of a ``width`` x ``height`` picture (to the nearest even pixel,
    keeping the full height of a landscape source) and its output size (height <= 1280)."""
    if width * 16 >= height * 9:  # landscape or square: keep the height, narrow the width
        crop_w, crop_h = min(width, _even(height * 9 / 16)), _even(height)
    else:  # taller than 9:16 already: keep the width
        crop_w, crop_h = _even(width), min(height, _even(width * 16 / 9))
    out_h = min(crop_h, _VERTICAL_MAX_HEIGHT)
    out_w = _even(out_h * crop_w / crop_h)
    return crop_w, crop_h, out_w, out_h


def _video_graph(
    vin: VideoStream, out_w: int, out_h: int, crop: tuple[int, int] | None
) -> av.filter.Graph:
    graph = av.filter.Graph()
    nodes = [graph.add_buffer(template=vin)]
    if crop is not None:
        nodes.append(graph.add("crop", f"{crop[0]}:{crop[1]}"))
    nodes.append(graph.add("scale", f"{out_w}:{out_h}"))
    nodes.append(graph.add("format", "yuv420p"))
    nodes.append(graph.add("buffersink"))
    graph.link_nodes(*nodes).configure()
    return graph


def _reencode(src: Path, tmp: Path, start: float, end: float, *, vertical: bool) -> None:
    with (
        _open_input(src) as inp,
        av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        vin = _video_stream(inp, src)
        ain = inp.streams.audio[0] if inp.streams.audio else None
        vin.thread_type = "AUTO"
        src_w, src_h = vin.codec_context.width, vin.codec_context.height
        if not src_w or not src_h:
            raise MediaError(f"{src.name}: the video stream has no picture size")
        rate = vin.average_rate or vin.guessed_rate or Fraction(25)
        fps = max(1, min(60, round(float(rate))))
        if vertical:
            crop_w, crop_h, out_w, out_h = _vertical_size(src_w, src_h)
            crop: tuple[int, int] | None = (crop_w, crop_h)
        else:
            out_w, out_h, crop = _even(src_w), _even(src_h), None
        graph = _video_graph(vin, out_w, out_h, crop)
        vout = out.add_stream("libx264", rate=fps, options=_x264_options(fps))
        assert isinstance(vout, VideoStream)
        vout.width, vout.height, vout.pix_fmt = out_w, out_h, "yuv420p"
        vout.codec_context.gop_size = fps
        aout: AudioStream | None = None
        if ain is not None:
            in_rate = ain.codec_context.sample_rate or AUDIO_RATE
            stream = out.add_stream("aac", rate=in_rate if in_rate in _AAC_RATES else AUDIO_RATE)
            assert isinstance(stream, AudioStream)
            stream.layout = "mono" if ain.codec_context.channels == 1 else "stereo"
            aout = stream
        start, end = start + _origin(inp), end + _origin(inp)
        _seek_before(inp, vin, start)

        last_pts = -1
        video_done = False
        audio_done = ain is None
        frames = 0
        streams: list[Any] = [vin] if ain is None else [vin, ain]
        for packet in inp.demux(streams):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError:
                continue  # a damaged packet: skip it like a player would
            for frame in decoded:
                if isinstance(frame, VideoFrame):
                    vt = frame.time
                    if vt is not None and vt >= end:
                        video_done = True
                    if video_done or vt is None or vt < start:
                        continue
                    graph.push(frame)
                    for filtered in _drain(graph):
                        # Round half down: the first frame at or after ``start`` lands on 0.
                        pts = max(last_pts + 1, math.ceil((vt - start) * fps - 0.5 - 1e-6))
                        filtered.pts, filtered.time_base = pts, Fraction(1, fps)
                        # The source's keyframe marks would force keyframes off the 1 s grid.
                        filtered.pict_type = PictureType.NONE
                        last_pts = pts
                        out.mux(vout.encode(filtered))
                        frames += 1
                elif isinstance(frame, av.AudioFrame) and aout is not None:
                    at = frame.time
                    if at is not None and at >= end:
                        audio_done = True
                    # A frame straddling ``start`` is dropped whole: at most ~20 ms of sound.
                    if audio_done or at is None or at < start:
                        continue
                    frame.pts = round((at - start) * frame.sample_rate)
                    frame.time_base = Fraction(1, frame.sample_rate)
                    out.mux(aout.encode(frame))
            if video_done and audio_done:
                break
        if not frames:
            raise MediaError(
                f"{src.name} has no decodable frames between {start:.1f} s and {end:.1f} s"
            )
        out.mux(vout.encode(None))
        if aout is not None:
            out.mux(aout.encode(None))


def _drain(graph: av.filter.Graph) -> Iterator[VideoFrame]:
    while True:
        try:
            frame = graph.vpull()
        except (av.error.BlockingIOError, av.error.EOFError):
            return
        yield frame


# ---- thumbnails ----------------------------------------------------------------------------------


def _frame_at(src: Path, at: float) -> VideoFrame:
    """The first decodable frame at or after ``at`` (the last one when ``at`` is past the end)."""
    with _open_input(src) as inp:
        vin = _video_stream(inp, src)
        at += _origin(inp)
        _seek_before(inp, vin, at)
        chosen: VideoFrame | None = None
        for packet in inp.demux(vin):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                continue
            for frame in frames:
                chosen = frame
                if frame.time is None or frame.time >= at - 1e-3:
                    return frame
        if chosen is None:
            raise MediaError(f"{src.name} has no decodable frame at {at:.1f} s")
        return chosen


def _placeholder_frame(width: int = 320, height: int = 180) -> VideoFrame:
    return _Painter(width, height, 1, 1, "no preview", counter=False).frame(0)


def _encode_jpeg(frame: VideoFrame) -> bytes:
    w, h = frame.width, frame.height
    scale = min(1.0, _THUMB_MAX_SIDE / max(w, h))
    w, h = _even(w * scale), _even(h * scale)
    ctx = av.CodecContext.create("mjpeg", "w")
    ctx.width, ctx.height = w, h
    ctx.pix_fmt = "yuvj420p"
    ctx.time_base = Fraction(1, 25)
    # A fixed quantiser (ffmpeg's -q:v 3): good quality whatever the picture size.
    ctx.options = {"qmin": "2", "qmax": "3"}
    ready = frame.reformat(width=w, height=h, format="yuvj420p")
    ready.pts = 0
    packets = ctx.encode(ready) + ctx.encode(None)
    return b"".join(bytes(p) for p in packets)


def thumbnail_jpeg(src: Path | None, dst: Path, at: float = 0.0) -> None:
    """Write a JPEG of the frame of ``src`` at ``at`` seconds to ``dst`` (longest side <= 1280).

    When ``src`` is None or cannot be decoded, a generated "no preview" placeholder is written
    instead: a thumbnail is decoration and never the reason a request fails. Blocking: run it in
    a thread.
    """
    frame: VideoFrame | None = None
    if src is not None:
        try:
            frame = _frame_at(src, max(0.0, at))
        except (MediaError, av.error.FFmpegError) as e:
            log.debug(
                "no thumbnail frame from %s (%s); writing a placeholder", src.name, _reason(e)
            )
    data = _encode_jpeg(frame if frame is not None else _placeholder_frame())
    with _atomic_output(dst) as tmp:
        tmp.write_bytes(data)


# ---- inspection (tests, diagnostics) -------------------------------------------------------------


def media_info(path: Path) -> dict[str, Any]:
    """Decode the whole file and describe it; for tests and diagnostics (slow on long files).

    Returns ``format``, ``duration`` (seconds or None), ``size``, ``streams`` (type, codec,
    width/height/fps or sample_rate/channels, frames decoded, keyframe times for video),
    ``video_frames``, ``audio_frames``, ``decode_errors``, ``first_video_time`` and
    ``last_video_time``. Raises ``MediaError`` when the file cannot be opened.
    """
    with _open_input(path) as inp:
        streams: list[dict[str, Any]] = []
        by_index: dict[int, dict[str, Any]] = {}
        for s in inp.streams:
            info: dict[str, Any] = {
                "index": s.index,
                "type": s.type,
                "codec": s.codec_context.name,
                "frames": 0,
            }
            if isinstance(s, VideoStream):
                info.update(
                    width=s.codec_context.width,
                    height=s.codec_context.height,
                    fps=float(s.average_rate) if s.average_rate else None,
                    keyframes=[],
                )
            elif isinstance(s, AudioStream):
                info.update(
                    sample_rate=s.codec_context.sample_rate, channels=s.codec_context.channels
                )
            streams.append(info)
            by_index[s.index] = info
        errors = 0
        first_video: float | None = None
        last_video: float | None = None
        wanted = [s for s in inp.streams if s.type in ("video", "audio")]
        for packet in inp.demux(wanted):
            info = by_index[packet.stream.index]
            if packet.is_keyframe and "keyframes" in info and packet.pts is not None:
                info["keyframes"].append(round(float(packet.pts * packet.time_base), 3))
            try:
                decoded = packet.decode()
            except av.error.FFmpegError:
                errors += 1
                continue
            info["frames"] += len(decoded)
            for frame in decoded:
                if isinstance(frame, VideoFrame) and frame.time is not None:
                    t = frame.time
                    first_video = t if first_video is None else min(first_video, t)
                    last_video = t if last_video is None else max(last_video, t)
        for info in streams:
            if "keyframes" in info:
                info["keyframes"].sort()
        return {
            "format": inp.format.name,
            "duration": _duration(inp),
            "size": path.stat().st_size,
            "streams": streams,
            "video_frames": sum(i["frames"] for i in streams if i["type"] == "video"),
            "audio_frames": sum(i["frames"] for i in streams if i["type"] == "audio"),
            "decode_errors": errors,
            "first_video_time": first_video,
            "last_video_time": last_video,
        }


def is_playable(path: Path) -> bool:
    """True when ``path`` opens, has a video stream, and every packet decodes (full decode)."""
    try:
        info = media_info(path)
    except (MediaError, av.error.FFmpegError, OSError):
        return False
    return bool(info["video_frames"]) and not info["decode_errors"] and bool(info["duration"])

"""Local validation of an input before anything is billed.

Carmic deducts minutes when a project is created, so a file that is empty, too large, not a
video, or cut short by an interrupted copy must fail here, with a sentence a person can act on,
and never reach the API. :func:`probe_file` is the synchronous check (PyAV); :func:`probe` runs
it under a timeout for the event loop.

The check reads a few megabytes whatever the size of the file: the container header, the first
picture, and the pictures near the end (one seek), plus, for MP4/MOV, Matroska/WebM and AVI, the
length the container declares for itself, which tells a truncated copy exactly. There is no
full decode. A file whose container gives no duration is the one exception: its length is
found by reading every packet header.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Literal

import av
import av.error
from av.container import InputContainer
from av.video.stream import VideoStream

from watchd.media import primary_video_stream
from watchd.watching.ignore import VIDEO_EXTENSIONS
from watchd.watching.regular import NotRegularFile, open_regular

_FD_DIR = "/proc/self/fd"

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ProbeCode",
    "ProbeError",
    "ProbeResult",
    "probe",
    "probe_file",
    "probe_timeouts",
    "stuck_probes",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 5_000_000_000  # Carmic's upload limit ("5 GB")

ProbeCode = Literal[
    "empty", "too_large", "not_video", "truncated", "unsupported", "timeout", "unreadable"
]

# Where the end check looks, as a fraction of the video's length, and how close to the end a
# decoded picture must be to count: the slack allows for a video track a little shorter than
# the audio, which is common and harmless.
END_TARGET = 0.95
END_ACCEPT = 0.90
# Read budgets (compressed bytes of video packets) for finding a picture after a seek.
START_BUDGET = 16 * 1024 * 1024
END_BUDGET = 16 * 1024 * 1024
# Seconds before the 95% target from which the end check seeks, in turn.
_END_RETRIES = (0.0, 3.0, 12.0)
_HEAD_BYTES = 4096
_MAX_BOXES = 10_000

_ACCEPTED = " ".join(sorted(VIDEO_EXTENSIONS))


class ProbeError(Exception):
    """Why a file cannot be taken: ``code`` (one of :data:`ProbeCode`) and a ``message`` for a
    person: what is wrong and what to do about it."""

    def __init__(self, code: ProbeCode, message: str) -> None:
        super().__init__(message)
        self.code: ProbeCode = code
        self.message = message

    def __repr__(self) -> str:
        return f"ProbeError({self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class ProbeResult:
    """What Carmic's create call needs to know about a valid video."""

    duration: float  # seconds
    content_type: str  # e.g. "video/mp4"
    container: str  # mp4 | mov | mkv | webm | avi | mpeg | flv
    video_codec: str
    audio_codec: str | None
    width: int
    height: int
    has_audio: bool


# ---- sizes and names -----------------------------------------------------------------------------


def _human_size(n: int) -> str:
    """Decimal units, as Carmic states its limit, 3 significant digits: 6_200_000_000 ->
    '6.2 GB', 1_049_000 -> '1.05 MB'."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _sizes(have: int, limit: int) -> tuple[str, str]:
    """Both sizes for a message, in bytes when rounding would make them look equal."""
    a, b = _human_size(have), _human_size(limit)
    return (a, b) if a != b else (f"{have:,} bytes", f"{limit:,} bytes")


def _percent(part: float, whole: float) -> int:
    return max(0, min(100, int(part * 100 / whole))) if whole > 0 else 0


# ---- container sniffing and self-declared lengths ------------------------------------------------

_ISO_TOP_BOXES = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof", b"styp"}
)


def _sniff(head: bytes) -> str | None:
    """The container family the first bytes announce, or None when they announce no video."""
    if len(head) >= 8 and head[4:8] in _ISO_TOP_BOXES:
        return "isobmff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "ebml"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(b"\x00\x00\x01\xba") or head.startswith(b"\x00\x00\x01\xb3"):
        return "mpeg"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    return None


def _declared_length_problem(f: BinaryIO, family: str | None, size: int) -> str | None:
    """For containers that record their own length, a description of how the file falls
    short of it, or None when it is complete (or the format does not say)."""
    if family == "isobmff":
        return _isobmff_problem(f, size)
    if family == "ebml":
        return _ebml_problem(f, size)
    if family == "avi":
        return _riff_problem(f, size)
    return None


def _short_by(have: int, want: int) -> str:
    a, b = _sizes(have, want)
    return f"it is {a} but its header declares {b} ({_percent(have, want)}% present)"


def _isobmff_problem(f: BinaryIO, size: int) -> str | None:
    """Walk the top-level boxes (ISO/IEC 14496-12 section 4.2): each names its own size."""
    offset = 0
    seen: set[bytes] = set()
    for _ in range(_MAX_BOXES):
        if offset >= size:
            break
        f.seek(offset)
        header = f.read(16)
        if len(header) < 8:
            break
        box_size, box_type = struct.unpack(">I4s", header[:8])
        if not all(0x20 <= c < 0x7F for c in box_type):
            return None  # not a box: trailing bytes some writers leave; let the decoder judge
        if box_size == 1:
            if len(header) < 16:
                break
            (box_size,) = struct.unpack(">Q", header[8:16])
        elif box_size == 0:  # "extends to the end of the file"
            box_size = size - offset
        if box_size < 8:
            return None
        seen.add(box_type)
        if offset + box_size > size:
            if b"moov" not in seen:
                return "its index (the MP4 'moov' box, written when a recording ends) is missing"
            return _short_by(size, offset + box_size)
        offset += box_size
    if b"moov" not in seen and b"moof" not in seen:
        return "its index (the MP4 'moov' box, written when a recording ends) is missing"
    return None


def _read_vint(f: BinaryIO, *, keep_marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer: (value, length in bytes), or None if malformed."""
    first = f.read(1)
    if not first:
        return None
    b = first[0]
    length = 1
    mask = 0x80
    while length <= 8 and not b & mask:
        mask >>= 1
        length += 1
    if length > 8:
        return None
    rest = f.read(length - 1)
    if len(rest) != length - 1:
        return None
    value = b if keep_marker else b & (mask - 1)
    for byte in rest:
        value = (value << 8) | byte
    return value, length


def _ebml_problem(f: BinaryIO, size: int) -> str | None:
    """The EBML header, then the Segment element whose size covers the rest of the file."""
    f.seek(0)
    header_id = _read_vint(f, keep_marker=True)
    header_size = _read_vint(f, keep_marker=False)
    if header_id is None or header_size is None:
        return None
    f.seek(f.tell() + header_size[0])
    segment_id = _read_vint(f, keep_marker=True)
    segment_size = _read_vint(f, keep_marker=False)
    if segment_id is None or segment_size is None or segment_id[0] != 0x18538067:
        return None
    value, length = segment_size
    if value == (1 << (7 * length)) - 1:
        return None  # "unknown size": written live, nothing declared to compare with
    end = f.tell() + value
    return _short_by(size, end) if end > size else None


def _riff_problem(f: BinaryIO, size: int) -> str | None:
    """RIFF chunks (AVI, and OpenDML's AVIX continuations past 1 GB) each state their size."""
    offset = 0
    while offset + 12 <= size:
        f.seek(offset)
        header = f.read(12)
        if header[:4] != b"RIFF":
            return None
        (chunk,) = struct.unpack("<I", header[4:8])
        end = offset + 8 + chunk + (chunk & 1)
        if end > size + (chunk & 1):
            return _short_by(size, end)
        offset = end
    return None


def _matroska_doctype(f: BinaryIO) -> str:
    """The DocType inside the EBML header: "webm" or "matroska"."""
    f.seek(0)
    head = f.read(64)
    at = head.find(b"\x42\x82")
    if at < 0 or at + 3 > len(head):
        return "matroska"
    length = head[at + 2] & 0x7F  # DocType is short: a one-byte size
    return head[at + 3 : at + 3 + length].decode("ascii", "replace")


def _iso_brand(head: bytes) -> bytes:
    return head[8:12] if head[4:8] == b"ftyp" else b""


# ---- container -> content type -------------------------------------------------------------------

_IMAGE_FORMATS = frozenset({"image2", "gif", "apng", "mjpeg", "tiff", "bmp"})


def _content_type(fmt: str, family: str | None, head: bytes, f: BinaryIO) -> tuple[str, str] | None:
    """(container, MIME type) for a demuxer name, or None for a container Carmic does not take."""
    if fmt.startswith("mov,mp4"):
        # QuickTime files carry the "qt  " brand, or predate ftyp altogether.
        if _iso_brand(head) == b"qt  " or (family == "isobmff" and not _iso_brand(head)):
            return "mov", "video/quicktime"
        return "mp4", "video/mp4"
    if fmt.startswith("matroska"):
        if _matroska_doctype(f) == "webm":
            return "webm", "video/webm"
        return "mkv", "video/x-matroska"
    simple = {
        "avi": ("avi", "video/x-msvideo"),
        "flv": ("flv", "video/x-flv"),
        "mpeg": ("mpeg", "video/mpeg"),
        "mpegts": ("mpeg", "video/mpeg"),
        "mpegvideo": ("mpeg", "video/mpeg"),
    }
    return simple.get(fmt)


# ---- the probe -----------------------------------------------------------------------------------


def probe_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ProbeResult:
    """Check that ``path`` is a complete, decodable video Carmic accepts, and describe it.

    In order: size (0 bytes, over ``max_bytes``), extension, the length the container declares,
    open with PyAV, a video stream, the container type, the duration, a decodable picture at
    the start and one near the end (seek to 95%). Raises :class:`ProbeError` with a code and
    an actionable message. Blocking (file I/O and decoding): from async code use :func:`probe`.
    """
    name = path.name
    try:
        st = os.lstat(path)  # a symbolic link is not followed, nor ever opened
    except FileNotFoundError:
        raise _gone(name) from None
    except OSError as e:
        raise _unreadable(name, e) from e
    if not stat.S_ISREG(st.st_mode):
        raise ProbeError("unreadable", f"{name} is not a regular file")
    size = st.st_size
    if size == 0:
        raise ProbeError("empty", f"{name} is 0 bytes: the copy probably failed")
    if size > max_bytes:
        raise ProbeError(
            "too_large",
            f"{name} is {_sizes(size, max_bytes)[0]}, over Carmic's "
            f"{_sizes(size, max_bytes)[1]} limit",
        )
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        kind = f"{suffix} files" if suffix else "files without an extension"
        raise ProbeError(
            "unsupported",
            f"{name}: {kind} are not taken (accepted: {_ACCEPTED})",
        )
    try:
        with open_regular(path) as f:
            head = f.read(_HEAD_BYTES)
            family = _sniff(head)
            short = _declared_length_problem(f, family, size)
            if short is not None:
                raise _truncated(name, short)
            return _probe_container(path, family, head, f)
    except ProbeError:
        raise
    except av.error.FFmpegError as e:
        raise _unreadable(name, e) from e
    except NotRegularFile:
        raise ProbeError(
            "unreadable", f"{name} is not a regular file; drop a video file instead"
        ) from None
    except OSError as e:
        raise _unreadable(name, e) from e


def _truncated(name: str, what: str) -> ProbeError:
    return ProbeError(
        "truncated", f"{name} is truncated: {what}; the copy is incomplete or the file is damaged"
    )


def _gone(name: str) -> ProbeError:
    return ProbeError(
        "unreadable", f"{name} is gone: it was moved or deleted before it could be checked"
    )


# FFmpeg's demuxers of bare elementary streams (no container around the pictures).
_BARE_STREAMS: Final = frozenset(
    {
        "h261",
        "h263",
        "h264",
        "hevc",
        "vvc",
        "mpegvideo",
        "m4v",
        "cavsvideo",
        "vc1",
        "dirac",
        "avs2",
        "avs3",
        "mjpeg",
        "rawvideo",
        "ingenient",
    }
)


def _not_a_video(name: str) -> ProbeError:
    return ProbeError(
        "not_video",
        f"{name} is not a readable video: its content matches no video format (a renamed or "
        "damaged file?)",
    )


def _unreadable(name: str, e: BaseException) -> ProbeError:
    reason = getattr(e, "strerror", None) or type(e).__name__
    return ProbeError(
        "unreadable",
        f"{name} cannot be read ({reason}): a permission or share problem",
    )


def _open(path: Path, family: str | None, f: BinaryIO | None = None) -> InputContainer:
    """The container, read through the descriptor ``f`` already checked (by its /proc name,
    which is that very file whatever the path names now) when there is one."""
    name = path.name
    source = str(path)
    if f is not None and os.path.isdir(_FD_DIR):
        source = f"{_FD_DIR}/{f.fileno()}"
    try:
        return av.open(source, "r")
    except av.error.FileNotFoundError:
        raise _gone(name) from None
    except (av.error.PermissionError, av.error.OSError) as e:
        raise _unreadable(name, e) from e
    except av.error.FFmpegError as e:
        if family is None:
            raise _not_a_video(name) from e
        raise ProbeError(
            "unreadable",
            f"{name} looks like a video but cannot be opened ({e.strerror or 'invalid data'}): "
            "the file is damaged",
        ) from e


def _probe_container(path: Path, family: str | None, head: bytes, f: BinaryIO) -> ProbeResult:
    name = path.name
    with _open(path, family, f) as container:
        fmt = container.format.name
        if fmt in _IMAGE_FORMATS or fmt.endswith("_pipe"):  # ffmpeg reads images as 1-frame videos
            raise ProbeError("not_video", f"{name} is an image, not a video")
        video = primary_video_stream(container)
        if video is None and family is None and not container.streams.audio:
            raise _not_a_video(name)  # no container header and nothing FFmpeg could read in it
        if video is None:
            what = "it is audio only" if container.streams.audio else "it holds no pictures"
            raise ProbeError(
                "not_video", f"{name} has no video stream ({what}); Carmic needs a video"
            )
        kind = _content_type(fmt, family, head, f)
        if kind is None and family is None and fmt in _BARE_STREAMS:
            # FFmpeg's guess for bytes with no container header: its raw-stream probes take
            # random data for H.263 now and then. Either way it is no video Carmic takes.
            raise ProbeError(
                "not_video",
                f"{name} is not a readable video: its content matches no container format "
                f"(at best a bare {container.format.long_name or fmt} stream, which Carmic "
                "does not take)",
            )
        if kind is None:
            long_name = container.format.long_name or fmt
            raise ProbeError(
                "unsupported",
                f"{name} is a {long_name} file, which Carmic does not take",
            )
        codec = video.codec_context.name
        if not codec or codec == "none":
            raise ProbeError(
                "unsupported",
                f"{name} uses a video codec that cannot be decoded here",
            )
        # One thread: frame threading would hold the first picture back behind several more.
        video.codec_context.thread_count = 1
        start, video_length, duration = _timeline(container, video, name)
        _check_start(container, video, name, family)
        _check_end(container, video, name, start, video_length)
        audio = container.streams.audio[0] if container.streams.audio else None
        return ProbeResult(
            duration=round(duration, 3),
            content_type=kind[1],
            container=kind[0],
            video_codec=codec,
            audio_codec=audio.codec_context.name if audio is not None else None,
            width=video.codec_context.width,
            height=video.codec_context.height,
            has_audio=audio is not None,
        )


def _timeline(
    container: InputContainer, video: VideoStream, name: str
) -> tuple[float, float, float]:
    """(video start, video length, file duration) in seconds."""
    tb = video.time_base
    start = 0.0
    if video.start_time is not None and tb is not None:
        start = float(video.start_time * tb)
    elif container.start_time is not None:
        start = container.start_time / av.time_base
    file_duration = container.duration / av.time_base if container.duration else 0.0
    video_length = float(video.duration * tb) if video.duration and tb is not None else 0.0
    if not video_length:
        video_length = _tag_seconds(video.metadata.get("DURATION", ""))
    if not file_duration and not video_length:
        file_duration = video_length = _demuxed_length(container, video, start)
    if file_duration <= 0 and video_length <= 0:
        raise _truncated(name, "it holds no timed pictures")
    return start, video_length or file_duration, file_duration or video_length


def _tag_seconds(value: str) -> float:
    """Matroska's per-track DURATION tag ("00:00:10.000000000"); 0.0 when absent or odd."""
    try:
        hours, minutes, seconds = value.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def _demuxed_length(container: InputContainer, video: VideoStream, start: float) -> float:
    """The video's length from its packets' timestamps (reads the whole file: a rare fallback)."""
    end = start
    for packet in container.demux(video):
        if packet.pts is not None and packet.time_base is not None:
            span = packet.pts + (packet.duration or 0)
            end = max(end, float(span * packet.time_base))
    container.seek(0)
    return max(0.0, end - start)


def _first_picture(
    container: InputContainer, video: VideoStream, budget: int, at_least: float | None
) -> tuple[float | None, float | None, str]:
    """Decode forward from the current position until a picture at or after ``at_least``
    (any picture when None) appears. Returns (that picture's time or None, the last decoded
    picture's time or None, why it stopped: "found", "end" or "budget")."""
    spent = 0
    last: float | None = None
    try:
        for packet in container.demux(video):
            spent += packet.size
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                frames = []  # a damaged packet: keep going, as a player would
            for frame in frames:
                if frame.pts is None:
                    continue  # an untimed picture says nothing about where we are
                t = frame.time
                last = t
                if at_least is None or t >= at_least:
                    return t, last, "found"
            if spent > budget:
                return None, last, "budget"
    except av.error.FFmpegError as e:
        log.debug("decoding stopped: %s", e)
    return None, last, "end"


def _check_start(
    container: InputContainer, video: VideoStream, name: str, family: str | None
) -> None:
    found, _, why = _first_picture(container, video, START_BUDGET, None)
    if found is not None:
        return
    if family is None:
        # ffmpeg guessed a format from content that announces none: noise that happened to
        # look like a stream header.
        raise _not_a_video(name)
    detail = "in its first megabytes" if why == "budget" else "anywhere in it"
    raise ProbeError(
        "unreadable",
        f"{name} is damaged: no picture could be decoded {detail}",
    )


def _check_end(
    container: InputContainer, video: VideoStream, name: str, start: float, length: float
) -> None:
    """A picture must decode at or after 90% of the video's length (looking from 95%).

    An index-based seek (MP4, Matroska) lands on the keyframe before the target. Demuxers
    without an index (MPEG program streams, FLV) bisect on timestamps and may land past the
    last keyframe, where nothing decodes: those get two more tries from further back.
    """
    tb = video.time_base
    if tb is None:
        return
    target = start + END_TARGET * length
    accept = start + END_ACCEPT * length
    last_seen: float | None = None
    for back in _END_RETRIES:
        seek_to = max(start, target - back)
        try:
            container.seek(int(seek_to / tb), stream=video, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            log.debug("%s: seek to %.1f s failed: %s", name, seek_to, e)
            continue
        found, last, why = _first_picture(container, video, END_BUDGET, accept)
        if found is not None:
            return
        if why == "budget" and last is not None and last >= seek_to:
            # Pictures still decoding from close to the end when the budget ran out: a long
            # keyframe interval at a high bitrate. The data is there; reading on would break
            # the few-megabytes promise.
            return
        if last is not None:
            last_seen = last if last_seen is None else max(last_seen, last)
            break  # pictures decode, then stop short of the end: no need to look further back
    problem = f"no decodable frames near the end (at {round(END_TARGET * 100)}% of its length)"
    if last_seen is not None and last_seen > start:
        problem += f"; the pictures stop at {_percent(last_seen - start, length)}%"
    raise _truncated(name, problem)


# ---- under a timeout, off the event loop ---------------------------------------------------------

_stats_lock = threading.Lock()
_stuck = 0
_timeouts = 0
_seq = itertools.count(1)


def stuck_probes() -> int:
    """Probes that timed out and whose thread is still blocked (e.g. in a read from a hung
    NAS). The daemon reports this: a growing number means a share has stopped answering."""
    with _stats_lock:
        return _stuck


def probe_timeouts() -> int:
    """How many probes have timed out since the process started."""
    with _stats_lock:
        return _timeouts


class _Call:
    __slots__ = ("finished", "stuck")

    def __init__(self) -> None:
        self.finished = False
        self.stuck = False


async def probe(
    path: Path,
    *,
    timeout: float = 60.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    probe_fn: Callable[..., ProbeResult] = probe_file,
) -> ProbeResult:
    """:func:`probe_file` in a thread of its own, under ``timeout`` seconds.

    Not the loop's default executor: a read from a hung network share can block in the kernel
    for ever, and Python cannot interrupt it. A few such reads would fill the executor and
    starve every other ``to_thread`` call of the daemon. So each probe gets a daemon thread;
    on timeout it is left behind (it cannot be killed, and being a daemon thread it does not
    hold up the process's exit), counted by :func:`stuck_probes` until it returns, and
    ``ProbeError("timeout")`` is raised. ``probe_fn(path, max_bytes=...)`` is injectable for
    tests.
    """
    global _stuck, _timeouts
    loop = asyncio.get_running_loop()
    future: asyncio.Future[ProbeResult] = loop.create_future()
    call = _Call()

    def settle(result: ProbeResult | None, error: BaseException | None) -> None:
        if future.done():  # timed out or cancelled meanwhile: nobody is waiting
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def work() -> None:
        global _stuck
        result: ProbeResult | None = None
        error: BaseException | None = None
        try:
            result = probe_fn(path, max_bytes=max_bytes)
        except BaseException as e:  # handed to the awaiting task, which re-raises it
            error = e
        with _stats_lock:
            call.finished = True
            if call.stuck:
                _stuck -= 1
        with contextlib.suppress(RuntimeError):  # the loop closed while this probe was stuck
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=work, name=f"watchd-probe-{next(_seq)}", daemon=True)
    thread.start()
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        with _stats_lock:
            _timeouts += 1
            if not call.finished:
                call.stuck = True
                _stuck += 1
        raise ProbeError(
            "timeout",
            f"{path.name} could not be checked within {timeout:g} s: reading it is hanging or very "
            "slow; check the share or disk it is on",
        ) from None

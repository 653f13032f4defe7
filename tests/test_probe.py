"""watchd.probe: real files generated with watchd.media and PyAV; the timeout path with an
injected probe function that blocks on an Event."""

from __future__ import annotations

import asyncio
import os
import random
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

import watchd.probe as probe_mod
from watchd.media import make_sample_video
from watchd.probe import (
    DEFAULT_MAX_BYTES,
    ProbeError,
    ProbeResult,
    probe,
    probe_file,
    probe_timeouts,
    stuck_probes,
)

W, H = 320, 180


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("probe-samples")
    out = {}
    for name, kwargs in {
        "ep.mp4": {},
        "fast.mp4": {"faststart": True},
        "ep.mov": {},
        "ep.mkv": {},
        "ep.webm": {},
        "ep.avi": {},
        "ep.mpg": {},
        "ep.flv": {},
        "silent.mp4": {"audio": False},
    }.items():
        path = root / name
        make_sample_video(path, seconds=8.0, width=W, height=H, fps=25, **kwargs)  # type: ignore[arg-type]
        out[name] = path
    return out


def _noise(n: int) -> bytes:
    """Random-looking bytes, the same on every run (seeded by the length)."""
    return random.Random(n).randbytes(n)


def _fail(path: Path, **kwargs: int) -> ProbeError:
    with pytest.raises(ProbeError) as info:
        probe_file(path, **kwargs)
    return info.value


def _head(src: Path, dst: Path, fraction: float) -> Path:
    """The first ``fraction`` of a file: what an interrupted copy leaves behind."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _encode_pictures(
    out: OutputContainer, stream: VideoStream, count: int, fill: Callable[[int, int], bytes]
) -> None:
    """Encode ``count`` pictures; ``fill(i, n)`` gives the ``n`` bytes of each plane of ``i``."""
    rate = Fraction(stream.codec_context.framerate or 25)
    for i in range(count):
        frame = av.VideoFrame(stream.width, stream.height, "yuv420p")
        for plane in frame.planes:
            plane.update(fill(i, plane.buffer_size))
        frame.pts, frame.time_base = i, 1 / rate
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _encode_silence(out: OutputContainer, stream: AudioStream, seconds: float) -> None:
    for k in range(int(seconds * 48000) // 1024):
        sound = av.AudioFrame(format="s16", layout="mono", samples=1024)
        sound.sample_rate, sound.pts = 48000, k * 1024
        sound.planes[0].update(bytes(2048))
        out.mux(stream.encode(sound))
    out.mux(stream.encode(None))


def _grey(i: int, n: int) -> bytes:
    return bytes([i * 7 % 256]) * n


def _read_bytes_so_far() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# ---- valid inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "container", "content_type", "video", "audio"),
    [
        ("ep.mp4", "mp4", "video/mp4", "h264", "aac"),
        ("fast.mp4", "mp4", "video/mp4", "h264", "aac"),
        ("ep.mov", "mov", "video/quicktime", "h264", "aac"),
        ("ep.mkv", "mkv", "video/x-matroska", "h264", "aac"),
        ("ep.webm", "webm", "video/webm", "vp8", "opus"),
        ("ep.avi", "avi", "video/x-msvideo", "mpeg4", "mp2"),
        ("ep.mpg", "mpeg", "video/mpeg", "mpeg2video", "mp2"),
        ("ep.flv", "flv", "video/x-flv", "h264", "aac"),
    ],
)
def test_valid_videos_are_described(
    samples: dict[str, Path], name: str, container: str, content_type: str, video: str, audio: str
) -> None:
    result = probe_file(samples[name])
    assert result == ProbeResult(
        duration=result.duration,
        content_type=content_type,
        container=container,
        video_codec=video,
        audio_codec=audio,
        width=W,
        height=H,
        has_audio=True,
    )
    assert result.duration == pytest.approx(8.0, abs=0.1)


def test_video_without_audio(samples: dict[str, Path]) -> None:
    result = probe_file(samples["silent.mp4"])
    assert (result.has_audio, result.audio_codec) == (False, None)


def test_result_is_frozen(samples: dict[str, Path]) -> None:
    result = probe_file(samples["ep.mp4"])
    with pytest.raises(AttributeError):
        result.duration = 1.0  # type: ignore[misc]


def test_extension_case_does_not_matter(samples: dict[str, Path], tmp_path: Path) -> None:
    upper = tmp_path / "EP12.MP4"
    upper.write_bytes(samples["ep.mp4"].read_bytes())
    assert probe_file(upper).content_type == "video/mp4"


def test_content_type_follows_the_content_not_the_name(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    renamed = tmp_path / "really-matroska.mp4"
    renamed.write_bytes(samples["ep.mkv"].read_bytes())
    result = probe_file(renamed)
    assert (result.container, result.content_type) == ("mkv", "video/x-matroska")


def test_live_matroska_without_a_duration_is_measured(tmp_path: Path) -> None:
    # Written as a live stream: unknown segment size, no duration anywhere in the header.
    path = tmp_path / "live.mkv"
    with av.open(str(path), "w", format="matroska", options={"live": "1"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        _encode_pictures(out, stream, 30, _grey)
    with av.open(str(path)) as c:
        assert c.duration is None
    assert probe_file(path).duration == pytest.approx(3.0, abs=0.15)


def test_audio_longer_than_video_is_not_called_truncated(tmp_path: Path) -> None:
    # Common in real exports: the sound runs on a little after the last picture.
    path = tmp_path / "longer-sound.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        video = out.add_stream("libx264", rate=10, options={"x264-params": "keyint=10"})
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        _encode_pictures(out, video, 50, _grey)  # 5 s of pictures
        _encode_silence(out, audio, 6.0)
    result = probe_file(path)
    assert result.duration == pytest.approx(6.0, abs=0.1)


# ---- size checks ---------------------------------------------------------------------------------


def test_zero_bytes(tmp_path: Path) -> None:
    (tmp_path / "ep12.mp4").write_bytes(b"")
    err = _fail(tmp_path / "ep12.mp4")
    assert err.code == "empty"
    assert err.message == "ep12.mp4 is 0 bytes: the copy probably failed"


def test_sparse_file_over_the_limit_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "ep12.mp4"
    with path.open("wb") as f:
        f.truncate(5_100_000_000)  # sparse: no disk used
    err = _fail(path)
    assert err.code == "too_large"
    assert err.message == "ep12.mp4 is 5.1 GB, over Carmic's 5 GB limit"
    assert DEFAULT_MAX_BYTES == 5_000_000_000


def test_limit_is_configurable_and_close_sizes_are_shown_in_bytes(
    samples: dict[str, Path],
) -> None:
    size = samples["ep.mp4"].stat().st_size
    err = _fail(samples["ep.mp4"], max_bytes=size - 1)
    assert err.code == "too_large"
    assert f"{size:,} bytes" in err.message and f"{size - 1:,} bytes" in err.message
    assert probe_file(samples["ep.mp4"], max_bytes=size).container == "mp4"


def test_size_checks_come_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.mp4"
    with path.open("wb") as f:
        f.truncate(6_200_000_000)
    before = _read_bytes_so_far()
    assert _fail(path).message.startswith("huge.mp4 is 6.2 GB, over")
    assert _read_bytes_so_far() - before < 64 * 1024


# ---- not a video ---------------------------------------------------------------------------------


def test_random_bytes_named_mp4_are_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "ep12.mp4"
    path.write_bytes(_noise(200_000))
    err = _fail(path)
    assert err.code == "not_video"
    assert err.message.startswith("ep12.mp4 is not a readable video")


def test_text_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "error-page.mp4"
    path.write_text("<html><body>403 Forbidden</body></html>\n" * 50)
    assert _fail(path).code == "not_video"


def test_audio_only_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "podcast.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        _encode_silence(out, audio, 1.0)
    err = _fail(path)
    assert err.code == "not_video"
    assert "audio only" in err.message


def test_still_image_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "rgb24"
    ctx.time_base = Fraction(1, 1)
    frame = av.VideoFrame(64, 64, "rgb24")
    frame.planes[0].update(bytes(frame.planes[0].buffer_size))
    frame.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None))
    path = tmp_path / "poster.mp4"
    path.write_bytes(data)
    err = _fail(path)
    assert err.code == "not_video"
    assert "an image, not a video" in err.message


# ---- unsupported ---------------------------------------------------------------------------------


def test_extension_outside_the_accepted_list(samples: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "ep12.wmv"
    path.write_bytes(samples["ep.mp4"].read_bytes())
    err = _fail(path)
    assert err.code == "unsupported"
    assert ".wmv files are not taken" in err.message and ".mp4" in err.message


def test_container_carmic_does_not_take(tmp_path: Path) -> None:
    path = tmp_path / "ep12.avi"  # an accepted name, but the content is ASF (Windows Media)
    with av.open(str(path), "w", format="asf") as out:
        video = out.add_stream("wmv2", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        _encode_pictures(out, video, 10, _grey)
    err = _fail(path)
    assert err.code == "unsupported"
    assert "which Carmic does not take" in err.message


# ---- truncated and damaged -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ep.mp4", "fast.mp4", "ep.mov", "ep.mkv", "ep.webm", "ep.avi"])
@pytest.mark.parametrize("fraction", [0.6, 0.97])
def test_interrupted_copies_are_truncated(
    samples: dict[str, Path], tmp_path: Path, name: str, fraction: float
) -> None:
    part = _head(samples[name], tmp_path / name, fraction)
    err = _fail(part)
    assert err.code == "truncated"
    assert err.message.startswith(f"{name} is truncated: ")
    assert err.message.endswith("; the copy is incomplete or the file is damaged")


def test_mp4_without_its_index_says_so(samples: dict[str, Path], tmp_path: Path) -> None:
    # Written with the index at the end: the first 60% hold media data only.
    err = _fail(_head(samples["ep.mp4"], tmp_path / "ep12.mp4", 0.6))
    assert "'moov' box" in err.message and "missing" in err.message


def test_faststart_mp4_says_how_much_is_there(samples: dict[str, Path], tmp_path: Path) -> None:
    err = _fail(_head(samples["fast.mp4"], tmp_path / "ep12.mp4", 0.6))
    assert "(60% present)" in err.message or "(59% present)" in err.message


@pytest.mark.parametrize("name", ["fast.mp4", "ep.mkv", "ep.webm", "ep.flv"])
def test_missing_end_is_found_by_decoding_too(
    samples: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # Without the container's own length to compare with (as for FLV), the seek to 95% and
    # the decode there must catch the missing end.
    monkeypatch.setattr(probe_mod, "_declared_length_problem", lambda f, family, size: None)
    err = _fail(_head(samples[name], tmp_path / name, 0.6))
    assert err.code == "truncated"
    assert "no decodable frames near the end (at 95% of its length)" in err.message
    assert "the pictures stop at" in err.message


def test_header_of_a_video_followed_by_garbage_is_unreadable(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "ep12.mp4"
    path.write_bytes(samples["ep.mp4"].read_bytes()[:32] + _noise(100_000))
    err = _fail(path)
    assert err.code in ("unreadable", "truncated")


def test_video_whose_pictures_are_all_damaged_is_unreadable(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    # A complete index, but the media data scrambled: nothing decodes.
    data = bytearray(samples["fast.mp4"].read_bytes())
    media = data.index(b"mdat") + 4
    data[media:] = _noise(len(data) - media)
    path = tmp_path / "ep12.mp4"
    path.write_bytes(bytes(data))
    err = _fail(path)
    assert err.code == "unreadable"
    assert err.message.startswith("ep12.mp4 is damaged: no picture could be decoded")


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    err = _fail(tmp_path / "gone.mp4")
    assert err.code == "unreadable"
    assert "moved or deleted" in err.message


def test_directory_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "folder.mp4").mkdir()
    err = _fail(tmp_path / "folder.mp4")
    assert err.code == "unreadable"
    assert "not a regular file" in err.message


def test_links_and_fifos_are_never_opened(tmp_path: Path) -> None:
    (tmp_path / "secret.mp4").symlink_to("/etc/passwd")
    os.mkfifo(tmp_path / "pipe.mp4")
    for name in ("secret.mp4", "pipe.mp4"):
        err = _fail(tmp_path / name)
        assert err.code == "unreadable"
        assert "not a regular file" in err.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_file_without_read_permission_is_unreadable(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "locked.mp4"
    path.write_bytes(samples["ep.mp4"].read_bytes())
    path.chmod(0)
    err = _fail(path)
    assert err.code == "unreadable"
    assert "permission" in err.message


# ---- cost ----------------------------------------------------------------------------------------


def test_reads_a_few_hundred_kilobytes_of_a_large_file(tmp_path: Path) -> None:
    # 300 frames of noise at a high bitrate: a 30 MB MP4, index at the end.
    path = tmp_path / "noise.mp4"
    rng = random.Random(0)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("mpeg4", rate=25)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.bit_rate = 50_000_000
        video.codec_context.gop_size = 25
        _encode_pictures(out, video, 300, lambda i, n: rng.randbytes(n))
    size = path.stat().st_size
    assert size > 20_000_000
    before = _read_bytes_so_far()
    assert probe_file(path).duration == pytest.approx(12.0, abs=0.1)
    assert _read_bytes_so_far() - before < 2_000_000


# ---- probe(): off the loop, under a timeout ------------------------------------------------------


async def test_probe_runs_probe_file_in_a_thread(samples: dict[str, Path]) -> None:
    result = await probe(samples["ep.mkv"], timeout=30.0)
    assert result.container == "mkv"


async def test_probe_passes_errors_through(tmp_path: Path) -> None:
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(ProbeError) as info:
        await probe(tmp_path / "e.mp4", timeout=30.0)
    assert info.value.code == "empty"


async def test_probe_passes_max_bytes_through(samples: dict[str, Path]) -> None:
    with pytest.raises(ProbeError) as info:
        await probe(samples["ep.mp4"], timeout=30.0, max_bytes=10)
    assert info.value.code == "too_large"


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An Event a fake probe blocks on; always released at the end so no thread is left."""
    event = threading.Event()
    yield event
    event.set()


def _probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("watchd-probe-")]


async def test_a_hung_read_times_out_and_is_counted_as_stuck(
    tmp_path: Path, gate: threading.Event
) -> None:
    calls: list[tuple[Path, int]] = []

    def hung(path: Path, *, max_bytes: int) -> ProbeResult:
        calls.append((path, max_bytes))
        gate.wait(30)  # a read from a share that stopped answering
        raise ProbeError("unreadable", "released")

    stuck_before, timeouts_before = stuck_probes(), probe_timeouts()
    with pytest.raises(ProbeError) as info:
        await probe(tmp_path / "ep12.mp4", timeout=0.05, max_bytes=123, probe_fn=hung)
    assert info.value.code == "timeout"
    assert info.value.message.startswith("ep12.mp4 could not be checked within 0.05 s")
    assert calls == [(tmp_path / "ep12.mp4", 123)]
    assert stuck_probes() == stuck_before + 1
    assert probe_timeouts() == timeouts_before + 1
    threads = _probe_threads()
    assert threads and all(t.daemon for t in threads)

    gate.set()  # the share answers again: the thread finishes and is no longer stuck
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert stuck_probes() == stuck_before
    assert probe_timeouts() == timeouts_before + 1
    await asyncio.sleep(0)  # the late result is dropped without complaint


async def test_the_loop_stays_responsive_while_a_probe_hangs(
    tmp_path: Path, gate: threading.Event
) -> None:
    def hung(path: Path, *, max_bytes: int) -> ProbeResult:
        gate.wait(30)
        raise ProbeError("unreadable", "released")

    task = asyncio.create_task(probe(tmp_path / "a.mp4", timeout=10.0, probe_fn=hung))
    ticks = 0
    for _ in range(5):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 5 and not task.done()
    gate.set()
    with pytest.raises(ProbeError, match="released"):
        await task


async def test_a_cancelled_probe_leaves_no_pending_result(
    tmp_path: Path, gate: threading.Event
) -> None:
    def hung(path: Path, *, max_bytes: int) -> ProbeResult:
        gate.wait(30)
        raise ProbeError("unreadable", "released")

    stuck_before = stuck_probes()
    task = asyncio.create_task(probe(tmp_path / "a.mp4", timeout=10.0, probe_fn=hung))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    for t in _probe_threads():
        t.join(5)
    assert stuck_probes() == stuck_before


async def test_probes_run_concurrently(tmp_path: Path) -> None:
    started = threading.Barrier(3, timeout=5)

    def meet(path: Path, *, max_bytes: int) -> ProbeResult:
        started.wait()  # all three must be running at once to pass
        return ProbeResult(1.0, "video/mp4", "mp4", "h264", None, 2, 2, False)

    results = await asyncio.gather(
        *(probe(tmp_path / f"{i}.mp4", timeout=10.0, probe_fn=meet) for i in range(3))
    )
    assert [r.duration for r in results] == [1.0, 1.0, 1.0]


def test_probe_error_repr_and_str() -> None:
    err = ProbeError("empty", "x.mp4 is 0 bytes")
    assert str(err) == "x.mp4 is 0 bytes"
    assert repr(err) == "ProbeError('empty', 'x.mp4 is 0 bytes')"


@pytest.mark.parametrize("seed", [37, 53, 68])  # bytes FFmpeg's raw H.263 probe takes for video
def test_random_bytes_ffmpeg_guesses_as_a_bare_stream_are_not_a_video(
    tmp_path: Path, seed: int
) -> None:
    import random

    path = tmp_path / "noise.mp4"
    path.write_bytes(random.Random(seed).randbytes(200_000))
    err = _fail(path)
    assert err.code == "not_video"
    assert "is not a readable video" in err.message and "Only video files" not in err.message


def test_random_bytes_are_never_anything_but_not_a_readable_video(tmp_path: Path) -> None:
    # FFmpeg's probes guess at bytes with no header (raw H.263, an audio stream with no
    # frames, ...): whatever it guesses, a person is told one thing.
    import random

    path = tmp_path / "noise.mp4"
    for seed in range(120):
        path.write_bytes(random.Random(seed).randbytes(100_000))
        err = _fail(path)
        assert err.code == "not_video", (seed, err.message)
        assert "is not a readable video" in err.message, (seed, err.message)

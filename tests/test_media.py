"""watchd.media: generated samples, clip cutting, thumbnails, inspection (real PyAV, no mocks)."""

from __future__ import annotations

import random
from pathlib import Path

import av
import pytest

from watchd.media import (
    MediaError,
    cut_clip,
    is_playable,
    make_sample_video,
    media_info,
    synthetic_clip,
    thumbnail_jpeg,
)
from watchd.media import _wrap as wrap


def _noise(n: int) -> bytes:
    """Random-looking bytes, the same on every run."""
    return random.Random(n).randbytes(n)


# Small pictures keep the suite fast; the encoders and containers are the same at any size.
W, H = 320, 180


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 6 s sample per container, generated once for the module."""
    root = tmp_path_factory.mktemp("samples")
    out = {}
    for suffix in ("mp4", "mov", "mkv", "webm", "avi", "mpg", "flv"):
        path = root / f"sample.{suffix}"
        make_sample_video(path, seconds=6.0, width=W, height=H, fps=25)
        out[suffix] = path
    return out


def _codecs(info: dict[str, object]) -> list[str]:
    return [s["codec"] for s in info["streams"]]  # type: ignore[attr-defined]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---- make_sample_video ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "video", "audio"),
    [
        ("mp4", "h264", "aac"),
        ("mov", "h264", "aac"),
        ("mkv", "h264", "aac"),
        ("flv", "h264", "aac"),
        ("webm", "vp8", "opus"),
        ("avi", "mpeg4", "mp2"),
        ("mpg", "mpeg2video", "mp2"),
    ],
)
def test_sample_per_container_is_playable_with_video_and_audio(
    samples: dict[str, Path], suffix: str, video: str, audio: str
) -> None:
    info = media_info(samples[suffix])
    assert is_playable(samples[suffix])
    assert _codecs(info) == [video, audio]
    assert info["duration"] == pytest.approx(6.0, abs=0.15)
    assert info["video_frames"] == 150
    assert info["audio_frames"] > 0
    assert info["decode_errors"] == 0
    vs = info["streams"][0]
    assert (vs["width"], vs["height"]) == (W, H)


@pytest.mark.parametrize("suffix", ["mp4", "mov", "mkv", "webm", "flv", "avi", "mpg"])
def test_sample_has_a_keyframe_every_second(samples: dict[str, Path], suffix: str) -> None:
    keyframes = media_info(samples[suffix])["streams"][0]["keyframes"]
    first = keyframes[0]
    assert len(keyframes) == 6
    assert [round(k - first, 2) for k in keyframes] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_sample_without_audio_has_one_stream(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    make_sample_video(path, seconds=1.0, width=W, height=H, audio=False)
    info = media_info(path)
    assert _codecs(info) == ["h264"]
    assert info["audio_frames"] == 0


def test_faststart_puts_the_index_before_the_media(tmp_path: Path) -> None:
    plain, fast = tmp_path / "plain.mp4", tmp_path / "fast.mp4"
    make_sample_video(plain, seconds=1.0, width=W, height=H)
    make_sample_video(fast, seconds=1.0, width=W, height=H, faststart=True)
    p, f = plain.read_bytes(), fast.read_bytes()
    assert p.index(b"moov") > p.index(b"mdat")
    assert f.index(b"moov") < f.index(b"mdat")


def test_sample_label_is_stored_as_title(tmp_path: Path) -> None:
    path = tmp_path / "labelled.mkv"
    make_sample_video(path, seconds=1.0, width=W, height=H, label="Episode 12")
    with av.open(str(path)) as c:
        assert c.metadata.get("title") == "Episode 12"


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("a.wmv", {}, "unknown video suffix"),
        ("noext", {}, "unknown video suffix"),
        ("a.mp4", {"width": 321}, "even"),
        ("a.mp4", {"height": 8}, "even"),
        ("a.mp4", {"seconds": 0}, "positive"),
        ("a.mp4", {"fps": 0}, "fps"),
        ("a.mpg", {"fps": 10}, "standard frame rate"),
    ],
)
def test_sample_rejects_bad_arguments_and_writes_nothing(
    tmp_path: Path, name: str, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        make_sample_video(tmp_path / name, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_sample_output_leaves_no_temporary_files(tmp_path: Path) -> None:
    make_sample_video(tmp_path / "x.mp4", seconds=0.5, width=W, height=H)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]


def test_sample_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.mp4"
    make_sample_video(path, seconds=0.5, width=W, height=H)
    assert is_playable(path)


def test_fractional_duration_rounds_to_whole_frames(tmp_path: Path) -> None:
    path = tmp_path / "short.mp4"
    make_sample_video(path, seconds=0.5, width=W, height=H, fps=10)
    assert media_info(path)["video_frames"] == 5


# ---- cut_clip ------------------------------------------------------------------------------------


def test_remux_cut_starts_at_the_keyframe_before_start(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    dst = tmp_path / "clip.mp4"
    cut_clip(samples["mp4"], dst, 1.5, 4.2)
    info = media_info(dst)
    assert is_playable(dst)
    assert _codecs(info) == ["h264", "aac"]
    # Copied from the keyframe at 1.0 s: up to one keyframe interval longer than asked.
    assert 4.2 - 1.5 <= info["duration"] <= 4.2 - 1.5 + 1.0 + 0.1
    assert info["first_video_time"] == pytest.approx(0.0, abs=1e-6)
    assert info["streams"][0]["keyframes"][0] == 0.0
    assert info["streams"][0]["width"] == W


def test_remux_cut_on_a_keyframe_is_exact(samples: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "clip.mp4"
    cut_clip(samples["mkv"], dst, 2.0, 4.0)
    info = media_info(dst)
    assert info["duration"] == pytest.approx(2.0, abs=0.1)
    assert info["video_frames"] == pytest.approx(50, abs=2)


def test_remux_keeps_the_source_bytes(samples: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "clip.mp4"
    cut_clip(samples["mp4"], dst, 0.0, 1.0)
    with av.open(str(samples["mp4"])) as a, av.open(str(dst)) as b:
        first_src = next(p for p in a.demux(a.streams.video[0]) if p.size)
        first_dst = next(p for p in b.demux(b.streams.video[0]) if p.size)
        assert bytes(first_src) == bytes(first_dst)


@pytest.mark.parametrize("suffix", ["webm", "avi", "mpg"])
def test_codecs_mp4_cannot_hold_are_reencoded_exactly(
    samples: dict[str, Path], tmp_path: Path, suffix: str
) -> None:
    dst = tmp_path / "clip.mp4"
    cut_clip(samples[suffix], dst, 1.5, 4.0)
    info = media_info(dst)
    assert is_playable(dst)
    assert _codecs(info) == ["h264", "aac"]
    # A re-encode starts at ``start`` itself, whatever the source's keyframes or start offset.
    assert info["duration"] == pytest.approx(2.5, abs=0.1)
    assert info["first_video_time"] == pytest.approx(0.0, abs=0.05)
    first, second = info["streams"][0]["keyframes"][:2]
    assert first <= 0.05 and second - first == pytest.approx(1.0)


def test_vertical_cut_is_a_centre_crop_to_nine_by_sixteen(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    dst = tmp_path / "vertical.mp4"
    cut_clip(samples["mp4"], dst, 0.5, 2.5, vertical=True)
    info = media_info(dst)
    vs = info["streams"][0]
    assert is_playable(dst)
    assert vs["height"] == H
    assert vs["width"] / vs["height"] == pytest.approx(9 / 16, abs=0.02)
    assert vs["width"] % 2 == 0
    assert info["duration"] == pytest.approx(2.0, abs=0.1)


def test_end_past_the_source_is_clamped(samples: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "tail.mp4"
    cut_clip(samples["mp4"], dst, 4.0, 60.0)
    assert media_info(dst)["duration"] == pytest.approx(2.0, abs=0.1)


def test_start_past_the_source_is_an_error(samples: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"cannot start at 9\.0 s"):
        cut_clip(samples["mp4"], tmp_path / "x.mp4", 9.0, 12.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("start", "end"), [(3.0, 3.0), (3.0, 1.0), (-1.0, 2.0)])
def test_empty_or_negative_spans_are_rejected(
    samples: dict[str, Path], tmp_path: Path, start: float, end: float
) -> None:
    with pytest.raises(ValueError, match="invalid span"):
        cut_clip(samples["mp4"], tmp_path / "x.mp4", start, end)


def test_undecodable_source_raises_media_error(tmp_path: Path) -> None:
    src = tmp_path / "garbage.mp4"
    src.write_bytes(_noise(64 * 1024))
    with pytest.raises(MediaError, match=r"cannot read garbage\.mp4"):
        cut_clip(src, tmp_path / "x.mp4", 0.0, 1.0)
    assert not (tmp_path / "x.mp4").exists()
    assert _leftovers(tmp_path) == []


def test_missing_source_raises_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="cannot read"):
        cut_clip(tmp_path / "nope.mp4", tmp_path / "x.mp4", 0.0, 1.0)


def test_audio_only_source_raises_media_error(tmp_path: Path) -> None:
    src = tmp_path / "talk.m4a"
    with av.open(str(src), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000)
        for frame in [av.AudioFrame(format="s16", layout="mono", samples=1024)]:
            frame.sample_rate = 48000
            frame.pts = 0
            frame.planes[0].update(bytes(2048))
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(MediaError, match="no video stream"):
        cut_clip(src, tmp_path / "x.mp4", 0.0, 1.0)


def test_cut_replaces_an_existing_destination(samples: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "clip.mp4"
    dst.write_bytes(b"old")
    cut_clip(samples["mp4"], dst, 0.0, 1.0)
    assert is_playable(dst)
    assert _leftovers(tmp_path) == []


# ---- synthetic_clip ------------------------------------------------------------------------------


def test_synthetic_clip_is_a_small_vertical_mp4(tmp_path: Path) -> None:
    dst = tmp_path / "clip.mp4"
    synthetic_clip(dst, 3.0, label="Clip 1: a long title that has to wrap over several lines")
    info = media_info(dst)
    vs = info["streams"][0]
    assert is_playable(dst)
    assert _codecs(info) == ["h264", "aac"]
    assert (vs["width"], vs["height"], vs["fps"]) == (320, 568, 10.0)
    assert info["duration"] == pytest.approx(3.0, abs=0.1)
    assert dst.read_bytes().index(b"moov") < dst.read_bytes().index(b"mdat")
    with av.open(str(dst)) as c:
        assert c.metadata["title"].startswith("Clip 1")


def test_synthetic_clip_without_label(tmp_path: Path) -> None:
    synthetic_clip(tmp_path / "c.mp4", 0.3)
    assert is_playable(tmp_path / "c.mp4")


# ---- thumbnail_jpeg ------------------------------------------------------------------------------


def _jpeg(path: Path) -> tuple[str, int, int]:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return c.streams.video[0].codec_context.name, frame.width, frame.height


def test_thumbnail_is_a_decodable_jpeg_of_the_source(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    dst = tmp_path / "t.jpg"
    thumbnail_jpeg(samples["mp4"], dst, at=2.3)
    assert dst.read_bytes()[:2] == b"\xff\xd8"
    assert _jpeg(dst) == ("mjpeg", W, H)


def test_thumbnails_at_different_times_differ(samples: dict[str, Path], tmp_path: Path) -> None:
    thumbnail_jpeg(samples["mkv"], tmp_path / "a.jpg", at=0.0)
    thumbnail_jpeg(samples["mkv"], tmp_path / "b.jpg", at=3.0)
    assert (tmp_path / "a.jpg").read_bytes() != (tmp_path / "b.jpg").read_bytes()


def test_thumbnail_past_the_end_uses_the_last_frame(
    samples: dict[str, Path], tmp_path: Path
) -> None:
    thumbnail_jpeg(samples["webm"], tmp_path / "t.jpg", at=100.0)
    assert _jpeg(tmp_path / "t.jpg") == ("mjpeg", W, H)


def test_thumbnail_of_nothing_is_a_placeholder(tmp_path: Path) -> None:
    thumbnail_jpeg(None, tmp_path / "t.jpg")
    assert _jpeg(tmp_path / "t.jpg") == ("mjpeg", 320, 180)


def test_thumbnail_of_garbage_is_a_placeholder(tmp_path: Path) -> None:
    src = tmp_path / "bad.mp4"
    src.write_bytes(_noise(4096))
    thumbnail_jpeg(src, tmp_path / "t.jpg")
    assert _jpeg(tmp_path / "t.jpg") == ("mjpeg", 320, 180)


def test_large_thumbnails_are_scaled_down(tmp_path: Path) -> None:
    src = tmp_path / "big.mp4"
    make_sample_video(src, seconds=0.2, width=1920, height=1080, fps=10, audio=False)
    thumbnail_jpeg(src, tmp_path / "t.jpg")
    assert _jpeg(tmp_path / "t.jpg") == ("mjpeg", 1280, 720)


# ---- is_playable / media_info --------------------------------------------------------------------


def test_truncated_file_is_not_playable(samples: dict[str, Path], tmp_path: Path) -> None:
    data = samples["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert not is_playable(cut)


def test_garbage_and_missing_files_are_not_playable(tmp_path: Path) -> None:
    (tmp_path / "g.mp4").write_bytes(_noise(10_000))
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert not is_playable(tmp_path / "g.mp4")
    assert not is_playable(tmp_path / "empty.mp4")
    assert not is_playable(tmp_path / "missing.mp4")


def test_media_info_describes_streams(samples: dict[str, Path]) -> None:
    info = media_info(samples["mp4"])
    assert info["format"].startswith("mov,mp4")
    assert info["size"] == samples["mp4"].stat().st_size
    video, audio = info["streams"]
    assert video["type"] == "video" and video["fps"] == 25.0
    assert audio["type"] == "audio" and audio["sample_rate"] == 48000 and audio["channels"] == 1
    assert info["last_video_time"] == pytest.approx(5.96, abs=0.01)


def test_media_info_of_garbage_raises(tmp_path: Path) -> None:
    (tmp_path / "g.mp4").write_bytes(_noise(10_000))
    with pytest.raises(MediaError):
        media_info(tmp_path / "g.mp4")


# ---- text wrapping -------------------------------------------------------------------------------


def test_wrap_breaks_on_words_cuts_long_words_and_caps_lines() -> None:
    assert wrap("one two three", 7, 3) == ["one two", "three"]
    assert wrap("abcdefghij", 4, 5) == ["abcd", "efgh", "ij"]
    assert wrap("a b c d e f", 1, 2) == ["a", "b"]
    assert wrap("", 5, 2) == []

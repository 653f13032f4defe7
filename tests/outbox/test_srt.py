"""Word-time frames and SRT cue grouping."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from watchd.carmic.models import Word
from watchd.outbox.srt import (
    format_timestamp,
    looks_source_relative,
    to_clip_relative,
    words_to_srt,
)


def ws(*items: tuple[str, float, float]) -> list[Word]:
    return [Word(t, s, e) for t, s, e in items]


SPEECH = ws(("Hello", 0.2, 0.5), ("there,", 0.6, 0.9), ("friend.", 1.0, 1.6))


# -- frames -------------------------------------------------------------------------------


def test_clip_relative_words_are_kept() -> None:
    out = to_clip_relative(SPEECH, 100.0, 110.0)
    assert out == SPEECH


def test_source_relative_words_are_shifted() -> None:
    shifted = [Word(w.text, w.start + 100, w.end + 100) for w in SPEECH]
    assert looks_source_relative(shifted, 100.0, 110.0)
    out = to_clip_relative(shifted, 100.0, 110.0)
    assert [(w.text, round(w.start, 6), round(w.end, 6)) for w in out] == [
        (w.text, w.start, w.end) for w in SPEECH
    ]


def test_clip_starting_at_zero_is_never_shifted() -> None:
    assert not looks_source_relative(SPEECH, 0.0, 10.0)
    assert to_clip_relative(SPEECH, 0.0, 10.0) == SPEECH


def test_any_word_beyond_the_duration_means_source_relative() -> None:
    # clip [2, 12]: words at 2.5..11.5 fit both frames but the last one only the source's
    words = ws(("a", 2.5, 3.0), ("b", 6.0, 6.5), ("c", 11.0, 11.5))
    assert looks_source_relative(words, 2.0, 12.0)
    out = to_clip_relative(words, 2.0, 12.0)
    assert [round(w.start, 3) for w in out] == [0.5, 4.0, 9.0]


def test_overlapping_frames_tie_is_broken_by_how_speech_fills_the_clip() -> None:
    # clip [2, 12]: every word fits both frames [0, 10] and [2, 12]; clips are cut around
    # speech, so the frame whose edges the words reach more evenly wins.
    late = ws(("a", 5.0, 5.5), ("b", 9.5, 9.9))  # clip frame: 5 s of silence first
    assert looks_source_relative(late, 2.0, 12.0)
    early = ws(("a", 2.1, 2.5), ("b", 7.5, 8.0))  # source frame: 4 s of silence last
    assert not looks_source_relative(early, 2.0, 12.0)
    even = ws(("a", 2.1, 2.5), ("b", 9.5, 9.9))  # the same either way: left alone
    assert not looks_source_relative(even, 2.0, 12.0)


def test_words_are_clamped_and_outsiders_dropped() -> None:
    words = ws(
        ("before", -2.0, -1.0),
        ("edge", -0.2, 0.3),
        ("inside", 1.0, 1.5),
        ("over", 9.8, 10.4),
        ("after", 12.0, 12.5),
        ("nan", float("nan"), 1.0),
    )
    # "after" lies beyond the duration but most words fit the clip frame: not shifted.
    out = to_clip_relative(words, 50.0, 60.0)
    assert [(w.text, w.start, w.end) for w in out] == [
        ("edge", 0.0, 0.3),
        ("inside", 1.0, 1.5),
        ("over", 9.8, 10.0),
    ]


def test_empty_or_degenerate_input() -> None:
    assert to_clip_relative([], 0.0, 10.0) == []
    assert to_clip_relative(SPEECH, 10.0, 10.0) == []
    assert to_clip_relative(SPEECH, 10.0, 5.0) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 29, allow_nan=False), st.floats(0.01, 1.0, allow_nan=False)),
        min_size=1,
        max_size=30,
    ),
    st.floats(31, 5000, allow_nan=False),
)
def test_both_frames_give_the_same_clip_relative_words(
    spans: list[tuple[float, float]], clip_start: float
) -> None:
    """When the clip starts after its own duration the frames cannot be confused."""
    duration = 30.0
    rel = [Word(f"w{i}", s, min(s + d, duration)) for i, (s, d) in enumerate(spans)]
    src = [Word(w.text, w.start + clip_start, w.end + clip_start) for w in rel]
    a = to_clip_relative(rel, clip_start, clip_start + duration)
    b = to_clip_relative(src, clip_start, clip_start + duration)
    # float noise may reorder words that start together: compare them by name
    a.sort(key=lambda w: w.text)
    b.sort(key=lambda w: w.text)
    assert [w.text for w in a] == [w.text for w in b]
    for x, y in zip(a, b, strict=True):
        assert abs(x.start - y.start) < 1e-6 and abs(x.end - y.end) < 1e-6
        assert 0 <= x.start <= x.end <= duration


# -- SRT ------------------------------------------------------------------------------------


def test_timestamp_format() -> None:
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(1.2345) == "00:00:01,234"
    assert format_timestamp(1.2346) == "00:00:01,235"
    assert format_timestamp(3661.5) == "01:01:01,500"
    assert format_timestamp(59.9999) == "00:01:00,000"
    assert format_timestamp(-1) == "00:00:00,000"
    assert format_timestamp(100 * 3600) == "100:00:00,000"


def test_empty_transcript_gives_empty_text() -> None:
    assert words_to_srt([]) == ""
    assert words_to_srt(ws(("", 0, 1), ("  ", 1, 2))) == ""


def test_sentence_punctuation_ends_a_cue() -> None:
    text = words_to_srt(
        ws(("Hello", 0.0, 0.4), ("world.", 0.5, 1.0), ("Next", 1.1, 1.4), ("one", 1.5, 2.0))
    )
    assert text == (
        "1\n00:00:00,000 --> 00:00:01,000\nHello world.\n"
        "\n"
        "2\n00:00:01,100 --> 00:00:02,000\nNext one\n"
    )


def test_word_limit() -> None:
    words = [Word(f"w{i}", i * 0.1, i * 0.1 + 0.05) for i in range(10)]
    text = words_to_srt(words, max_words=4)
    assert [line for line in text.splitlines() if line.startswith("w")] == [
        "w0 w1 w2 w3",
        "w4 w5 w6 w7",
        "w8 w9",
    ]


def test_char_limit_and_long_word() -> None:
    words = ws(("aaaa", 0, 0.1), ("bbbb", 0.1, 0.2), ("c" * 50, 0.2, 0.3), ("dd", 0.3, 0.4))
    text = words_to_srt(words, max_chars=10)
    lines = [ln for ln in text.splitlines() if ln and ln[0] in "abcd"]
    assert lines == ["aaaa bbbb", "c" * 50, "dd"]


def test_time_limit_and_pauses() -> None:
    words = ws(("a", 0.0, 1.0), ("b", 1.0, 2.0), ("c", 2.0, 3.5), ("d", 6.0, 6.5))
    text = words_to_srt(words, max_seconds=3.0)
    assert "1\n00:00:00,000 --> 00:00:02,000\na b\n" in text
    assert "2\n00:00:02,000 --> 00:00:03,500\nc\n" in text
    assert "3\n00:00:06,000 --> 00:00:06,500\nd\n" in text


def test_clause_punctuation_breaks_a_half_full_cue() -> None:
    words = ws(("one", 0, 0.2), ("two", 0.2, 0.4), ("three,", 0.4, 0.6), ("four", 0.6, 0.8))
    assert words_to_srt(words, max_words=6).count("-->") == 2
    words = ws(("one,", 0, 0.2), ("two", 0.2, 0.4))
    assert words_to_srt(words, max_words=6).count("-->") == 1


def test_detached_punctuation_is_glued() -> None:
    text = words_to_srt(ws(("Hi", 0, 0.3), (",", 0.3, 0.3), ("you", 0.4, 0.6), ("!", 0.6, 0.6)))
    assert "Hi, you!" in text


def test_zero_length_words_get_a_visible_cue_without_overlap() -> None:
    text = words_to_srt(ws(("a.", 1.0, 1.0), ("b.", 1.2, 1.2), ("c.", 5.0, 5.0)))
    assert "00:00:01,000 --> 00:00:01,200\na." in text
    assert "00:00:01,200 --> 00:00:01,700\nb." in text
    assert "00:00:05,000 --> 00:00:05,500\nc." in text


def test_newlines_in_words_stay_on_one_line() -> None:
    text = words_to_srt(ws(("two\nlines", 0, 1), ("\x00x", 1, 2)))
    assert text.splitlines()[2] == "two lines x"


CUE = re.compile(r"^(\d+)\n(\d{2,}:\d{2}:\d{2},\d{3}) --> (\d{2,}:\d{2}:\d{2},\d{3})\n(.+)$")


def _ms(ts: str) -> int:
    h, m, rest = ts.split(":")
    s, ms = rest.split(",")
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.floats(0, 600, allow_nan=False),
            st.floats(0, 5, allow_nan=False),
        ),
        max_size=60,
    )
)
def test_srt_is_well_formed(items: list[tuple[str, float, float]]) -> None:
    text = words_to_srt([Word(t, s, s + d) for t, s, d in items])
    if not text:
        return
    assert text.endswith("\n") and "\r" not in text
    blocks = text[:-1].split("\n\n")
    prev_end = -1
    for n, block in enumerate(blocks, start=1):
        m = CUE.match(block)
        assert m, block
        assert int(m.group(1)) == n
        start, end = _ms(m.group(2)), _ms(m.group(3))
        assert end > start
        assert start >= prev_end - 1  # cues sharing a start may touch by a millisecond
        prev_end = end

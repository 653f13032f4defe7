"""Sanitised names from hostile input: a table of known tricks, then properties."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchd.outbox.names import (
    CLIP_NAME_RESERVE,
    NAME_MAX,
    clip_basename,
    is_reserved,
    numbered,
    sanitize_component,
    sanitize_filename,
    split_ext,
    truncate_utf8,
    unique_name,
    utf8_len,
)

HOSTILE = [
    ("../../etc/passwd", "-..-etc-passwd"),  # one harmless component
    ("..", "untitled"),
    (".", "untitled"),
    ("...", "untitled"),
    ("", "untitled"),
    ("   ", "untitled"),
    ("a/b\\c", "a-b-c"),
    ("CON", "CON_"),
    ("con.txt", "con_.txt"),
    ("Nul.tar.gz", "Nul_.tar.gz"),
    ("lpt9", "lpt9_"),
    ("COM\u00b9", "COM\u00b9_"),
    ("CON .txt", "CON_.txt"),
    ("CONSOLE", "CONSOLE"),
    ("title. . .", "title"),
    ("trailing space ", "trailing space"),
    (".hidden", "hidden"),
    ("-rf", "-rf"),
    ("tab\there\nnewline\r", "tab here newline"),
    ("nul\x00byte", "nul byte"),
    ("bell\x07 and del\x7f", "bell and del"),
    ('Part 1: "Intro" <b>bold</b>?*|x', "Part 1- 'Intro' bbold-b-x"),
    ("What's next?", "What's next"),
    ("emoji \U0001f600 ok", "emoji \U0001f600 ok"),
    ("cafe\u0301", "caf\u00e9"),  # NFD in, NFC out
    ("evil\u202egpj.exe", "evilgpj.exe"),
    ("line\u2028sep", "line sep"),
    ("lone \udcff surrogate", "lone surrogate"),
]


@pytest.mark.parametrize(("raw", "want"), HOSTILE)
def test_hostile_names(raw: str, want: str) -> None:
    assert sanitize_component(raw) == want


def test_long_multibyte_title_is_cut_on_a_character() -> None:
    title = "日本語のタイトル" * 20  # 3 bytes a character, 480 bytes
    out = sanitize_component(title)
    assert utf8_len(out) <= NAME_MAX
    assert title.startswith(out)
    assert utf8_len(out) > NAME_MAX - 3


def test_300_byte_title_with_extension_keeps_it() -> None:
    out = sanitize_filename("é" * 150, ".mp4")
    assert out.endswith(".mp4")
    assert utf8_len(out) <= NAME_MAX
    assert out == "é" * 125 + ".mp4"


def test_cut_does_not_split_a_zwj_emoji_or_accents() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    for n in range(1, utf8_len(family) + 3):
        out = truncate_utf8("ab" + family, n)
        assert out in ("", "a", "ab", "ab" + family)
    assert truncate_utf8("xe\u0301\u0301", 3) == "x"
    flags = "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea"  # FR DE
    assert truncate_utf8(flags, 12) == flags[:2]


def test_sanitize_filename_variants() -> None:
    assert sanitize_filename("", ".mp4") == "untitled.mp4"
    assert sanitize_filename("con", ".srt") == "con_.srt"
    assert sanitize_filename("a/b", "mp4") == "a-b.mp4"
    with pytest.raises(ValueError):
        sanitize_filename("x", "." + "a" * 200)


def test_reserved() -> None:
    assert is_reserved("aux")
    assert is_reserved("Com3.log")
    assert not is_reserved("com10")
    assert not is_reserved("aux_")


def test_split_ext() -> None:
    assert split_ext("Title.mp4") == ("Title", ".mp4")
    assert split_ext("v1.5") == ("v1.5", "")
    assert split_ext("Mr. Smith") == ("Mr. Smith", "")
    assert split_ext("noext") == ("noext", "")
    assert split_ext(".bashrc") == (".bashrc", "")


def test_unique_name_numbers_collisions() -> None:
    assert unique_name(set(), "Title.mp4") == "Title.mp4"
    assert unique_name({"Title.mp4"}, "Title.mp4") == "Title (2).mp4"
    assert unique_name({"title.MP4", "Title (2).mp4"}, "Title.mp4") == "Title (3).mp4"
    assert unique_name({"ep12"}, "ep12") == "ep12 (2)"
    assert unique_name({"01 - v1.5"}, "01 - v1.5") == "01 - v1.5 (2)"
    assert unique_name({"a.b"}, "a.b", ext="") == "a.b (2)"
    assert unique_name({"caf\u00e9.mp4"}, "cafe\u0301.mp4") == "cafe\u0301 (2).mp4"


def test_unique_name_reads_a_folder(tmp_path: Path) -> None:
    assert unique_name(tmp_path / "missing", "x.mp4") == "x.mp4"
    (tmp_path / "x.mp4").write_bytes(b"")
    (tmp_path / "x (2).mp4").write_bytes(b"")
    assert unique_name(tmp_path, "x.mp4") == "x (3).mp4"


def test_numbered_keeps_within_the_limit() -> None:
    long = "é" * 125 + ".mp4"
    out = numbered(long, 12)
    assert out.endswith(" (12).mp4")
    assert utf8_len(out) <= NAME_MAX


def test_clip_basename() -> None:
    assert clip_basename(1, "Title") == "01 - Title"
    assert clip_basename(12, "a/b: c?") == "12 - a-b- c"
    assert clip_basename(3, "") == "03 - untitled"
    assert clip_basename(3, " ... ") == "03 - untitled"
    assert clip_basename(4, "CON") == "04 - CON"  # not reserved once prefixed
    assert clip_basename(5, "-") == "05 - -"
    assert clip_basename(100, "x") == "100 - x"
    long = clip_basename(1, "🎬" * 100)
    assert utf8_len(long) <= NAME_MAX - CLIP_NAME_RESERVE
    assert utf8_len(numbered(long + ".mp4", 9999)) <= NAME_MAX


names_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(list("/\\.: \x00\u0301\u200d")),
    max_size=300,
)


@settings(max_examples=400, deadline=None)
@given(names_text)
def test_sanitized_names_are_safe_and_stable(raw: str) -> None:
    out = sanitize_component(raw)
    assert out
    assert "/" not in out and "\\" not in out and "\x00" not in out
    assert not any(unicodedata.category(c) == "Cc" for c in out)
    assert not any(c in '<>:"|?*' for c in out)
    assert out not in (".", "..")
    assert not out.startswith(".")
    assert not out.endswith((".", " "))
    assert utf8_len(out) <= NAME_MAX
    assert not is_reserved(out)
    assert unicodedata.is_normalized("NFC", out)
    assert sanitize_component(out) == out


@settings(max_examples=200, deadline=None)
@given(names_text, st.integers(min_value=8, max_value=300))
def test_small_limits_hold(raw: str, limit: int) -> None:
    out = sanitize_component(raw, max_bytes=limit)
    assert 0 < utf8_len(out) <= limit
    assert sanitize_component(out, max_bytes=limit) == out
    name = sanitize_filename(raw, ".srt", max_bytes=limit)
    assert name.endswith(".srt") and utf8_len(name) <= limit
    assert sanitize_filename(name[:-4], ".srt", max_bytes=limit) == name

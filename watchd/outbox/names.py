"""Names that are safe to create on any share the outbox may live on.

Titles come from the API and folder names from whoever fills the inbox; the outbox may be an
ext4 disk, a Samba share read from Windows, or an SMB mount on a Mac. A sanitised component is
legal on all of them: no path separators, no control characters, nothing Windows forbids or
reserves, no hidden (leading-dot) names, NFC, and at most ``max_bytes`` UTF-8 bytes (ext4 and
most NAS filesystems count bytes, not characters).

Replacements keep titles readable rather than escaping them: ``/ \\ | :`` become ``-``, ``"``
becomes ``'``, ``< > ? *`` are dropped, control characters become spaces.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

NAME_MAX = 255
"""Bytes in one path component on ext4, XFS, Btrfs, ZFS and SMB."""

CLIP_NAME_RESERVE = 16
"""Bytes a clip's base name leaves free for a collision number (`` (9999)``) and an extension."""

_TRANSLATE = {
    ord("/"): "-",
    ord("\\"): "-",
    ord("|"): "-",
    ord(":"): "-",
    ord('"'): "'",
    ord("<"): None,
    ord(">"): None,
    ord("?"): None,
    ord("*"): None,
    # Bidirectional overrides make a name display as something it is not ("evil\u202egpj.exe").
    **{c: None for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)},
    0x2028: " ",
    0x2029: " ",
}

_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{dev}{n}" for dev in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"}
)
_SPACES = re.compile(r" {2,}")
# Characters that belong to the one before them: cutting before one would split what the
# reader sees as a single character (an accent, a skin tone, a flag, a ZWJ emoji sequence).
_JOINERS = frozenset({"\u200d", "\u20e3"})
_EXT = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


def _is_extender(ch: str) -> bool:
    cp = ord(ch)
    return (
        unicodedata.combining(ch) != 0
        or unicodedata.category(ch) in ("Mn", "Me", "Mc")
        or ch in _JOINERS
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # tag characters (subdivision flags)
    )


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` that fits ``max_bytes`` UTF-8 bytes without cutting a
    character, and without separating a character from the marks and joiners that follow it."""
    if max_bytes <= 0:
        return ""
    if len(text.encode("utf-8", "surrogatepass")) <= max_bytes:
        return text
    used = 0
    cut = 0
    for i, ch in enumerate(text):
        used += len(ch.encode("utf-8", "surrogatepass"))
        if used > max_bytes:
            break
        cut = i + 1
    # Back off while the first dropped character would have attached to the kept ones, or the
    # last kept one is a joiner waiting for its partner.
    while cut > 0 and (_is_extender(text[cut]) or text[cut - 1] in _JOINERS):
        cut -= 1
    # A flag is a pair of regional indicators: keep pairs whole.
    run = 0
    while run < cut and _is_regional(text[cut - 1 - run]):
        run += 1
    if run % 2 and cut < len(text) and _is_regional(text[cut]):
        cut -= 1
    return text[:cut]


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    return len(text.encode("utf-8", "surrogatepass"))


def _clean(name: str) -> str:
    out = []
    for ch in unicodedata.normalize("NFC", name).translate(_TRANSLATE):
        cat = unicodedata.category(ch)
        if cat == "Cc":
            out.append(" ")  # tabs and newlines separated words
        elif cat != "Cs":  # lone surrogates (undecodable bytes) cannot be written as UTF-8
            out.append(ch)
    # Dropping characters can leave combinable neighbours (e, ?, U+0301): normalise again.
    text = unicodedata.normalize("NFC", "".join(out))
    return _trim(_SPACES.sub(" ", text))


def _trim(text: str) -> str:
    # Windows drops trailing dots and spaces (the name would not round-trip); a leading dot
    # hides the file and could imitate our own temporary names.
    return text.strip(". ")


def is_reserved(name: str) -> bool:
    """True if Windows reserves ``name`` (``CON``, ``nul.txt``, ``COM1.tar.gz``, any case)."""
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def _fit(stem: str, max_bytes: int) -> str:
    return _trim(truncate_utf8(stem, max_bytes))


def _finish(stem: str, ext: str, max_bytes: int, fallback: str) -> str:
    room = max_bytes - utf8_len(ext)
    stem = _fit(stem, room)
    if not stem:
        stem = _fit(fallback, room) or "_"
    if is_reserved(stem + ext):
        # Windows reserves the part before the first dot: "con.txt" -> "con_.txt".
        head, dot, rest = stem.partition(".")
        stem = _fit(head.rstrip(" ") + "_" + dot + rest, room)
    return stem + ext


def sanitize_component(name: str, *, max_bytes: int = NAME_MAX, fallback: str = "untitled") -> str:
    """``name`` made safe as one path component (a file or folder name) on Linux, SMB and Windows.

    The result is never empty, ``.`` or ``..``, contains no separator, control character or
    NUL, is not a Windows reserved name, does not start with a dot or end with a dot or space,
    is NFC and fits ``max_bytes`` UTF-8 bytes. Sanitising a sanitised name changes nothing.
    """
    if max_bytes < 2:
        raise ValueError("max_bytes must leave room for a name")
    return _finish(_clean(name), "", max_bytes, fallback)


def sanitize_filename(
    name: str, ext: str, *, max_bytes: int = NAME_MAX, fallback: str = "untitled"
) -> str:
    """``name`` + ``ext`` (e.g. ``".mp4"``) as one safe component; when the name is too long
    its end is cut, never the extension."""
    clean_ext = _clean(ext)
    if clean_ext and not clean_ext.startswith("."):
        clean_ext = "." + clean_ext
    if utf8_len(clean_ext) > max_bytes // 2:
        raise ValueError(f"extension too long: {ext!r}")
    return _finish(_clean(name), clean_ext, max_bytes, fallback)


def split_ext(name: str) -> tuple[str, str]:
    """``("Title", ".mp4")`` for ``"Title.mp4"``; a dot followed by anything but a short
    alphanumeric run (``"v1.5"``, ``"Mr. Smith"``) is part of the name, not an extension."""
    stem, dot, tail = name.rpartition(".")
    ext = dot + tail
    if stem and _EXT.match(ext) and not ext[1:].isdigit():
        return stem, ext
    return name, ""


def _key(name: str) -> str:
    # SMB, macOS and Windows compare names without case, and clients write NFC or NFD.
    return unicodedata.normalize("NFC", name).casefold()


def _taken(existing: Iterable[str] | Path) -> set[str]:
    if isinstance(existing, Path):
        try:
            entries: Iterable[str] = os.listdir(existing)
        except FileNotFoundError:
            entries = ()
    else:
        entries = existing
    return {_key(e) for e in entries}


def numbered(name: str, n: int, *, ext: str | None = None, max_bytes: int = NAME_MAX) -> str:
    """``name`` with collision number ``n``: ``"Title (2).mp4"`` (``n == 1`` is ``name``
    itself); the name is shortened if the number would not fit. ``ext`` says which ending of
    ``name`` is its extension (``""`` for none); by default it is guessed (:func:`split_ext`)."""
    if n <= 1:
        return name
    if ext is None:
        stem, ext = split_ext(name)
    elif ext and name.endswith(ext):
        stem = name[: -len(ext)]
    else:
        stem, ext = name, ""
    tag = f" ({n})"
    return _fit(stem, max_bytes - utf8_len(tag) - utf8_len(ext)) + tag + ext


def unique_name(
    existing: Iterable[str] | Path,
    name: str,
    *,
    ext: str | None = None,
    max_bytes: int = NAME_MAX,
) -> str:
    """``name``, or ``"Title (2).mp4"``, ``"Title (3).mp4"``, … — the first that is not in
    ``existing`` (a set of names, or a folder whose entries are read).

    Names are compared as SMB and macOS shares compare them: case-insensitive and NFC. With a
    folder this is advice, not a reservation; reserve with an exclusive create or ``mkdir``.
    """
    taken = _taken(existing)
    n = 1
    while True:
        candidate = numbered(name, n, ext=ext, max_bytes=max_bytes)
        if _key(candidate) not in taken:
            return candidate
        n += 1


def clip_basename(rank: int, title: str, *, fallback: str = "untitled") -> str:
    """``"01 - Title"``: a clip's file name without extension, sanitised, leaving
    :data:`CLIP_NAME_RESERVE` bytes for a collision number and an extension."""
    prefix = f"{rank:02d} - "
    # Sanitised as a whole: the prefix already keeps it from being hidden or reserved.
    name = sanitize_component(prefix + title, max_bytes=NAME_MAX - CLIP_NAME_RESERVE)
    if len(name) <= len(prefix.rstrip(" -")) + 2:  # nothing of the title survived
        name = prefix + fallback
    return name

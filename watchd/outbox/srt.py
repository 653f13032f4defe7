"""SubRip captions from transcript word timings.

The API's reference is loose about the frame of word times: the hydration payload of a clip may
give them relative to the clip or to the whole source video. :func:`to_clip_relative` decides
which and brings them into the clip's frame; :func:`words_to_srt` groups them into cues.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from watchd.carmic.models import Word

TOLERANCE = 0.25
"""Seconds a word may overhang the clip's edges before it counts as outside the clip."""

MIN_CUE_SECONDS = 0.5
"""A cue whose words have no duration still stays on screen this long (unless the next one
starts sooner)."""

MAX_PAUSE = 1.0
"""A silence this long between two words starts a new cue."""

_SENTENCE_END = tuple(".!?…。！？")
_CLAUSE_END = tuple(",;:–—、，；：")
_NO_SPACE_BEFORE = tuple(".,!?;:…)]}%”’»。！？、，；：")


def _finite(words: Iterable[Word]) -> list[Word]:
    return [w for w in words if math.isfinite(w.start) and math.isfinite(w.end)]


def looks_source_relative(words: Sequence[Word], clip_start: float, clip_end: float) -> bool:
    """True if ``words`` seem timed from the start of the source rather than of the clip.

    A clip ``[start, end]`` of duration ``d`` holds clip-relative words in ``[0, d]`` and
    source-relative ones in ``[start, end]``. Words that fit only one of the two decide; when
    both fit (the frames overlap), the frame whose edges the speech fills more evenly wins,
    since clips are cut around speech.
    """
    duration = clip_end - clip_start
    if clip_start <= TOLERANCE or duration <= 0 or not words:
        return False  # the two frames coincide: nothing to shift
    in_clip = sum(1 for w in words if -TOLERANCE <= w.start <= duration + TOLERANCE)
    in_source = sum(1 for w in words if clip_start - TOLERANCE <= w.start <= clip_end + TOLERANCE)
    if in_clip != in_source:
        return in_source > in_clip
    first = min(w.start for w in words)
    last = max(w.end for w in words)
    clip_gap = max(first, duration - last)
    source_gap = max(first - clip_start, clip_end - last)
    # Near-equal gaps are float noise, not evidence: then the words are left as they are.
    return source_gap < clip_gap - 0.05


def to_clip_relative(words: Iterable[Word], clip_start: float, clip_end: float) -> list[Word]:
    """``words`` in the clip's frame, sorted: shifted when they are source-relative, clamped to
    ``[0, duration]``; words outside the clip and words without finite times are dropped."""
    duration = clip_end - clip_start
    usable = _finite(words)
    if duration <= 0 or not usable:
        return []
    shift = clip_start if looks_source_relative(usable, clip_start, clip_end) else 0.0
    out: list[Word] = []
    for w in usable:
        start, end = w.start - shift, max(w.start, w.end) - shift
        if end < 0 or start > duration or (end > start and (end <= 0 or start >= duration)):
            continue  # wholly outside the clip (touching an edge is not inside)
        out.append(Word(w.text, min(max(start, 0.0), duration), min(max(end, 0.0), duration)))
    out.sort(key=lambda w: (w.start, w.end))
    return out


@dataclass
class _Cue:
    start: float
    end: float
    text: str
    words: int


def _clean_text(text: str) -> str:
    # One cue is one line: no newlines, no control characters, no blank line ending the cue.
    cleaned = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return " ".join(cleaned.split())


def _join(line: str, word: str) -> str:
    if not line:
        return word
    if word.startswith(_NO_SPACE_BEFORE):
        return line + word
    return line + " " + word


def _group(
    words: Sequence[Word], *, max_chars: int, max_words: int, max_seconds: float
) -> list[_Cue]:
    cues: list[_Cue] = []
    cur: _Cue | None = None
    for w in words:
        text = _clean_text(w.text)
        if not text:
            continue
        if cur is not None:
            joined = _join(cur.text, text)
            glued = len(joined) == len(cur.text) + len(text)  # punctuation rides along
            full = not glued and (
                len(joined) > max_chars
                or cur.words >= max_words
                or w.end - cur.start > max_seconds
                or w.start - cur.end > MAX_PAUSE
            )
            if not full:
                cur.text = joined
                cur.end = max(cur.end, w.end)
                cur.words += 0 if glued else 1
            else:
                cues.append(cur)
                cur = None
        if cur is None:
            cur = _Cue(w.start, max(w.start, w.end), text, 1)
        if cur.text.endswith(_SENTENCE_END) or (
            cur.text.endswith(_CLAUSE_END)
            and (cur.words * 2 >= max_words or len(cur.text) * 2 >= max_chars)
        ):
            cues.append(cur)
            cur = None
    if cur is not None:
        cues.append(cur)
    return cues


def format_timestamp(seconds: float) -> str:
    """``HH:MM:SS,mmm`` (hours grow past two digits rather than wrap)."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def words_to_srt(
    words: Iterable[Word],
    *,
    max_chars: int = 42,
    max_words: int = 7,
    max_seconds: float = 3.0,
) -> str:
    """SubRip text for clip-relative ``words``: cues numbered from 1, ended by sentence
    punctuation (or clause punctuation once a cue is half full) and by the limits, LF line ends.

    A single word longer than ``max_chars`` gets a cue of its own; words are never split.
    A cue ends no later than the next one starts and lasts at least a millisecond. An empty
    transcript gives ``""`` (write no file).
    """
    ordered = sorted(
        (Word(w.text, max(0.0, w.start), max(0.0, w.end)) for w in _finite(words)),
        key=lambda w: (w.start, w.end),
    )
    cues = _group(ordered, max_chars=max_chars, max_words=max_words, max_seconds=max_seconds)
    blocks = []
    for i, cue in enumerate(cues):
        start_ms = round(cue.start * 1000)
        end_ms = max(round(cue.end * 1000), start_ms + round(MIN_CUE_SECONDS * 1000))
        if i + 1 < len(cues):
            end_ms = min(end_ms, round(cues[i + 1].start * 1000))
        end_ms = max(end_ms, start_ms + 1)
        blocks.append(
            f"{i + 1}\n{format_timestamp(start_ms / 1000)} --> "
            f"{format_timestamp(end_ms / 1000)}\n{cue.text}\n"
        )
    return "\n".join(blocks)

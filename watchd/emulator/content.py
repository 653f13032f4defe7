"""What the "AI" finds: deterministic clips, transcripts, layouts and shots for a project.

Everything is drawn from a generator seeded by the emulator's seed and the project id, so the
same project gets the same clips on every run, and clips always lie inside the source.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

__all__ = ["HOSTILE_TITLES", "ClipPlan", "clip_count", "hostile_title", "plan_clips"]

MAX_CLIPS = 12
_SECONDS_PER_CLIP = 6.0  # a 20 s video gives 3 clips
_MAX_CLIP_SECONDS = 60.0
_WORDS_PER_SECOND = 2.5

_TITLES = (
    "The moment it clicked",
    "Nobody talks about this",
    "The one habit that changed everything",
    "Why most people get this wrong",
    "This surprised everyone in the room",
    "The simplest fix you will ever hear",
    "Stop doing this today",
    "What I wish I knew ten years ago",
    "The question that stopped the show",
    "A story you will not forget",
    "Here is the real secret",
    "The hardest lesson, in one minute",
    "Wait for the punchline",
    "The numbers nobody expected",
)
# Titles a careless client would turn into paths outside its folder, names Windows or SMB
# refuse, or names longer than a file system allows (``Variants.hostile_titles``).
HOSTILE_TITLES = (
    "../../etc/passwd",
    "CON",
    "a/b\\c",
    "tab\tnew\nline\x1b[31m red\x07 bell\x00 nul",
    "Überlänge " + "日本語のタイトル" * 13,  # 324 bytes of UTF-8
    "trailing dots...",
    "trailing spaces and dots . .  ",
    "/absolute/title",
    "..",
    "con",  # the same name as "CON" on a case-insensitive share
    "NUL.txt",
    "C:\\Windows\\System32",
    "\u202eevil\u202c.mp4",
    "",
)
_REASONS = (
    "Strong hook in the first three seconds and a clear payoff.",
    "Emotional peak with laughter; high replay potential.",
    "A contrarian claim that invites comments.",
    "Self-contained story with a surprising twist.",
    "Actionable tip delivered concisely; very shareable.",
    "Quotable line with rising energy in the voice.",
)
_SCRIPT = (
    "so the thing is we tried everything and nothing worked until one day I realised "
    "that the real problem was not the tool it was the habit and once you see that you "
    "cannot unsee it honestly it changed how our whole team works every single week"
)
_WORDS = tuple(_SCRIPT.split())
_LAYOUTS = ("face-track", "fit", "split")


@dataclass(frozen=True)
class ClipPlan:
    """One detected clip, times in seconds of the source."""

    title: str
    start_time: float
    end_time: float
    virality_score: int
    reasoning: str
    words: list[dict[str, Any]]  # source-relative
    layout_timeline: list[dict[str, Any]]  # clip-relative
    spatial_matrix: dict[str, Any]
    shots: list[dict[str, Any]]  # clip-relative, zero-gap contiguous from 0


def clip_count(duration: float) -> int:
    """How many clips a video of ``duration`` seconds yields (1..12)."""
    return max(1, min(MAX_CLIPS, int(duration // _SECONDS_PER_CLIP)))


def _words(rng: random.Random, start: float, end: float) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = []
    n = max(1, int((end - start) * _WORDS_PER_SECOND))
    step = (end - start) / n
    offset = rng.randrange(len(_WORDS))
    for i in range(n):
        w_start = start + i * step
        words.append(
            {
                "word": _WORDS[(offset + i) % len(_WORDS)],
                "start": round(w_start, 3),
                "end": round(min(end, w_start + step * 0.85), 3),
                "confidence": round(rng.uniform(0.85, 0.99), 2),
                "speaker": "A" if (i // 8) % 2 == 0 else "B",
            }
        )
    return words


def _shots(rng: random.Random, length: float) -> list[dict[str, Any]]:
    """Zero-gap contiguous shots covering [0, length]."""
    cuts = sorted({round(rng.uniform(0.2, 0.8) * length, 2) for _ in range(rng.randint(0, 2))})
    bounds = [0.0, *[c for c in cuts if 0 < c < length], round(length, 3)]
    return [
        {
            "start_time": a,
            "end_time": b,
            "layout": _LAYOUTS[i % 2],
            "speaker": "A" if i % 2 == 0 else "B",
        }
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def _spatial_matrix(rng: random.Random, length: float) -> dict[str, Any]:
    frames = []
    samples = max(2, min(20, int(length)))
    for i in range(samples):
        t = round(length * i / (samples - 1), 2)
        frames.append(
            {
                "t": t,
                "faces": [
                    {
                        "speaker": "A",
                        "x": round(rng.uniform(0.25, 0.45), 3),
                        "y": round(rng.uniform(0.2, 0.35), 3),
                        "w": 0.18,
                        "h": 0.32,
                        "confidence": round(rng.uniform(0.8, 0.99), 2),
                    }
                ],
            }
        )
    return {"model": "yolo-face-emulated", "fps": 1, "frames": frames}


def plan_clips(rng: random.Random, span_start: float, span_end: float) -> list[ClipPlan]:
    """Clips inside ``[span_start, span_end]``, best first (by virality score)."""
    span = max(0.0, span_end - span_start)
    if span <= 0.5:
        return []
    n = clip_count(span)
    segment = span / n
    plans: list[ClipPlan] = []
    titles = rng.sample(_TITLES, k=min(n, len(_TITLES)))
    for i in range(n):
        seg_start = span_start + i * segment
        length = min(_MAX_CLIP_SECONDS, segment * rng.uniform(0.55, 0.9))
        slack = max(0.0, segment - length)
        start = math.floor((seg_start + rng.uniform(0, slack)) * 10) / 10
        end = min(span_end, math.floor((start + length) * 10) / 10)
        if end - start < 0.3:
            continue
        clip_len = end - start
        shots = _shots(rng, clip_len)
        plans.append(
            ClipPlan(
                title=titles[i % len(titles)],
                start_time=round(start, 3),
                end_time=round(end, 3),
                virality_score=rng.randint(41, 98),
                reasoning=rng.choice(_REASONS),
                words=_words(rng, start, end),
                layout_timeline=[
                    {
                        "start_time": s["start_time"],
                        "end_time": s["end_time"],
                        "layout": s["layout"],
                    }
                    for s in shots
                ],
                spatial_matrix=_spatial_matrix(rng, clip_len),
                shots=shots,
            )
        )
    plans.sort(key=lambda p: (-p.virality_score, p.start_time))
    return plans


def hostile_title(n: int) -> str:
    """The ``n``-th hostile title (they repeat in turn)."""
    return HOSTILE_TITLES[n % len(HOSTILE_TITLES)]

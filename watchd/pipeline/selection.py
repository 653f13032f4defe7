"""Which clips to render, and how a rule's preset changes a clip's template_config.

Pure functions of their inputs: the pipeline records their answers in the ledger, so a restart
makes the same choices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from watchd.carmic.models import ClipSummary
from watchd.config import Preset, RenderChoice, merge_tables, thaw


def render_choice(value: Any) -> RenderChoice:
    """The stored preset's ``render`` (or the TOML shape) as a :class:`RenderChoice`."""
    return RenderChoice.from_json(value)


def renders(choice: RenderChoice) -> bool:
    return choice.mode != "none"


def rank_clips(clips: Sequence[ClipSummary]) -> list[ClipSummary]:
    """Best score first; ties by position in the source, then id (stable across restarts)."""
    return sorted(clips, key=lambda c: (-c.virality_score, c.start_time, c.id))


def choose_clips(
    clips: Sequence[ClipSummary], rule: RenderChoice
) -> list[tuple[ClipSummary, int, bool]]:
    """Every clip with its rank (1 = best) and whether it is chosen.

    "none" chooses every clip but renders none of them: their captions and NLE exports are
    still delivered, which is what an editor who cuts in their own NLE wants."""
    out: list[tuple[ClipSummary, int, bool]] = []
    chosen = 0
    for rank, clip in enumerate(rank_clips(clips), start=1):
        pick = True
        if rule.mode == "best":
            pick = clip.virality_score >= rule.min_score and (
                rule.max_clips is None or chosen < rule.max_clips
            )
        if pick:
            chosen += 1
        out.append((clip, rank, pick))
    return out


def not_chosen_reason(score: float, rank: int, of: int, rule: RenderChoice) -> str:
    """Why :func:`choose_clips` left out the clip of ``score`` ranked ``rank`` of ``of``."""
    if score < rule.min_score:
        return f"score {score:g} below min_score {rule.min_score:g}"
    return f"beyond max_clips {rule.max_clips}: ranked {rank} of {of} by score"


def manifest_preset(stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resolved preset a job was given (rule keys with its sidecar's on top), as the
    manifest shows it; None when the job never had one (its sidecar could not be read)."""
    if not any(k != "_delivery" for k in stored):
        return None
    return Preset.from_json(stored).to_json()


def apply_preset(
    template_config: Mapping[str, Any],
    *,
    caption_style: str | None,
    template: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], bool]:
    """The clip's template_config with the preset applied, and whether anything changed
    (so the PUT is sent only when it would change something)."""
    merged: dict[str, Any] = thaw(merge_tables(template_config, template or {}))
    if caption_style:
        merged["caption_style"] = caption_style
    return merged, merged != thaw(template_config)

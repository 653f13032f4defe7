import pytest

from watchd.carmic.models import ClipSummary
from watchd.config import RenderChoice
from watchd.pipeline.selection import apply_preset, choose_clips, render_choice, renders


def clip(cid: str, score: float, start: float = 0.0) -> ClipSummary:
    return ClipSummary(
        id=cid, title=cid, start_time=start, end_time=start + 5, virality_score=score
    )


CLIPS = [clip("a", 50, 10), clip("b", 90, 20), clip("c", 70, 30), clip("d", 70, 5)]


def test_all_ranks_by_score_then_position() -> None:
    out = choose_clips(CLIPS, render_choice("all"))
    assert [(c.id, r, p) for c, r, p in out] == [
        ("b", 1, True),
        ("d", 2, True),
        ("c", 3, True),
        ("a", 4, True),
    ]


def test_best_applies_min_score_and_max_clips() -> None:
    out = choose_clips(CLIPS, render_choice({"min_score": 60, "max_clips": 2}))
    assert [c.id for c, _, p in out if p] == ["b", "d"]
    out = choose_clips(CLIPS, render_choice({"min_score": 75}))
    assert [c.id for c, _, p in out if p] == ["b"]


def test_none_chooses_all_but_renders_nothing() -> None:
    rule = render_choice("none")
    assert not renders(rule)
    assert all(p for _, _, p in choose_clips(CLIPS, rule))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", RenderChoice("all")),
        (None, RenderChoice("all")),
        ({"mode": "none"}, RenderChoice("none")),
        ({"mode": "best", "min_score": 10, "max_clips": 3}, RenderChoice("best", 10, 3)),
        ({"max_clips": 1}, RenderChoice("best", 0, 1)),
    ],
)
def test_stored_and_toml_shapes(value: object, expected: RenderChoice) -> None:
    assert render_choice(value) == expected


def test_apply_preset_merges_deeply_and_copies() -> None:
    tc = {"style": {"captionFont": "Arial", "fontSize": 72}, "caption_style": "DEFAULT"}
    out, changed = apply_preset(
        tc, caption_style=None, template={"style": {"captionFont": "Inter", "uppercase": True}}
    )
    assert changed
    assert out["style"] == {"captionFont": "Inter", "fontSize": 72, "uppercase": True}
    assert tc["style"]["captionFont"] == "Arial"


def test_apply_preset_reports_change_only_when_something_changes() -> None:
    tc = {"caption_style": "HORMOZI", "style": {"uppercase": True}}
    same, changed = apply_preset(
        tc, caption_style="HORMOZI", template={"style": {"uppercase": True}}
    )
    assert not changed and same == tc
    new, changed = apply_preset(tc, caption_style="KARAOKE", template=None)
    assert changed and new["caption_style"] == "KARAOKE"


def test_not_chosen_reason_says_which_limit_left_a_clip_out() -> None:
    from watchd.pipeline.selection import not_chosen_reason

    rule = RenderChoice("best", 60, 1)
    picked = {c.id: (rank, p) for c, rank, p in choose_clips(CLIPS, rule)}
    assert picked["a"] == (4, False) and picked["c"][1] is False
    assert not_chosen_reason(50, 4, 4, rule) == "score 50 below min_score 60"
    assert not_chosen_reason(70, 2, 4, rule) == "beyond max_clips 1: ranked 2 of 4 by score"


def test_manifest_preset_is_the_stored_preset_without_the_delivery() -> None:
    from watchd.config import Preset
    from watchd.pipeline.selection import manifest_preset

    stored = {**Preset(caption_style="KARAOKE").to_json(), "_delivery": {"inbox": "/i"}}
    shown = manifest_preset(stored)
    assert shown is not None and shown["caption_style"] == "KARAOKE"
    assert "_delivery" not in shown
    assert manifest_preset({"_delivery": {"inbox": "/i"}}) is None  # the sidecar was unreadable

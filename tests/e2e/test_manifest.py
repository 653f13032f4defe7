"""The manifest records the resolved preset and every clip that was not chosen, and follows the
published JSON Schema (checked for every manifest the end-to-end tests make: see conftest)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.harness import Env


def test_manifest_has_the_resolved_preset_and_the_clips_not_chosen(
    env: Env, sample_videos: list[Path]
) -> None:
    env.write_config(
        {
            "best": {
                "caption_style": "KARAOKE",
                "render": {"max_clips": 1},
                "template": {"style": {"captionFont": "Inter", "fontSize": 60}},
            },
            "strict": {"render": {"min_score": 100}},
        },
        inbox={"language": "en"},
    )
    (env.inbox / "best").mkdir()
    (env.inbox / "best/ep.mp4.toml").write_text(
        'title = "Episode"\n[template.style]\nfontSize = 80\n'
    )
    env.drop(sample_videos[0], "best/ep.mp4")
    env.drop(sample_videos[1], "strict/talk.mp4")
    env.start()
    env.wait_states({"best/ep.mp4": "delivered", "strict/talk.mp4": "delivered"})

    m = env.manifest("best/ep")
    preset = m["preset"]
    assert (preset["caption_style"], preset["language"], preset["title"]) == (
        "KARAOKE",
        "en",
        "Episode",
    )
    assert preset["render"] == {"mode": "best", "min_score": 0, "max_clips": 1}
    # The rule's template with the sidecar's on top.
    assert preset["template"] == {"style": {"captionFont": "Inter", "fontSize": 80}}
    assert len(m["clips"]) == 1
    not_chosen = [s for s in m["skipped"] if s["what"].startswith("clip ")]
    assert not_chosen, m["skipped"]
    assert all(s["reason"].startswith("beyond max_clips 1: ranked ") for s in not_chosen)
    assert {s["clip_id"] for s in not_chosen}.isdisjoint({c["id"] for c in m["clips"]})

    strict = env.manifest("strict/talk")
    assert strict["clips"] == []
    assert strict["skipped"] and all(
        s["reason"].endswith("below min_score 100") for s in strict["skipped"]
    )
    assert env.stop() == 0

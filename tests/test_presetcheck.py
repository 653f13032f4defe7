"""watchd.presetcheck and the config keys the API validates: refused values are config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from watchd.config import ConfigError, Preset, parse_config
from watchd.presetcheck import (
    config_style_problems,
    offline_style_notes,
    preset_style_problem,
    style_problem,
    template_names,
    template_problem,
)


def config(tmp_path: Path, **rule: Any) -> Any:
    (tmp_path / "in").mkdir(exist_ok=True)
    doc = {
        "carmic": {"api_url": "http://127.0.0.1:9/api", "email": "a@b.example"},
        "daemon": {"state_dir": str(tmp_path / "state")},
        "inbox": [
            {
                "path": str(tmp_path / "in"),
                "outbox": str(tmp_path / "out"),
                "caption_style": "DEFAULT",
                "rules": {"podcasts": rule, "plain": {}},
            }
        ],
    }
    return parse_config(doc, env={"WATCHD_CARMIC_PASSWORD": "pw-123456"})


def problems(tmp_path: Path, **rule: Any) -> list[str]:
    with pytest.raises(ConfigError) as e:
        config(tmp_path, **rule)
    return e.value.problems


def test_an_unknown_video_type_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    assert problems(tmp_path, video_type="podcats") == [
        "inbox[0].rules.podcasts.video_type: not a video type the API takes; did you mean "
        '"podcast"? (got string "podcats")'
    ]
    (only,) = problems(tmp_path, video_type="zzz")
    assert '"auto", "podcast"' in only


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ({"style": {"fontSize": 1000}}, "template.style.fontSize: must be between 8 and 400"),
        ({"style": {"linesPerScreen": 9}}, "template.style.linesPerScreen: must be a whole number"),
        ({"audio": {"musicVolume": "loud"}}, "template.audio.musicVolume: must be a number"),
        ({"elements": {"progressBar": {"position": "left"}}}, "progressBar.position: must be one"),
        ({"shots": [{"start_time": 0, "end_time": 5}, {"start_time": 6, "end_time": 9}]}, "gap"),
        ({"b_roll": [{"startTime": 1}]}, "template.b_roll[0].duration: field required"),
    ],
)
def test_template_values_the_api_refuses_are_errors(
    tmp_path: Path, template: dict[str, Any], message: str
) -> None:
    (only,) = problems(tmp_path, template=template)
    assert only.startswith("inbox[0].rules.podcasts.template.") and message in only


def test_template_problem_leaves_the_caption_style_to_the_workspace() -> None:
    assert template_problem({"caption_style": "ACME", "style": {"fontSize": 60}}) is None


def test_style_problem() -> None:
    assert style_problem("HORMOZI", frozenset()) is None
    assert style_problem("ACME", None) is None  # not known: nothing can be said
    assert style_problem("ACME", {"ACME"}) is None
    assert style_problem("HORMOSI", set()) == (
        '"HORMOSI" is neither a built-in caption style nor a template of the workspace; did '
        'you mean "HORMOZI"?'
    )
    assert 'did you mean "Acme Brand"?' in (style_problem("acme brand", {"Acme Brand"}) or "")
    assert "(built in: HORMOZI, DEFAULT" in (style_problem("zzzz", set()) or "")


def test_config_style_problems_name_the_key_once(tmp_path: Path) -> None:
    cfg = config(tmp_path, caption_style="HORMOSI", template={"caption_style": "BRAND"})
    assert config_style_problems(cfg, {"BRAND"}) == [
        'inbox[0].rules.podcasts.caption_style: "HORMOSI" is neither a built-in caption style '
        'nor a template of the workspace; did you mean "HORMOZI"?'
    ]
    assert len(config_style_problems(cfg, set())) == 2
    assert config_style_problems(cfg, None) == []
    (note, _) = offline_style_notes(cfg)
    assert note.startswith('inbox[0].rules.podcasts.caption_style: "HORMOSI" is not a built-in')


def test_preset_style_problem() -> None:
    preset = Preset(caption_style="HORMOSI").to_json()
    assert (preset_style_problem(preset, set()) or "").startswith('caption_style: "HORMOSI"')
    assert preset_style_problem(preset, None) is None
    inner = Preset(template={"caption_style": "X1"}).to_json()  # type: ignore[arg-type]
    assert (preset_style_problem(inner, set()) or "").startswith("template.caption_style:")


def test_template_names_take_every_name_a_listing_offers() -> None:
    items = [{"id": "t1", "name": "Brand"}, "RAW", {"caption_style": "KARAOKE"}, 3]
    assert template_names(items) == {"t1", "Brand", "RAW", "KARAOKE"}

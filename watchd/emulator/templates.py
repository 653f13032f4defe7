"""The editor's TemplateConfig (§3.5.1): its default, its validation, and the template lists.

``PUT /v1/clips/{id}`` bodies are checked here: enum values, types, numbers in range and
zero-gap contiguous shots. A problem raises :class:`TemplateError` whose message starts with
the field's path (``style.captionPosition: ...``), answered as 422. Missing keys take their
default values, as a schema with defaults would; unknown keys are kept.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CAPTION_STYLES",
    "RATIOS",
    "TemplateError",
    "caption_templates",
    "default_template_config",
    "system_templates",
    "validate_template_config",
]

CAPTION_STYLES = ("HORMOZI", "DEFAULT", "MINIMAL", "IMPACT", "KARAOKE", "BUBBLE", "WHISPER")
RATIOS = ("9_16", "1_1", "4_5", "16_9")
LAYOUT_TYPES = ("face-track", "fit", "split")
CAPTION_POSITIONS = ("top", "middle", "bottom", "custom")
_SHOT_TOLERANCE = 1e-3

_DEFAULT: dict[str, Any] = {
    "layout": {
        "layoutType": "face-track",
        "padding": 0,
        "backgroundBlur": 20,
        "splitTopSpeaker": "A",
        "safeZoneOverlay": False,
        "aiSpeakerSwitch": True,
    },
    "audio": {
        "autoSfxEnabled": False,
        "musicTrack": "none",
        "activeTrack": None,
        "musicVolume": 30,
        "voiceVolume": 100,
        "removePauses": False,
    },
    "elements": {
        "progressBar": {"enabled": False, "color": "#8b5cf6", "position": "bottom"},
        "watermark": {"enabled": False, "imageUrl": "", "opacity": 70},
        "hookTitle": {"enabled": False, "text": "", "durationSec": 3.0},
    },
    "style": {
        "captionFont": "Inter",
        "fontSize": 72,
        "lineHeight": 1.2,
        "strokeThickness": 3,
        "captionColor": "#ffffff",
        "highlightColor": "#FFD700",
        "dropShadow": True,
        "shadowIntensity": 50,
        "uppercase": True,
        "captionPosition": "bottom",
        "yAxisCustomPct": 75,
        "linesPerScreen": 2,
        "animationStyle": "pop",
        "animationIntensity": 50,
        "captionBg": "rgba(0,0,0,0)",
    },
    "b_roll": [],
    "caption_style": "HORMOZI",
}


class TemplateError(ValueError):
    """A TemplateConfig problem; the message begins with the field path."""


def default_template_config(shots: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A fresh copy of the §3.5.1 default (with the clip's ``shots`` when given)."""
    config = copy.deepcopy(_DEFAULT)
    if shots is not None:
        config["shots"] = copy.deepcopy(shots)
    return config


# ---- field checks --------------------------------------------------------------------------------

Check = Callable[[str, Any], None]


def _fail(path: str, message: str) -> None:
    raise TemplateError(f"{path}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def number(lo: float, hi: float, *, integer: bool = False) -> Check:
    """A check: a finite number (not a boolean) in ``[lo, hi]``."""

    def check(path: str, value: Any) -> None:
        if not _is_number(value) or (integer and float(value) != int(value)):
            kind = "a whole number" if integer else "a number"
            _fail(path, f"must be {kind} between {lo:g} and {hi:g}, not {value!r}")
        if not lo <= value <= hi:
            _fail(path, f"must be between {lo:g} and {hi:g}, not {value!r}")

    return check


def boolean(path: str, value: Any) -> None:
    """A check: true or false."""
    if not isinstance(value, bool):
        _fail(path, f"must be true or false, not {value!r}")


def string(path: str, value: Any) -> None:
    """A check: a string."""
    if not isinstance(value, str):
        _fail(path, f"must be a string, not {value!r}")


def one_of(choices: Collection[str]) -> Check:
    """A check: one of ``choices``."""

    def check(path: str, value: Any) -> None:
        if value not in choices:
            _fail(path, f"must be one of {', '.join(choices)}, not {value!r}")

    return check


def lines_per_screen(path: str, value: Any) -> None:
    """A check: 1..6 or "auto"."""
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 6:
        _fail(path, f'must be a whole number between 1 and 6 or "auto", not {value!r}')


def object_or_null(path: str, value: Any) -> None:
    """A check: an object or null."""
    if value is not None and not isinstance(value, dict):
        _fail(path, f"must be an object or null, not {value!r}")


@dataclass(frozen=True)
class _Section:
    fields: Mapping[str, Check | _Section]


_SCHEMA = _Section(
    {
        "layout": _Section(
            {
                "layoutType": one_of(LAYOUT_TYPES),
                "padding": number(0, 200),
                "backgroundBlur": number(0, 100),
                "splitTopSpeaker": string,
                "safeZoneOverlay": boolean,
                "aiSpeakerSwitch": boolean,
            }
        ),
        "audio": _Section(
            {
                "autoSfxEnabled": boolean,
                "musicTrack": string,
                "activeTrack": object_or_null,
                "musicVolume": number(0, 100),
                "voiceVolume": number(0, 200),
                "removePauses": boolean,
            }
        ),
        "elements": _Section(
            {
                "progressBar": _Section(
                    {"enabled": boolean, "color": string, "position": one_of(("top", "bottom"))}
                ),
                "watermark": _Section(
                    {"enabled": boolean, "imageUrl": string, "opacity": number(0, 100)}
                ),
                "hookTitle": _Section(
                    {"enabled": boolean, "text": string, "durationSec": number(0, 60)}
                ),
            }
        ),
        "style": _Section(
            {
                "captionFont": string,
                "fontSize": number(8, 400),
                "lineHeight": number(0.5, 4),
                "strokeThickness": number(0, 50),
                "captionColor": string,
                "highlightColor": string,
                "dropShadow": boolean,
                "shadowIntensity": number(0, 100),
                "uppercase": boolean,
                "captionPosition": one_of(CAPTION_POSITIONS),
                "yAxisCustomPct": number(0, 100),
                "linesPerScreen": lines_per_screen,
                "animationStyle": string,
                "animationIntensity": number(0, 100),
                "captionBg": string,
            }
        ),
    }
)


def _check_section(path: str, section: _Section, value: Any) -> None:
    if not isinstance(value, dict):
        _fail(path, f"must be an object, not {value!r}")
    for name, spec in section.fields.items():
        if name not in value:
            continue
        sub = f"{path}.{name}" if path else name
        if isinstance(spec, _Section):
            _check_section(sub, spec, value[name])
        else:
            spec(sub, value[name])


def _check_b_roll(value: Any) -> None:
    if not isinstance(value, list):
        _fail("b_roll", "must be a list")
    for i, item in enumerate(value):
        path = f"b_roll[{i}]"
        if not isinstance(item, dict):
            _fail(path, "must be an object")
        for name in ("startTime", "duration"):
            if name not in item:
                _fail(f"{path}.{name}", "field required")
        number(0, 86400)(f"{path}.startTime", item["startTime"])
        number(0, 86400)(f"{path}.duration", item["duration"])
        if item["duration"] <= 0:
            _fail(f"{path}.duration", "must be greater than 0")
        for name in ("sourceStart", "sourceDuration"):
            if name in item:
                number(0, 86400)(f"{path}.{name}", item[name])
        for name in ("id", "sourceId", "videoUrl", "thumbnailUrl"):
            if item.get(name) is not None:
                string(f"{path}.{name}", item[name])


def _check_shots(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        _fail("shots", "must be a list")
    previous_end: float | None = None
    for i, shot in enumerate(value):
        path = f"shots[{i}]"
        if not isinstance(shot, dict):
            _fail(path, "must be an object")
        for name in ("start_time", "end_time"):
            if name not in shot:
                _fail(f"{path}.{name}", "field required")
            number(0, 86400)(f"{path}.{name}", shot[name])
        start, end = float(shot["start_time"]), float(shot["end_time"])
        if end <= start:
            _fail(f"{path}.end_time", f"must be after start_time ({start:g}), not {end:g}")
        if previous_end is not None and abs(start - previous_end) > _SHOT_TOLERANCE:
            what = "gap" if start > previous_end else "overlap"
            _fail(
                f"{path}.start_time",
                f"shots must be zero-gap contiguous: {start:g} does not follow the previous "
                f"shot's end_time {previous_end:g} ({what} of {abs(start - previous_end):.3g} s)",
            )
        previous_end = end


def _merge_defaults(default: Any, given: Any) -> Any:
    if isinstance(default, dict) and isinstance(given, dict):
        merged = dict(default)
        for key, value in given.items():
            merged[key] = _merge_defaults(default.get(key), value)
        return merged
    return copy.deepcopy(given)


def validate_template_config(body: Any, *, custom_styles: Collection[str] = ()) -> dict[str, Any]:
    """The stored form of a PUT body (defaults filled in); TemplateError when it is invalid.

    ``caption_style`` must be a preset of §4.3 or the name of a template in ``custom_styles``.
    """
    if not isinstance(body, dict):
        raise TemplateError("body: must be a TemplateConfig object")
    _check_section("", _SCHEMA, body)
    if "b_roll" in body:
        _check_b_roll(body["b_roll"])
    if "shots" in body:
        _check_shots(body["shots"])
    style = body.get("caption_style")
    if style is not None and style not in CAPTION_STYLES and style not in custom_styles:
        choices = ", ".join(CAPTION_STYLES)
        _fail("caption_style", f"must be one of {choices} or a custom template, not {style!r}")
    merged = _merge_defaults(_DEFAULT, body)
    assert isinstance(merged, dict)
    return merged


# ---- template lists ------------------------------------------------------------------------------

_STYLE_LOOKS: dict[str, dict[str, Any]] = {
    "HORMOZI": {"captionFont": "Montserrat", "uppercase": True, "highlightColor": "#FFD700"},
    "DEFAULT": {"captionFont": "Inter", "uppercase": False, "highlightColor": "#FFFFFF"},
    "MINIMAL": {"captionFont": "Inter", "uppercase": False, "dropShadow": False},
    "IMPACT": {"captionFont": "Anton", "uppercase": True, "fontSize": 88},
    "KARAOKE": {"captionFont": "Poppins", "highlightColor": "#22D3EE", "animationStyle": "karaoke"},
    "BUBBLE": {"captionFont": "Nunito", "captionBg": "rgba(0,0,0,0.6)"},
    "WHISPER": {"captionFont": "Inter", "fontSize": 56, "captionColor": "#E5E7EB"},
}


def caption_templates() -> list[dict[str, Any]]:
    """The caption presets of ``GET /v1/projects/caption-templates``."""
    return [
        {"id": name, "name": name.title(), "caption_style": name, "style": _STYLE_LOOKS[name]}
        for name in CAPTION_STYLES
    ]


def system_templates() -> list[dict[str, Any]]:
    """The immutable system templates of ``GET /v1/templates/`` (one per preset and ratio)."""
    out = []
    for ratio in RATIOS:
        for name in ("HORMOZI", "MINIMAL", "KARAOKE"):
            config = default_template_config()
            config["caption_style"] = name
            config["style"].update(_STYLE_LOOKS[name])
            out.append(
                {
                    "id": f"system-{name.lower()}-{ratio}",
                    "name": f"{name.title()} {ratio.replace('_', ':')}",
                    "ratio": ratio,
                    "is_system": True,
                    "caption_style": name,
                    "template_config": config,
                    "preview_url": None,
                }
            )
    return out

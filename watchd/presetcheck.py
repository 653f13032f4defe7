"""Would Carmic take this preset? Answered before anything is paid for.

A typo in a rule costs money when it is found late: a misspelt ``caption_style`` is refused
only by the clip's ``PUT`` (a 422), after the upload and the processing were billed. So the
values the API validates are validated here first, the same way:

- ``caption_style`` (a rule's, or ``template.caption_style``) must be a built-in style or the
  name of one of the workspace's templates (``GET /v1/templates/`` and
  ``GET /v1/projects/caption-templates``). Only the built-ins are known offline; the
  workspace's templates are asked for by ``watchd check``, at the daemon's start, on every
  reload and before a job's project is created.
- ``template`` values are checked against the TemplateConfig schema of the API reference, with
  the validation the bundled emulator applies to a ``PUT /v1/clips/{id}`` body
  (:func:`template_problem`); :mod:`watchd.config` calls it for rules and sidecars.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from watchd.config import CAPTION_STYLES, Config, InboxConfig, key_path, thaw

log = logging.getLogger("watchd.presetcheck")


@dataclass(frozen=True)
class StyleUse:
    """A caption style named by the config, and the key that names it."""

    style: str
    where: str  # the key path: inbox[0].rules.podcasts.caption_style


def template_problem(template: Mapping[str, Any]) -> str | None:
    """Why the API would refuse ``template`` merged into a clip's template_config (the first
    problem, starting with the field's path, such as ``style.fontSize: ...``), or None.

    ``caption_style`` inside it is left to :func:`style_problem`: whether a custom name is a
    template of the workspace is only known online."""
    from watchd.emulator.templates import TemplateError, validate_template_config

    body = {k: v for k, v in thaw(template).items() if k != "caption_style"}
    try:
        validate_template_config(body)
    except TemplateError as e:
        return str(e)
    return None


def suggestion(style: str, known: Iterable[str] = ()) -> str | None:
    """The closest known style name (built-ins first), ignoring case."""
    choices = [*CAPTION_STYLES, *sorted(set(known) - set(CAPTION_STYLES))]
    by_upper = {c.upper(): c for c in reversed(choices)}
    if style.upper() in by_upper:
        return by_upper[style.upper()]
    found = difflib.get_close_matches(style.upper(), list(by_upper), n=1, cutoff=0.6)
    return by_upper[found[0]] if found else None


def style_problem(style: str | None, known: Collection[str] | None) -> str | None:
    """Why ``style`` is not usable, given the workspace's template names ``known`` (None:
    not known, only built-ins can be vouched for and nothing else is reported)."""
    if not style or style in CAPTION_STYLES:
        return None
    if known is None or style in known:
        return None
    hint = suggestion(style, known)
    text = f'"{style}" is neither a built-in caption style nor a template of the workspace'
    text += f'; did you mean "{hint}"?' if hint else f" (built in: {', '.join(CAPTION_STYLES)})"
    return text


def preset_style_problem(preset: Mapping[str, Any], known: Collection[str] | None) -> str | None:
    """:func:`style_problem` for a stored preset (the rule's style and its template's)."""
    template = preset.get("template") or {}
    for key, style in (
        ("caption_style", preset.get("caption_style")),
        ("template.caption_style", template.get("caption_style")),
    ):
        problem = style_problem(style if isinstance(style, str) else None, known)
        if problem:
            return f"{key}: {problem}"
    return None


def _inbox_uses(inbox: InboxConfig) -> Iterator[StyleUse]:
    where = key_path("inbox", inbox.index)
    root = inbox.root_rule.preset
    for rule in sorted(inbox.rules, key=lambda r: r.name):
        base = where if not rule.name else key_path(key_path(where, "rules"), rule.name)
        preset = rule.preset
        inner = preset.template.get("caption_style")
        # A rule that only inherits the inbox's style is reported once, at the inbox.
        if preset.caption_style and (not rule.name or preset.caption_style != root.caption_style):
            yield StyleUse(preset.caption_style, f"{base}.caption_style")
        if isinstance(inner, str) and (
            not rule.name or inner != root.template.get("caption_style")
        ):
            yield StyleUse(inner, f"{base}.template.caption_style")


def styles_in_use(cfg: Config) -> list[StyleUse]:
    """Every caption style the config names, with the key that names it."""
    return [use for inbox in cfg.inboxes for use in _inbox_uses(inbox)]


def custom_styles(cfg: Config) -> list[StyleUse]:
    """The styles that are not built in: only the workspace can say whether they exist."""
    return [use for use in styles_in_use(cfg) if use.style not in CAPTION_STYLES]


def config_style_problems(cfg: Config, known: Collection[str] | None) -> list[str]:
    """One problem per key naming a style the workspace does not have (none when ``known``
    is None: the templates could not be listed)."""
    out = []
    for use in custom_styles(cfg):
        problem = style_problem(use.style, known)
        if problem:
            out.append(f"{use.where}: {problem}")
    return out


def offline_style_notes(cfg: Config) -> list[str]:
    """What ``check --offline`` could not verify about caption styles."""
    out = []
    for use in custom_styles(cfg):
        hint = suggestion(use.style)
        guess = f' (did you mean "{hint}"?)' if hint else ""
        out.append(
            f'{use.where}: "{use.style}" is not a built-in caption style{guess}; whether it is '
            "a template of the workspace was not verified offline"
        )
    return out


def template_names(items: Iterable[Any]) -> set[str]:
    """Every name a template listing offers (the reference leaves the shape open)."""
    names: set[str] = set()
    for item in items:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, Mapping):
            for key in ("name", "id", "key", "value", "caption_style", "slug"):
                value = item.get(key)
                if isinstance(value, str) and value:
                    names.add(value)
    return names


async def workspace_styles(client: Any) -> frozenset[str]:
    """The names of the workspace's caption and custom templates (CarmicError when the
    listing fails)."""
    names = template_names(await client.caption_templates())
    names |= template_names(await client.templates())
    return frozenset(names)

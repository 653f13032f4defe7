"""Live changes to a running emulator: the knobs of ``POST /api/_emulator/config`` and of
``Emulator.update``. Everything is validated before anything changes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from watchd.emulator.core import Core
from watchd.emulator.settings import TIERS, Faults, Timings, Variants, merge
from watchd.emulator.state import Workspace

__all__ = ["LIVE_SETTINGS", "apply_changes"]

# Top-level settings that may change while running (besides faults, variants and timings).
LIVE_SETTINGS = frozenset(
    {
        "access_ttl",
        "refresh_ttl",
        "upload_url_ttl",
        "download_url_ttl",
        "strict_media",
        "store_uploads",
        "auth_rate_limits",
        "creates_per_minute",
        "exports_per_minute",
        "storage_idle_timeout",
        "new_user_tier",
    }
)
_GROUPS: dict[str, type[Any]] = {"faults": Faults, "variants": Variants, "timings": Timings}


def _workspace(core: Core, workspace_id: Any) -> Workspace:
    if workspace_id is None:
        return core.seed_workspace
    ws = core.state.workspaces.get(str(workspace_id))
    if ws is None:
        raise ValueError(f"no workspace {workspace_id!r}")
    return ws


def apply_changes(core: Core, changes: Mapping[str, Any]) -> None:
    """Apply ``{faults, variants, timings: obj or {name: value}, minutes, tier, workspace_id,
    <live setting>: value}``. Raises ValueError (naming the culprit) and then changes nothing.

    ``minutes`` sets the pool and ``tier`` the tier of ``workspace_id`` (default: the seeded
    workspace).
    """
    allowed = LIVE_SETTINGS | set(_GROUPS) | {"minutes", "tier", "workspace_id"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    settings = core.settings
    replaced: dict[str, Any] = {}
    for group, cls in _GROUPS.items():
        value = changes.get(group)
        if value is None:
            continue
        if isinstance(value, cls):
            replaced[group] = value
        elif isinstance(value, Mapping):
            replaced[group] = merge(getattr(settings, group), value)
        else:
            raise ValueError(f"{group} must be an object of settings")
    top = {k: v for k, v in changes.items() if k in LIVE_SETTINGS}
    new_settings = merge(settings, top) if top else settings
    if replaced:
        new_settings = dataclasses.replace(new_settings, **replaced)
    ws = _workspace(core, changes.get("workspace_id"))
    minutes = changes.get("minutes")
    if minutes is not None and (
        isinstance(minutes, bool) or not isinstance(minutes, int) or minutes < 0
    ):
        raise ValueError(f"minutes must be a whole number >= 0, not {minutes!r}")
    tier = changes.get("tier")
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    # Everything checked: now change.
    core.settings = new_settings
    if minutes is not None:
        ws.minutes_left = minutes
    if tier is not None:
        ws.tier = tier

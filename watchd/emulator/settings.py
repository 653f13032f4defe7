"""The emulator's knobs: frozen dataclasses, validated on construction, changeable live.

``Timings`` says how long simulated work takes, ``Faults`` what goes wrong on purpose (all off by
default), ``Variants`` which reading of a loose spot of the reference to serve, and
``EmulatorSettings`` everything else. Live changes go through :func:`merge`, which takes the
values of a JSON body (``POST /api/_emulator/config``) or of ``name=value`` strings (the CLI)
and builds a new, validated instance.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "FAIL_PROJECT_STATUSES",
    "TIERS",
    "TIER_CONCURRENCY",
    "EmulatorSettings",
    "Faults",
    "Timings",
    "Variants",
    "merge",
    "parse_assignment",
]

TIERS = ("FREE", "STANDARD", "PROFESSIONAL", "BUSINESS", "ENTERPRISE")
# Max concurrent processing videos per workspace (§3.3); None is unlimited.
TIER_CONCURRENCY: dict[str, int | None] = {
    "FREE": 1,
    "STANDARD": 1,
    "PROFESSIONAL": 1,
    "BUSINESS": 2,
    "ENTERPRISE": None,
}
FAIL_PROJECT_STATUSES = ("FAILED", "FAILED_NO_SPEECH", "FAILED_CORRUPT_VIDEO", "FAILED_BILLING")


def _rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability between 0 and 1, not {value}")


def _non_negative(name: str, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")


def _one_of(name: str, value: object, allowed: tuple[object, ...]) -> None:
    if value not in allowed:
        choices = ", ".join(str(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, not {value!r}")


@dataclass(frozen=True)
class Timings:
    """How long simulated work takes, in seconds of the emulator's clock.

    0 means "inside the request": ``/process`` returns with the project in CLIPS_READY and
    ``/render`` with the clip RENDERED, which keeps scripted tests fast.
    """

    step: float = 0.0  # each processing status (UPLOADING, TRANSCRIBING, ...) lasts this long
    complete_after: float | None = None  # CLIPS_READY -> COMPLETED after this long; None: never
    clips_lag: float = 0.0  # visual_pipeline_ready turns true this long after CLIPS_READY
    render: float = 0.0  # QUEUED -> RENDERED
    export: float = 0.0  # PENDING -> finished
    keepalive: float = 15.0  # SSE keepalive comment period (real time)
    ticket_ttl: float = 30.0  # SSE ticket validity (§3.12 says 30 s)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _non_negative(f.name, getattr(self, f.name))
        if self.keepalive <= 0:
            raise ValueError("keepalive must be positive")

    def scaled(self, speed: float) -> Timings:
        """These timings run ``speed`` times faster (keepalive and ticket lifetime unchanged)."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        after = None if self.complete_after is None else self.complete_after / speed
        return dataclasses.replace(
            self,
            step=self.step / speed,
            complete_after=after,
            clips_lag=self.clips_lag / speed,
            render=self.render / speed,
            export=self.export / speed,
        )


@dataclass(frozen=True)
class Faults:
    """Failures on purpose. Random ones draw from the emulator's seeded generator."""

    error_rate: float = 0.0  # random 5xx on API calls, before the handler runs
    create_commit_then_fail: float = 0.0  # project created and billed, then 500 or a drop
    commit_fail_mode: str = "random"  # random | 500 | drop
    upload_reset_rate: float = 0.0  # storage PUT: connection reset mid-body, nothing stored
    slow_seconds: float = 0.0  # added latency on every request of both origins
    sse_cut_after: int = 0  # cut SSE streams after this many events (0: never)
    sse_cut_after_seconds: float = 0.0  # ... or after this long (0: never)
    fail_project: str | None = None  # processing ends in this FAILED_* status
    render_fail_rate: float = 0.0  # a render ends FAILED_RENDER with this probability
    render_fail_first: int = 0  # the first N render attempts of each clip fail
    render_fail_clips: int = 0  # every render of the first N clips (by index) of a project fails
    export_fail_rate: float = 0.0  # an export ends FAILED with this probability
    # Export bundles also carry members that try to escape their folder: "../escape.txt",
    # "/abs.txt", a drive letter, a backslash "..", and a symbolic link.
    evil_bundles: bool = False

    def __post_init__(self) -> None:
        for name in ("error_rate", "create_commit_then_fail", "upload_reset_rate"):
            _rate(name, getattr(self, name))
        for name in ("render_fail_rate", "export_fail_rate"):
            _rate(name, getattr(self, name))
        for name in ("slow_seconds", "sse_cut_after", "sse_cut_after_seconds"):
            _non_negative(name, getattr(self, name))
        _non_negative("render_fail_first", self.render_fail_first)
        _non_negative("render_fail_clips", self.render_fail_clips)
        _one_of("commit_fail_mode", self.commit_fail_mode, ("random", "500", "drop"))
        if self.fail_project == "":
            object.__setattr__(self, "fail_project", None)
        if self.fail_project is not None:
            _one_of("fail_project", self.fail_project, FAIL_PROJECT_STATUSES)


@dataclass(frozen=True)
class Variants:
    """Loose spots of the reference, served one way or the other."""

    sse_ticket: str = "data"  # "data": {"data": {"ticket"}}; "bare": {"ticket"} (the Node sample)
    transcript_times: str = "clip"  # word times relative to the clip or to the source video
    export_done_status: str = "COMPLETED"  # the status a finished export ends in
    tier_limit_status: int = 429  # the status of a tier concurrency refusal
    tier_limit_at: str = "create"  # where the tier limit is enforced: create | process
    # Whether /v1/me tells each workspace's tier (and minutes): the reference does not list the
    # fields of a workspace, so a client may have to learn the concurrency limit from refusals.
    me_tier: bool = True
    # Clip titles no file system likes ("../../etc/passwd", "CON", control characters, 300
    # bytes of multibyte text, trailing dots...), handed out in turn across projects.
    hostile_titles: bool = False

    def __post_init__(self) -> None:
        _one_of("sse_ticket", self.sse_ticket, ("data", "bare"))
        _one_of("transcript_times", self.transcript_times, ("clip", "source"))
        _one_of("tier_limit_status", self.tier_limit_status, (429, 402, 403, 409))
        _one_of("tier_limit_at", self.tier_limit_at, ("create", "process"))
        if not self.export_done_status.strip():
            raise ValueError("export_done_status must not be empty")


@dataclass(frozen=True)
class EmulatorSettings:
    """Everything the emulator is started with. Ports 0 pick free ports."""

    host: str = "127.0.0.1"
    port: int = 0
    storage_port: int = 0
    seed_email: str = "demo@carmic.local"
    seed_password: str = field(default="Demo-pass-1", repr=False)
    seed_workspace: str = "Demo"
    tier: str = "PROFESSIONAL"
    minutes: int = 600
    new_user_tier: str | None = None  # tier of users made by /register; None: same as ``tier``
    access_ttl: int = 1800
    refresh_ttl: int = 30 * 86400
    upload_url_ttl: int = 3600
    download_url_ttl: int = 3600
    inspect: bool = False
    data_dir: Path | None = None
    store_uploads: bool = True
    strict_media: bool = True  # an upload PyAV cannot decode ends FAILED_CORRUPT_VIDEO
    storage_idle_timeout: float = 30.0  # a PUT body that stalls this long is refused
    timings: Timings = field(default_factory=Timings)
    faults: Faults = field(default_factory=Faults)
    variants: Variants = field(default_factory=Variants)
    auth_rate_limits: bool = True
    # The reference's per-workspace limits on project creations and NLE exports (0: none, for
    # load tests that measure the client rather than the limits).
    creates_per_minute: int = 5
    exports_per_minute: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of("tier", self.tier, TIERS)
        if self.new_user_tier is not None:
            _one_of("new_user_tier", self.new_user_tier, TIERS)
        for name in ("port", "storage_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be a TCP port (0 picks a free one), not {port}")
        if self.port and self.port == self.storage_port:
            raise ValueError("the API and the storage origin need two different ports")
        for name in ("minutes", "storage_idle_timeout", "creates_per_minute", "exports_per_minute"):
            _non_negative(name, getattr(self, name))
        for name in ("access_ttl", "refresh_ttl", "upload_url_ttl", "download_url_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if "@" not in self.seed_email or not self.seed_password:
            raise ValueError("the seeded user needs an email address and a password")


# ---- live changes ------------------------------------------------------------------------------

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null", "off"})


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` (from JSON or a command line string) as the type ``hint`` names."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        return _coerce(name, options[0], value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{name} must be true or false, not {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{name} must be a number, not {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            raise ValueError(f"{name} must be a number, not {value!r}") from None
        if not isinstance(number, int | float):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if hint is int:
            if float(number) != int(number):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            return int(number)
        return float(number)
    if hint is str:
        if not isinstance(value, str | int):
            raise ValueError(f"{name} must be a string, not {value!r}")
        return str(value)
    if hint is Path:
        return Path(str(value))
    raise ValueError(f"{name} cannot be set this way")


def merge(current: T, changes: Mapping[str, Any]) -> T:
    """A copy of the dataclass ``current`` with ``changes`` applied, coerced and validated.

    Unknown names raise ``ValueError`` naming them, so a typo in a fault knob is loud.
    """
    assert dataclasses.is_dataclass(current) and not isinstance(current, type)
    hints = typing.get_type_hints(type(current))
    names = {f.name for f in dataclasses.fields(current)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"unknown {type(current).__name__} setting(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(names))})"
        )
    coerced = {name: _coerce(name, hints[name], value) for name, value in changes.items()}
    return dataclasses.replace(current, **coerced)


def parse_assignment(text: str) -> tuple[str, str]:
    """``"name=value"`` -> ``("name", "value")`` (for repeatable CLI options)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected name=value, got {text!r}")
    return name.strip(), value.strip()

"""The configuration: TOML in, frozen dataclasses out, every problem named by its key path.

``load_config`` reads the file, checks every key (docs/configuration.md: type, choices, range), the
paths (inboxes exist, outboxes and the state folder can be created, nothing overlaps), finds the
password (:mod:`watchd.secrets`) and returns a :class:`Config`. It never stops at the first
problem: all of them are collected into one :class:`ConfigError`, each prefixed with the key it
is about (``inbox[0].rules.podcasts.caption_styel: unknown key, did you mean caption_style?``),
so one edit fixes one run of ``watchd check``.

Rules map folders to presets. A file takes the rule whose folder is the longest component-wise
prefix of its own folder (``pod`` never matches ``podcasts``); anything else takes the inbox root
rule ``""``, whose keys are the inbox-level ones. A sidecar ``<video file name>.toml`` is merged
on top for that one file (:func:`resolve_preset`): ``template`` tables merge deeply, every other
key replaces. Each rule starts from the inbox-level keys only; rules do not inherit from the rule
of a parent folder.

Validation has no side effects: folders that do not exist yet are checked for creatability, never
created (that is the daemon's job).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import math
import os
import pwd
import re
import ssl
import tomllib
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from watchd.cluster_config import CLUSTER_KEYS as CLUSTER_KEYS  # one of the config's key sets
from watchd.cluster_config import ClusterConfig, check_inbox_names, parse_cluster
from watchd.secrets import Secret, find_password, no_password_message
from watchd.vocabulary import VIDEO_TYPES
from watchd.watching.ignore import is_ignored_dir
from watchd.watching.mounts import fs_type, is_network_type
from watchd.web.settings import WEB_KEYS as WEB_KEYS  # re-exported: the key sets live here
from watchd.web.settings import WebConfig, parse_web

log = logging.getLogger("watchd.config")

DEFAULT_CONFIG_PATH: Final = Path("/etc/carmic-watchd/config.toml")
DEFAULT_API_URL: Final = "https://api.carmic.pro/api"
DEFAULT_STATE_DIR: Final = "/var/lib/carmic-watchd"

# ---- the vocabulary ------------------------------------------------------------------------------

REALTIME_MODES: Final = ("sse", "poll")
SCAN_MODES: Final = ("events", "poll")
ON_SUCCESS: Final = ("move", "keep", "delete")
ON_FAILURE: Final = ("move", "keep")
LOG_FORMATS: Final = ("auto", "text", "json", "journal")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LANGUAGE_MODES: Final = ("single", "multi")
EXPORT_FORMATS: Final = ("premiere", "davinci", "fcpx", "after_effects")
# Carmic's own styles; workspaces may add custom templates, so others pass (check notes them).
CAPTION_STYLES: Final = ("HORMOZI", "DEFAULT", "MINIMAL", "IMPACT", "KARAOKE", "BUBBLE", "WHISPER")
# The reference's own project creation limits (per workspace); above them we would only earn 429s.
API_CREATES_PER_MINUTE: Final = 5
API_EXPORTS_PER_MINUTE: Final = 5
CUSTOM_INSTRUCTIONS_MAX: Final = 2000
MAX_SIDECAR_BYTES: Final = 1 << 20

TOP_KEYS: Final = ("carmic", "daemon", "inbox", "notify", "cluster", "web")
CARMIC_KEYS: Final = (
    "api_url",
    "email",
    "password_file",
    "password",
    "workspace",
    "realtime",
    "poll_seconds",
    "creates_per_minute",
    "exports_per_minute",
    "max_processing",
    "ca_file",
)
DAEMON_KEYS: Final = (
    "state_dir",
    "settle_seconds",
    "scan",
    "rescan_seconds",
    "max_uploads",
    "poll_interval",
    "log_format",
    "log_level",
    "metrics",
    "max_render_retries",
    "hold_seconds",
)
INBOX_KEYS: Final = ("path", "outbox", "on_success", "on_failure", "rules", "name")
RULE_KEYS: Final = (
    "video_type",
    "language",
    "language_mode",
    "enable_multimodal",
    "custom_instructions",
    "caption_style",
    "render",
    "exports",
    "captions",
    "template",
)
SIDECAR_ONLY_KEYS: Final = ("title", "trim_start", "trim_end")
RENDER_KEYS: Final = ("min_score", "max_clips")

# Carmic's TemplateConfig (docs/configuration.md): enums checked where they appear; other keys the
# reference does not list only earn a warning, since the server may know more than it documents.
TEMPLATE_SECTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "layout": (
        "layoutType",
        "padding",
        "backgroundBlur",
        "splitTopSpeaker",
        "safeZoneOverlay",
        "aiSpeakerSwitch",
    ),
    "audio": (
        "autoSfxEnabled",
        "musicTrack",
        "activeTrack",
        "musicVolume",
        "voiceVolume",
        "removePauses",
    ),
    "elements": ("progressBar", "watermark", "hookTitle"),
    "style": (
        "captionFont",
        "fontSize",
        "lineHeight",
        "strokeThickness",
        "captionColor",
        "highlightColor",
        "dropShadow",
        "shadowIntensity",
        "uppercase",
        "captionPosition",
        "yAxisCustomPct",
        "linesPerScreen",
        "animationStyle",
        "animationIntensity",
        "captionBg",
    ),
}
TEMPLATE_KEYS: Final = (*TEMPLATE_SECTIONS, "b_roll", "caption_style", "shots")
LAYOUT_TYPES: Final = ("face-track", "fit", "split")
CAPTION_POSITIONS: Final = ("top", "middle", "bottom", "custom")

# ISO 639-1. A well-formed code missing here is only a warning: the list may lag the standard.
_ISO_639_1_CODES = """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv
    cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht
    hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la
    lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj
    om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv
    sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu"""
ISO_639_1: Final = frozenset(_ISO_639_1_CODES.split())

# Keys whose values are never echoed in a message.
SECRET_KEYS: Final = frozenset({"password"})

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_VIDEO_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
_LANGUAGE = re.compile(r"[a-z]{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_TOML_POSITION = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column (?P<col>\d+)\)$")


# ---- errors --------------------------------------------------------------------------------------


class ConfigError(Exception):
    """The configuration (or a sidecar) is not usable. ``problems`` lists every problem found,
    each starting with the key path (or file) it is about; none ever contains a secret."""

    def __init__(self, problems: Sequence[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        # One line: it goes into log records and manifests, which are line-oriented.
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems: " + "; ".join(self.problems)


# ---- frozen values -------------------------------------------------------------------------------


class FrozenTable(Mapping[str, Any]):
    """A read-only, hashable TOML table (nested tables frozen too, arrays as tuples).

    Copying returns the same object (it cannot change); :func:`thaw` gives plain dicts and lists
    for JSON and for merging."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = {k: freeze(v) for k, v in (data or {}).items()}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenTable({self._data!r})"

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __copy__(self) -> FrozenTable:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenTable:
        return self

    def __reduce__(self) -> tuple[type[FrozenTable], tuple[dict[str, Any]]]:
        return (FrozenTable, (thaw(self),))


def freeze(value: Any) -> Any:
    """``value`` with tables as :class:`FrozenTable` and arrays as tuples, all the way down."""
    if isinstance(value, FrozenTable):
        return value
    if isinstance(value, Mapping):
        return FrozenTable(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`: plain dicts and lists (JSON-ready)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


def merge_tables(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> FrozenTable:
    """``overlay`` over ``base``: nested tables merge, anything else (arrays too) replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        old = merged.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            value = merge_tables(old, value)
        merged[key] = value
    return FrozenTable(merged)


@dataclass(frozen=True)
class RenderChoice:
    """A rule's ``render``: ``all`` clips, ``none``, or the ``best`` by score and count."""

    mode: str
    min_score: float = 0
    max_clips: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("all", "none", "best"):
            raise ValueError(f"render mode must be all, none or best (got {self.mode!r})")

    def to_json(self) -> str | dict[str, Any]:
        """``"all"``, ``"none"`` or ``{"mode": "best", "min_score", "max_clips"}``."""
        if self.mode != "best":
            return self.mode
        return {"mode": "best", "min_score": self.min_score, "max_clips": self.max_clips}

    @classmethod
    def from_json(cls, value: Any) -> RenderChoice:
        """Read :meth:`to_json`'s output (and the TOML shape ``{min_score, max_clips}``)."""
        if value is None:
            return cls("all")
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            mode = str(value.get("mode", "best"))
            if mode != "best":
                return cls(mode)
            max_clips = value.get("max_clips")
            return cls(
                "best",
                float(value.get("min_score") or 0),
                int(max_clips) if max_clips is not None else None,
            )
        raise ValueError(f"render: unsupported value {value!r}")


@dataclass(frozen=True)
class Preset:
    """The resolved rule keys for one file; the ledger stores :meth:`to_json` with the job so a
    job keeps its preset across reloads and restarts. ``language`` ``None`` means "auto"."""

    video_type: str = "auto"
    language: str | None = None
    language_mode: str = "single"
    enable_multimodal: bool = False
    custom_instructions: str = ""
    caption_style: str | None = None
    render: RenderChoice = RenderChoice("all")
    exports: tuple[str, ...] = ()
    captions: bool = True
    template: Mapping[str, Any] = field(default_factory=FrozenTable)
    title: str | None = None
    trim_start: float | None = None
    trim_end: float | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "video_type": self.video_type,
            "language": self.language,
            "language_mode": self.language_mode,
            "enable_multimodal": self.enable_multimodal,
            "custom_instructions": self.custom_instructions,
            "caption_style": self.caption_style,
            "render": self.render.to_json(),
            "exports": list(self.exports),
            "captions": self.captions,
            "template": thaw(self.template),
            "title": self.title,
            "trim_start": self.trim_start,
            "trim_end": self.trim_end,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Preset:
        """Read :meth:`to_json`'s output; missing keys take defaults, unknown keys (such as the
        daemon's ``_delivery``) are ignored, so older ledger rows still load."""
        base = cls()
        return cls(
            video_type=str(d.get("video_type") or base.video_type),
            language=d.get("language"),
            language_mode=str(d.get("language_mode") or base.language_mode),
            enable_multimodal=bool(d.get("enable_multimodal", base.enable_multimodal)),
            custom_instructions=str(d.get("custom_instructions") or ""),
            caption_style=d.get("caption_style"),
            render=RenderChoice.from_json(d.get("render")),
            exports=tuple(d.get("exports") or ()),
            captions=bool(d.get("captions", base.captions)),
            template=FrozenTable(d.get("template") or {}),
            title=d.get("title"),
            trim_start=d.get("trim_start"),
            trim_end=d.get("trim_end"),
        )


@dataclass(frozen=True)
class Rule:
    """A folder's preset. ``name`` is ``""`` for the inbox root, else a relative POSIX folder
    path such as ``podcasts`` or ``clients/acme``."""

    name: str
    preset: Preset


@dataclass(frozen=True)
class InboxConfig:
    """One ``[[inbox]]``: where files arrive, where results go, what happens to the source."""

    index: int
    path: Path
    outbox: Path
    on_success: str
    on_failure: str
    rules: tuple[Rule, ...]  # always holds the root rule ""
    # The inbox's identity in notifications, and across hosts with [cluster] (where it must be
    # given: watchd/cluster_config.py); default: its folder's name.
    name: str = ""

    def rule_for(self, rel_folder: PurePosixPath | str) -> Rule:
        """The rule for files in ``rel_folder`` (relative to the inbox): the rule whose folder
        is the longest component-wise prefix, else the root rule."""
        parts = _relative_parts(rel_folder)
        by_name = {r.name: r for r in self.rules}
        for n in range(len(parts), 0, -1):
            rule = by_name.get("/".join(parts[:n]))
            if rule is not None:
                return rule
        return by_name[""]

    @property
    def root_rule(self) -> Rule:
        """The rule of files directly in the inbox (and in folders without a rule)."""
        return next(r for r in self.rules if r.name == "")


@dataclass(frozen=True)
class CarmicConfig:
    """``[carmic]``: the API, the service user, and how hard we may press."""

    api_url: str
    email: str
    password: Secret | None
    password_source: str
    workspace: str
    realtime: str
    poll_seconds: float
    creates_per_minute: float = 5
    exports_per_minute: float = 5
    max_processing: int = 0  # 0 = from the workspace tier (or learned from the server)
    ca_file: str = ""  # an extra CA bundle; TLS verification stays on

    def require_password(self) -> Secret:
        """The password, or a :class:`ConfigError` naming every source that was looked at."""
        if self.password is None:
            raise ConfigError([f"carmic.password: {no_password_message()}"])
        return self.password


@dataclass(frozen=True)
class DaemonConfig:
    """``[daemon]``: local behaviour."""

    state_dir: Path
    settle_seconds: float
    scan: str
    rescan_seconds: float
    max_uploads: int
    poll_interval: float = 2.0
    log_format: str = "auto"
    log_level: str = "info"
    metrics: str = ""
    max_render_retries: int = 2
    hold_seconds: float = 600.0  # a file that looks incomplete is held this long before it fails


@dataclass(frozen=True)
class Config:
    """The whole validated configuration. ``warnings`` are things worth fixing that do not stop
    the daemon (loose permissions on a secret, an unknown language code, ...)."""

    carmic: CarmicConfig
    daemon: DaemonConfig
    inboxes: tuple[InboxConfig, ...]
    path: Path | None
    warnings: tuple[str, ...] = ()
    notify: tuple[Any, ...] = ()  # watchd.notify.config.NotifierConfig, one per [[notify]]
    cluster: ClusterConfig | None = None  # [cluster] (not run yet: see cluster_config.py)
    web: WebConfig = field(default_factory=WebConfig)


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$WATCHD_CONFIG``, else ``/etc/carmic-watchd/config.toml``."""
    environ = os.environ if env is None else env
    value = environ.get("WATCHD_CONFIG", "")
    return Path(value) if value else DEFAULT_CONFIG_PATH


# ---- reading TOML --------------------------------------------------------------------------------


def read_toml(path: Path, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse ``path``; any failure is a :class:`ConfigError`, syntax errors as ``file:line:col``."""
    try:
        with open(path, "rb") as f:
            raw = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise ConfigError([f"{path}: larger than {max_bytes} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib (3.11) only puts the position into the message: move it to the front.
        m = _TOML_POSITION.match(str(e))
        if m:
            where = f"{path}:{m['line']}:{m['col']}"
            raise ConfigError([f"{where}: TOML syntax error: {m['msg']}"]) from None
        raise ConfigError([f"{path}: TOML syntax error: {e}"]) from None


# ---- collecting problems -------------------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}" if where else message)

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}" if where else message)


def key_path(parent: str, key: str | int) -> str:
    """``parent.key`` in TOML spelling: ``inbox[0]``, ``rules."clients/acme"``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{parent}.{part}" if parent else part


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, datetime | date | time):
        return "date/time"
    return type(value).__name__


def _got(value: Any, *, secret: bool = False) -> str:
    """``(got string "push")``; a secret's value is never shown, only its type."""
    kind = _type_name(value)
    if secret or kind in ("table", "array"):
        return f"(got {kind})"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"(got {kind} {json.dumps(shown, ensure_ascii=False)})"
    return f"(got {kind} {value})"


def _quoted(choices: Iterable[str]) -> str:
    return ", ".join(f'"{c}"' for c in choices)


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class _Table:
    """One TOML table being read: typed getters that record problems under its key path and
    fall back to the default, so that reading goes on and every problem is found."""

    def __init__(
        self,
        data: Mapping[str, Any],
        where: str,
        report: _Report,
    ) -> None:
        self.data = data
        self.where = where
        self.report = report

    def path(self, key: str) -> str:
        return key_path(self.where, key)

    def error(self, key: str, message: str) -> None:
        self.report.error(self.path(key), message)

    def warn(self, key: str, message: str) -> None:
        self.report.warn(self.path(key), message)

    def got(self, key: str) -> str:
        return _got(self.data[key], secret=key in SECRET_KEYS)

    def unknown(self, known: Iterable[str], *, handled: Iterable[str] = ()) -> None:
        """Report keys that are neither ``known`` nor ``handled`` (reported by the caller)."""
        known = list(known)
        skip = set(known) | set(handled)
        for key in self.data:
            if key in skip:
                continue
            hint = _suggest(key, known)
            self.error(key, f"unknown key, did you mean {hint}?" if hint else "unknown key")

    def present(self, key: str) -> bool:
        return key in self.data

    def table(self, key: str) -> _Table | None:
        """The sub-table ``key`` (``None`` when absent or not a table; the latter reported)."""
        if key not in self.data:
            return None
        value = self.data[key]
        if not isinstance(value, Mapping):
            self.error(key, f"must be a table {self.got(key)}")
            return None
        return _Table(value, self.path(key), self.report)

    def string(
        self,
        key: str,
        default: str,
        *,
        required: bool = False,
        nonempty: bool = False,
        max_len: int | None = None,
    ) -> str:
        if key not in self.data:
            if required:
                self.error(key, "is required")
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self.error(key, f"must be a string {self.got(key)}")
            return default
        if (nonempty or required) and not value.strip():
            self.error(key, "must not be empty")
            return default
        if max_len is not None and len(value) > max_len:
            self.error(key, f"must be at most {max_len} characters (got {len(value)})")
            return default
        return value

    def number(
        self,
        key: str,
        default: float,
        *,
        minimum: float | None = None,
        above: float | None = None,
        maximum: float | None = None,
    ) -> float:
        return float(self._numeric(key, default, float, minimum, above, maximum))

    def integer(
        self,
        key: str,
        default: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int:
        return int(self._numeric(key, default, int, minimum, None, maximum))

    def _numeric(
        self,
        key: str,
        default: float,
        kind: type[int] | type[float],
        minimum: float | None,
        above: float | None,
        maximum: float | None,
    ) -> float:
        if key not in self.data:
            return default
        value = self.data[key]
        # bool is an int to Python, never to a config author; an int is a fine float.
        accepted = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, accepted):
            kind_name = "an integer" if kind is int else "a number"
            self.error(key, f"must be {kind_name} {self.got(key)}")
            return default
        shown = _got(value)
        if not math.isfinite(value):
            self.error(key, f"must be a finite number {shown}")
        elif minimum is not None and value < minimum:
            self.error(key, f"must be ≥ {_num(minimum)} {shown}")
        elif above is not None and value <= above:
            self.error(key, f"must be > {_num(above)} {shown}")
        elif maximum is not None and value > maximum:
            self.error(key, f"must be ≤ {_num(maximum)} {shown}")
        else:
            return value
        return default

    def boolean(self, key: str, default: bool) -> bool:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            self.error(key, f"must be a boolean (true or false) {self.got(key)}")
            return default
        return value

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            self.error(key, f"must be a string, one of {_quoted(choices)} {self.got(key)}")
            return default
        if value not in choices:
            self.error(key, f"must be one of {_quoted(choices)} {self.got(key)}")
            return default
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# ---- rule keys -----------------------------------------------------------------------------------


def _rule_values(t: _Table, *, sidecar: bool) -> dict[str, Any]:
    """The rule keys present in ``t``, checked and converted to :class:`Preset` field values.

    Sidecar-only keys are accepted when ``sidecar``, else reported. Unknown keys are left to the
    caller (the allowed set depends on the table)."""
    out: dict[str, Any] = {}
    if t.present("video_type"):
        value = t.string("video_type", "", nonempty=True)
        if value and not _VIDEO_TYPE.fullmatch(value):
            t.error(
                "video_type",
                'must be a word such as "podcast" (letters, digits, - and _) '
                + t.got("video_type"),
            )
        elif value and value not in VIDEO_TYPES:
            hint = _suggest(value.lower(), VIDEO_TYPES)
            known = f'did you mean "{hint}"?' if hint else f"one of {_quoted(VIDEO_TYPES)}"
            t.error("video_type", f"not a video type the API takes; {known} {t.got('video_type')}")
        elif value:
            out["video_type"] = value
    if t.present("language"):
        out.update(_language(t))
    if t.present("language_mode"):
        out["language_mode"] = t.choice("language_mode", "single", LANGUAGE_MODES)
    if t.present("enable_multimodal"):
        out["enable_multimodal"] = t.boolean("enable_multimodal", False)
    if t.present("custom_instructions"):
        out["custom_instructions"] = t.string(
            "custom_instructions", "", max_len=CUSTOM_INSTRUCTIONS_MAX
        )
    if t.present("caption_style"):
        value = t.string("caption_style", "", nonempty=True)
        if value:
            out["caption_style"] = value
    if t.present("render"):
        render = _render(t)
        if render is not None:
            out["render"] = render
    if t.present("exports"):
        exports = _exports(t)
        if exports is not None:
            out["exports"] = exports
    if t.present("captions"):
        out["captions"] = t.boolean("captions", True)
    if t.present("template"):
        template = _template(t)
        if template is not None:
            out["template"] = template
    for key in SIDECAR_ONLY_KEYS:
        if t.present(key) and not sidecar:
            t.error(key, "only allowed in a per-file sidecar (<video file name>.toml)")
    if sidecar:
        if t.present("title"):
            title = t.string("title", "", nonempty=True)
            if title:
                out["title"] = title
        for key in ("trim_start", "trim_end"):
            if t.present(key):
                before = len(t.report.problems)
                seconds = t.number(key, 0.0, minimum=0)
                if len(t.report.problems) == before:
                    out[key] = seconds
    return out


def _language(t: _Table) -> dict[str, Any]:
    value = t.data["language"]
    if not isinstance(value, str):
        t.error("language", f"must be a string {t.got('language')}")
        return {}
    if value == "auto":
        return {"language": None}
    if not _LANGUAGE.fullmatch(value):
        hint = f', did you mean "{value.lower()}"?' if _LANGUAGE.fullmatch(value.lower()) else ""
        t.error(
            "language",
            f'must be a two-letter ISO 639-1 code such as "en", or "auto" {t.got("language")}'
            + hint,
        )
        return {}
    if value not in ISO_639_1:
        t.warn("language", f'"{value}" is not an ISO 639-1 code this version knows')
    return {"language": value}


def _render(t: _Table) -> RenderChoice | None:
    value = t.data["render"]
    if isinstance(value, str):
        if value in ("all", "none"):
            return RenderChoice(value)
        t.error("render", f'must be "all", "none" or {{ min_score, max_clips }} {t.got("render")}')
        return None
    sub = t.table("render")
    if sub is None:
        return None
    sub.unknown(RENDER_KEYS)
    before = len(t.report.problems)
    min_score = sub.number("min_score", 0.0, minimum=0, maximum=100)
    max_clips = sub.integer("max_clips", 0, minimum=1)
    if len(t.report.problems) != before:
        return None
    return RenderChoice("best", min_score, max_clips if sub.present("max_clips") else None)


def _exports(t: _Table) -> tuple[str, ...] | None:
    value = t.data["exports"]
    if not isinstance(value, list):
        t.error("exports", f"must be an array of {_quoted(EXPORT_FORMATS)} {t.got('exports')}")
        return None
    seen: list[str] = []
    ok = True
    for i, item in enumerate(value):
        where = key_path(t.path("exports"), i)
        if not isinstance(item, str) or item not in EXPORT_FORMATS:
            t.report.error(where, f"must be one of {_quoted(EXPORT_FORMATS)} {_got(item)}")
            ok = False
        elif item in seen:
            t.report.error(where, f'"{item}" is listed twice')
            ok = False
        else:
            seen.append(item)
    return tuple(seen) if ok else None


def _template(t: _Table) -> dict[str, Any] | None:
    sub = t.table("template")
    if sub is None:
        return None
    before = len(t.report.problems)
    _json_values(sub.data, sub.where, t.report)
    for key in sub.data:
        if key not in TEMPLATE_KEYS:
            hint = _suggest(key, TEMPLATE_KEYS)
            sub.warn(key, _not_in_reference(hint))
    for section, keys in TEMPLATE_SECTIONS.items():
        part = sub.table(section)
        if part is None:
            continue
        for key in part.data:
            if key not in keys:
                part.warn(key, _not_in_reference(_suggest(key, keys)))
        if section == "layout":
            part.choice("layoutType", "", LAYOUT_TYPES)
        elif section == "style":
            part.choice("captionPosition", "", CAPTION_POSITIONS)
            _lines_per_screen(part)
    if len(t.report.problems) == before:
        from watchd.presetcheck import template_problem

        problem = template_problem(sub.data)
        if problem:
            # The field's path first, as every other problem: template.style.fontSize: ...
            t.report.problems.append(f"{sub.where}.{problem}")
    if len(t.report.problems) != before:
        return None
    return dict(sub.data)


def _not_in_reference(hint: str | None) -> str:
    text = "not a TemplateConfig key the API reference lists (sent as it is)"
    return f"{text}; did you mean {hint}?" if hint else text


def _lines_per_screen(style: _Table) -> None:
    if not style.present("linesPerScreen"):
        return
    value = style.data["linesPerScreen"]
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        shown = style.got("linesPerScreen")
        style.error("linesPerScreen", f'must be an integer ≥ 1 or "auto" {shown}')


def _json_values(value: Any, where: str, report: _Report) -> None:
    """Templates travel as JSON: TOML dates and times have no JSON form, and neither do
    infinities and NaN."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _json_values(v, key_path(where, k), report)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _json_values(v, key_path(where, i), report)
    elif isinstance(value, datetime | date | time):
        report.error(where, "dates and times are not allowed in a template (JSON values only)")
    elif isinstance(value, float) and not math.isfinite(value):
        report.error(where, f"must be a finite number {_got(value)}")


def _layer(base: Preset, values: Mapping[str, Any]) -> Preset:
    """``values`` over ``base``: ``template`` merges deeply, every other key replaces."""
    changes = dict(values)
    if "template" in changes:
        changes["template"] = merge_tables(base.template, changes["template"])
    return replace(base, **changes)


def _check_trim(preset: Preset, report: _Report) -> None:
    start, end = preset.trim_start, preset.trim_end
    if start is not None and end is not None and start >= end:
        report.error("trim_end", f"must be greater than trim_start ({_num(end)} ≤ {_num(start)})")


# ---- rules and folders ---------------------------------------------------------------------------


def _relative_parts(rel: PurePosixPath | str) -> tuple[str, ...]:
    text = unicodedata.normalize("NFC", str(rel))
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"expected a path relative to the inbox, got {str(rel)!r}")
    return path.parts


def _rule_name_problem(name: str) -> str | None:
    """Why ``name`` (already NFC, trailing ``/`` removed) cannot be a rule's folder, or None."""
    if not name:
        return "the inbox root has no rule of its own: put its keys directly under [[inbox]]"
    if name.startswith("/"):
        return "a rule's name is a folder relative to the inbox (no leading /)"
    if "\\" in name:
        return "use / between folders"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return "a rule's folder must not contain empty, . or .. components"
        if part.startswith(("_", ".")):
            return f'"{part}": folders starting with _ or . are never taken as input'
        if is_ignored_dir(part):
            return f'"{part}": that folder is on the ignore list and never taken as input'
    return None


def _rules(inbox: _Table, root: Preset, report: _Report) -> tuple[Rule, ...]:
    rules = [Rule("", root)]
    table = inbox.table("rules")
    if table is None:
        return tuple(rules)
    names: dict[str, str] = {}
    for raw_name, value in table.data.items():
        where = table.path(raw_name)
        if not isinstance(value, Mapping):
            hint = ""
            if raw_name in RULE_KEYS or raw_name in INBOX_KEYS:
                hint = "; inbox-wide defaults go directly under [[inbox]]"
            report.error(
                where,
                f"must be a table [inbox.rules.<folder>] of rule keys {_got(value)}{hint}",
            )
            continue
        name = unicodedata.normalize("NFC", raw_name).rstrip("/")
        problem = _rule_name_problem(name)
        if problem is not None:
            report.error(where, problem)
            continue
        if name in names:
            report.error(where, f"the same folder as the rule {names[name]}")
            continue
        names[name] = where
        rule_table = _Table(value, where, report)
        # [inbox.rules.clients.acme] reads as a key "acme" of the rule "clients".
        nested = [
            k
            for k, v in value.items()
            if isinstance(v, Mapping) and k not in RULE_KEYS and _suggest(k, RULE_KEYS) is None
        ]
        rule_table.unknown(RULE_KEYS, handled=(*SIDECAR_ONLY_KEYS, *nested))
        for key in nested:
            rule_table.error(
                key, f'unknown key; for the folder {name}/{key} write [inbox.rules."{name}/{key}"]'
            )
        values = _rule_values(rule_table, sidecar=False)
        rules.append(Rule(name, _layer(root, values)))
    return tuple(rules)


# ---- paths ---------------------------------------------------------------------------------------


def _access(path: Path, mode: int) -> bool:
    # A seam: tests run as root, for whom permission bits mean little.
    return os.access(path, mode)


def _user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _abspath(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


def _path_key(t: _Table, key: str, base: Path, default: str | None = None) -> Path | None:
    value = t.string(key, default or "", required=default is None)
    if not value.strip():
        return None
    return _abspath(value, base)


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _creatable(path: Path) -> str | None:
    """Why the folder ``path`` neither exists nor could be created by us, or ``None``."""
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a folder"
        if not _access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable by user {_user()}"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{path} cannot be created: {ancestor} is not a folder"
    if not _access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {ancestor} is not writable by user {_user()}"
    return None


# What `watchd check` (an error) and `watchd run` (a warning, then the inbox pauses) both say.
MISSING_INBOX = (
    "`watchd run` waits for it, the inbox paused (see `watchd status`); create the folder or "
    "mount the share"
)


def _check_inbox_dir(inbox: InboxConfig, report: _Report, *, allow_missing: bool) -> None:
    where = f"inbox[{inbox.index}].path"
    path = inbox.path
    if not path.exists():
        if allow_missing:
            report.warn(where, f"{path} does not exist (yet): {MISSING_INBOX}")
        else:
            report.error(where, f"{path} does not exist: {MISSING_INBOX}")
        return
    if not path.is_dir():
        report.error(where, f"{path} is not a folder")
        return
    if not _access(path, os.R_OK | os.X_OK):
        report.error(where, f"{path} is not readable by user {_user()}")
        return
    needs = [
        f'{key} = "{value}"'
        for key, value in (("on_success", inbox.on_success), ("on_failure", inbox.on_failure))
        if value in ("move", "delete")
    ]
    if needs and not _access(path, os.W_OK | os.X_OK):
        report.error(
            where,
            f"{path} is not writable by user {_user()}, which {' and '.join(needs)} needs "
            '(or set them to "keep")',
        )


def _check_local_disk(path: Path, where: str, report: _Report) -> None:
    try:
        kind = fs_type(path)
    except OSError:
        return
    if is_network_type(kind):
        report.error(
            where, f"{path} is on a network filesystem ({kind}); the ledger needs a local disk"
        )


def _check_layout(inboxes: Sequence[InboxConfig], state_dir: Path, report: _Report) -> None:
    """No inbox inside another, no outbox or state folder inside an inbox (on the real paths,
    so a symlink cannot hide an overlap)."""
    real = [(i, _real(i.path), _real(i.outbox)) for i in inboxes]
    for n, (a, a_path, _) in enumerate(real):
        for b, b_path, _ in real[:n]:
            if a_path == b_path:
                report.error(f"inbox[{a.index}].path", f"the same folder as inbox[{b.index}].path")
            elif _within(a_path, b_path) or _within(b_path, a_path):
                inner, outer = (a, b) if _within(a_path, b_path) else (b, a)
                report.error(
                    f"inbox[{a.index}].path",
                    f"inbox[{inner.index}].path is inside inbox[{outer.index}].path; "
                    "inboxes may not overlap",
                )
    real_state = _real(state_dir)
    for a, _, a_out in real:
        for b, b_path, _ in real:
            if _within(a_out, b_path):
                report.error(
                    f"inbox[{a.index}].outbox",
                    f"inside inbox[{b.index}].path; results would be taken as input",
                )
            elif _within(b_path, a_out):
                report.warn(
                    f"inbox[{b.index}].path",
                    f"inside inbox[{a.index}].outbox; keep inputs and results apart",
                )
    for b, b_path, _ in real:
        if _within(real_state, b_path):
            report.error("daemon.state_dir", f"inside inbox[{b.index}].path")


# ---- the sections --------------------------------------------------------------------------------


def http_url(t: _Table, key: str, value: str, example: str) -> SplitResult | None:
    """``value`` split, or None with the problem reported under ``key``: an http(s) URL with a
    host (never quoted back: a malformed URL may still carry credentials)."""
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        t.error(key, f'is not a valid URL; e.g. "{example}"')
        return None
    if parts.scheme not in ("http", "https") or not host:
        t.error(key, f'must be an http(s) URL such as "{example}"')
        return None
    return parts


def _api_url(t: _Table) -> str:
    value = t.string("api_url", DEFAULT_API_URL, nonempty=True).strip()
    parts = http_url(t, "api_url", value, "https://api.carmic.pro/api")
    if parts is None:
        return DEFAULT_API_URL
    host = parts.hostname or ""
    if parts.username or parts.password:
        t.error("api_url", "must not contain a user or password (use [carmic] email/password)")
        return DEFAULT_API_URL
    if parts.query or parts.fragment:
        t.error("api_url", "must not have a query string or fragment")
        return DEFAULT_API_URL
    url = value.rstrip("/")
    if url.endswith("/v1"):
        t.error("api_url", "must not end in /v1: endpoints are found under {api_url}/v1/")
        return DEFAULT_API_URL
    if parts.scheme == "http" and not _is_loopback(host):
        t.warn("api_url", "plain http: the password and tokens would cross the network unencrypted")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _carmic(
    t: _Table, base: Path, env: Mapping[str, str], config_path: Path | None, check_paths: bool
) -> CarmicConfig:
    t.unknown(CARMIC_KEYS)
    api_url = _api_url(t)
    email = t.string("email", "", required=True).strip()
    if email and not _EMAIL.fullmatch(email):
        t.error("email", f"must be an email address {t.got('email')}")
    password_file = _path_key(t, "password_file", base, default="")
    password = t.string("password", "")
    ca_file = _path_key(t, "ca_file", base, default="")
    if ca_file is not None and check_paths:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as e:
            t.error("ca_file", f"cannot load {ca_file} as a PEM CA bundle: {e}")
    creates = t.number("creates_per_minute", API_CREATES_PER_MINUTE, above=0)
    exports = t.number("exports_per_minute", API_EXPORTS_PER_MINUTE, above=0)
    for key, value, limit in (
        ("creates_per_minute", creates, API_CREATES_PER_MINUTE),
        ("exports_per_minute", exports, API_EXPORTS_PER_MINUTE),
    ):
        if value > limit:
            t.warn(key, f"above the API's {limit} per minute per workspace: expect 429 answers")
    found = find_password(
        password_file=password_file,
        password=password or None,
        env=env,
        config_path=config_path,
    )
    for problem in found.problems:
        # `status` and `check --offline` run as people who may not read the daemon's secret.
        (t.report.problems if check_paths else t.report.warnings).append(problem)
    t.report.warnings.extend(found.warnings)
    return CarmicConfig(
        api_url=api_url,
        email=email,
        password=found.secret,
        password_source=found.source,
        workspace=t.string("workspace", "").strip(),
        realtime=t.choice("realtime", "sse", REALTIME_MODES),
        poll_seconds=t.number("poll_seconds", 10.0, above=0),
        creates_per_minute=creates,
        exports_per_minute=exports,
        max_processing=t.integer("max_processing", 0, minimum=0),
        ca_file=str(ca_file) if ca_file is not None else "",
    )


def _metrics(t: _Table) -> str:
    value = t.string("metrics", "").strip()
    if not value:
        return ""
    from watchd.service.metrics import parse_address

    # A bare port means loopback: another address has to be written out.
    address = f"127.0.0.1:{value}" if value.isdigit() else value
    try:
        host, _port = parse_address(address)
    except ValueError as e:
        t.error("metrics", f'{e}; e.g. "127.0.0.1:9108"')
        return ""
    if not _is_loopback(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            t.error("metrics", f'host {host!r} must be an IP address or "localhost"')
            return ""
        t.warn("metrics", f"{host} is not loopback: /metrics and /healthz have no authentication")
    return address


def _daemon(t: _Table, base: Path) -> DaemonConfig:
    t.unknown(DAEMON_KEYS)
    state_dir = _path_key(t, "state_dir", base, default=DEFAULT_STATE_DIR)
    if state_dir is None:
        state_dir = Path(DEFAULT_STATE_DIR)
        t.error("state_dir", "must not be empty")
    return DaemonConfig(
        state_dir=state_dir,
        settle_seconds=t.number("settle_seconds", 5.0, minimum=0),
        scan=t.choice("scan", "events", SCAN_MODES),
        rescan_seconds=t.number("rescan_seconds", 300.0, above=0),
        max_uploads=t.integer("max_uploads", 2, minimum=1),
        poll_interval=t.number("poll_interval", 2.0, above=0),
        log_format=t.choice("log_format", "auto", LOG_FORMATS),
        log_level=t.choice("log_level", "info", LOG_LEVELS),
        metrics=_metrics(t),
        max_render_retries=t.integer("max_render_retries", 2, minimum=0),
        hold_seconds=t.number("hold_seconds", 600.0, minimum=0),
    )


def _inbox(index: int, value: Any, base: Path, report: _Report) -> InboxConfig | None:
    where = key_path("inbox", index)
    if not isinstance(value, Mapping):
        report.error(where, f"must be a table {_got(value)}")
        return None
    t = _Table(value, where, report)
    t.unknown((*INBOX_KEYS, *RULE_KEYS), handled=SIDECAR_ONLY_KEYS)
    before = len(report.problems)
    path = _path_key(t, "path", base)
    outbox = _path_key(t, "outbox", base)
    on_success = t.choice("on_success", "move", ON_SUCCESS)
    on_failure = t.choice("on_failure", "move", ON_FAILURE)
    root = _layer(Preset(), _rule_values(t, sidecar=False))
    rules = _rules(t, root, report)
    name = t.string("name", "", nonempty=True, max_len=200).strip()
    if path is None or outbox is None or len(report.problems) != before:
        return None
    return InboxConfig(index, path, outbox, on_success, on_failure, rules, name or path.name)


# ---- entry points --------------------------------------------------------------------------------


def load_config(
    path: Path | str,
    *,
    env: Mapping[str, str] | None = None,
    check_paths: bool = True,
    log_warnings: bool = True,
    allow_missing_inboxes: bool = False,
) -> Config:
    """Read and validate the config at ``path``; raise :class:`ConfigError` listing every problem.

    ``check_paths=False`` skips what depends on this machine's filesystem (folders existing or
    creatable, the password file being readable): ``status`` uses it, so a paused NAS or an
    operator who may not read the daemon's secret can still look at the ledger.
    ``allow_missing_inboxes=True`` turns an inbox folder that does not exist into a warning
    (a share not mounted yet: the daemon keeps such an inbox paused). Warnings are logged
    (unless ``log_warnings`` is false: ``check`` prints them itself) and kept in
    ``Config.warnings``.
    """
    config_path = Path(os.path.expanduser(path)).absolute()
    data = read_toml(config_path)
    return parse_config(
        data,
        path=config_path,
        env=env,
        check_paths=check_paths,
        log_warnings=log_warnings,
        allow_missing_inboxes=allow_missing_inboxes,
    )


def _scrub(report: _Report, secret: Secret) -> None:
    value = secret.reveal()
    for texts in (report.problems, report.warnings):
        texts[:] = [t.replace(value, str(secret)) for t in texts]


def _section(top: _Table, key: str) -> _Table:
    table = top.table(key)
    if table is not None:
        return table
    # Absent: defaults, and complaints about required keys. Not a table: that is reported
    # already, so its keys' complaints would only be noise.
    return _Table({}, key, top.report if key not in top.data else _Report())


def parse_config(
    data: Mapping[str, Any],
    *,
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    check_paths: bool = True,
    log_warnings: bool = True,
    allow_missing_inboxes: bool = False,
) -> Config:
    """Validate an already-parsed TOML document (``path`` is the file it came from: relative
    paths are taken from its folder, else from the working directory)."""
    environ = os.environ if env is None else env
    base = path.parent if path is not None else Path.cwd()
    report = _Report()
    top = _Table(data, "", report)
    top.unknown(TOP_KEYS)
    carmic = _carmic(_section(top, "carmic"), base, environ, path, check_paths)
    daemon = _daemon(_section(top, "daemon"), base)
    cluster = parse_cluster(top, base, environ, check_paths)
    web = parse_web(_section(top, "web"), base, check_paths=check_paths)
    raw_inboxes = data.get("inbox")
    inboxes: list[InboxConfig] = []
    if raw_inboxes is None:
        report.error("inbox", "at least one [[inbox]] is required")
    elif not isinstance(raw_inboxes, list):
        report.error("inbox", f"must be an array of tables: write [[inbox]] {_got(raw_inboxes)}")
    else:
        if not raw_inboxes:
            report.error("inbox", "at least one [[inbox]] is required")
        for i, value in enumerate(raw_inboxes):
            inbox = _inbox(i, value, base, report)
            if inbox is not None:
                inboxes.append(inbox)
    check_inbox_names(inboxes, raw_inboxes, cluster, report)
    if inboxes:
        _check_layout(inboxes, daemon.state_dir, report)
    from watchd.notify.config import parse_notify

    notify = parse_notify(
        data.get("notify"),
        base=base,
        report=report,
        rule_names=[r.name for i in inboxes for r in i.rules] if inboxes else None,
        check_paths=check_paths,
    )
    if check_paths:
        for inbox in inboxes:
            _check_inbox_dir(inbox, report, allow_missing=allow_missing_inboxes)
            problem = _creatable(inbox.outbox)
            if problem:
                report.error(f"inbox[{inbox.index}].outbox", problem)
        problem = _creatable(daemon.state_dir)
        if problem:
            report.error("daemon.state_dir", problem)
        else:
            _check_local_disk(daemon.state_dir, "daemon.state_dir", report)
    if carmic.password is not None:
        # A password pasted into the wrong key would otherwise be quoted back in a message.
        _scrub(report, carmic.password)
    for secret in cluster.secrets if cluster is not None else ():
        _scrub(report, secret)
    if report.problems:
        raise ConfigError(report.problems)
    if log_warnings:
        for warning in report.warnings:
            log.warning("config: %s", warning)
    return Config(
        carmic,
        daemon,
        tuple(inboxes),
        path,
        tuple(report.warnings),
        notify,
        cluster,
        web=web,
    )


def sidecar_for(video: Path) -> Path:
    """Where the sidecar of ``video`` lives: ``ep12.mp4`` → ``ep12.mp4.toml``."""
    return video.with_name(video.name + ".toml")


def resolve_preset(
    inbox: InboxConfig, rel_path: PurePosixPath | str, sidecar: Path | None = None
) -> tuple[Rule, Preset]:
    """The rule and the effective preset of the file at ``rel_path`` (relative to the inbox),
    with the ``sidecar`` file merged on top when given. A bad sidecar raises
    :class:`ConfigError` whose problems name the sidecar file and the key."""
    rule = inbox.rule_for("/".join(_relative_parts(rel_path)[:-1]))
    if sidecar is None:
        return rule, rule.preset
    data = read_toml(sidecar, max_bytes=MAX_SIDECAR_BYTES)
    report = _Report()
    t = _Table(data, "", report)
    t.unknown((*RULE_KEYS, *SIDECAR_ONLY_KEYS))
    values = _rule_values(t, sidecar=True)
    preset = _layer(rule.preset, values)
    _check_trim(preset, report)
    if report.problems:
        raise ConfigError([f"{sidecar}: {p}" for p in report.problems])
    for warning in report.warnings:
        log.warning("sidecar %s: %s", sidecar, warning)
    return rule, preset

"""``[[notify]]``: webhooks, Apprise URLs and commands told about jobs and inboxes.

Parsed with the same readers as the rest of the config (:mod:`watchd.config`): every problem is
reported under its key path, unknown keys and event names get a "did you mean", and no secret
(the signing secret, header values, an Apprise URL or a webhook URL, which often carry tokens)
is ever quoted back.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from watchd.config import _got, _path_key, _Report, _suggest, _Table, http_url, key_path
from watchd.notify.events import EVENT_TYPES
from watchd.secrets import Secret, read_secret_file

NOTIFY_KEYS: Final = (
    "name",
    "url",
    "secret_file",
    "headers",
    "apprise",
    "command",
    "events",
    "rules",
    "timeout",
    "retry_first_seconds",
    "retry_max_seconds",
)
KINDS: Final = ("url", "apprise", "command")
INSTALL_APPRISE: Final = "pip install 'carmic-watchd[notify]'"
# Set by us on every signed POST: a header table must not replace them.
RESERVED_HEADERS: Final = frozenset(
    {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length"}
)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_TIMEOUT: Final = 15.0
# The first retry within 10 s, growing to at most an hour between tries.
DEFAULT_RETRY_FIRST: Final = 5.0
DEFAULT_RETRY_MAX: Final = 3600.0


@dataclass(frozen=True)
class NotifierConfig:
    """One ``[[notify]]`` table. ``kind`` is ``webhook``, ``apprise`` or ``command``;
    ``rules`` is None for every rule. ``url`` and ``apprise`` are kept as secrets: tokens
    often live in them."""

    index: int
    name: str
    kind: str
    url: Secret | None = None
    secret: Secret | None = None
    headers: tuple[tuple[str, Secret], ...] = ()
    apprise: Secret | None = None
    command: tuple[str, ...] = ()
    events: frozenset[str] = frozenset(EVENT_TYPES)
    rules: frozenset[str] | None = None
    timeout: float = DEFAULT_TIMEOUT
    retry_first: float = DEFAULT_RETRY_FIRST
    retry_max: float = DEFAULT_RETRY_MAX
    fingerprint: str = field(default="", compare=False)

    def wants(self, event_type: str, rule: str | None) -> bool:
        """Whether this notifier is told about ``event_type`` for a job of ``rule`` (inbox
        events have no rule: they concern every rule of the inbox)."""
        if event_type not in self.events:
            return False
        return rule is None or self.rules is None or rule in self.rules

    def describe(self) -> str:
        """What it is, for logs and ``watchd notify test``: never a URL or a header value."""
        if self.kind == "webhook":
            return f"webhook {self.name}" + (" (signed)" if self.secret else "")
        if self.kind == "apprise":
            return f"apprise {self.name}"
        return f"command {self.name}"


def summary(n: NotifierConfig) -> str:
    """One line for ``watchd check``: what, which events, which rules (no URL or secret)."""
    events = (
        "every event"
        if n.events == frozenset(EVENT_TYPES)
        else ", ".join(e for e in EVENT_TYPES if e in n.events)
    )
    rules = (
        "every rule"
        if n.rules is None
        else "rules " + ", ".join(json.dumps(r) for r in sorted(n.rules))
    )
    return f"{n.describe()}: {events}; {rules}; timeout {n.timeout:g} s"


def fingerprint_of(kind: str, values: Sequence[str]) -> str:
    """A digest of what identifies a notifier's target: a 410 Gone holds until it changes."""
    digest = hashlib.sha256(json.dumps([kind, *values]).encode())
    return digest.hexdigest()[:16]


def import_apprise() -> Any:
    """The Apprise module (ImportError without the extra). Its plugins import modules that
    Python deprecates (imghdr): not ours to fix, not worth a warning at every start."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise
        from apprise.plugins import N_MGR

        N_MGR.load_modules()  # type: ignore[no-untyped-call]  # the plugins load lazily: now, under this filter
    return apprise


def apprise_available() -> bool:
    try:
        import_apprise()
    except ImportError:
        return False
    return True


def parse_notify(
    raw: Any,
    *,
    base: Path,
    report: _Report,
    rule_names: Iterable[str] | None,
    check_paths: bool,
) -> tuple[NotifierConfig, ...]:
    """The ``[[notify]]`` array (``raw`` as TOML gave it), problems into ``report``.
    ``rule_names`` are every rule of every inbox (None when the inboxes did not parse)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        report.error("notify", f"must be an array of tables: write [[notify]] {_got(raw)}")
        return ()
    known_rules = None if rule_names is None else sorted(set(rule_names))
    out: list[NotifierConfig] = []
    for i, value in enumerate(raw):
        n = _notifier(i, value, base, report, known_rules, check_paths)
        if n is not None:
            out.append(n)
    given = [i for i, value in enumerate(raw) if isinstance(value, Mapping) and "name" in value]
    return _named(out, set(given), report)


def _named(
    notifiers: list[NotifierConfig], given_names: set[int], report: _Report
) -> tuple[NotifierConfig, ...]:
    """Names made unique: a default name that repeats gets ``-2``, ``-3``; a name given twice
    is an error (``watchd notify test NAME`` and the ledger's queue go by name)."""
    from dataclasses import replace

    given: dict[str, int] = {}
    out: list[NotifierConfig] = []
    taken: set[str] = set()
    for n in notifiers:
        if n.index not in given_names:
            continue
        if n.name in given:
            report.error(
                key_path(key_path("notify", n.index), "name"),
                f'"{n.name}" is the name of notify[{given[n.name]}] already',
            )
        given[n.name] = n.index
    for n in notifiers:
        name, k = n.name, 2
        while name in taken:
            name, k = f"{n.name}-{k}", k + 1
        taken.add(name)
        out.append(replace(n, name=name) if name != n.name else n)
    return tuple(out)


def _notifier(
    index: int,
    value: Any,
    base: Path,
    report: _Report,
    known_rules: Sequence[str] | None,
    check_paths: bool,
) -> NotifierConfig | None:
    where = key_path("notify", index)
    if not isinstance(value, Mapping):
        report.error(where, f"must be a table {_got(value)}")
        return None
    t = _Table(value, where, report)
    t.unknown(NOTIFY_KEYS)
    before = len(report.problems)
    kinds = [k for k in KINDS if k in value]
    if len(kinds) != 1:
        which = " and ".join(kinds) if kinds else "none"
        report.error(where, f"needs exactly one of url, apprise or command (got {which})")
        return None
    kind = kinds[0]
    events = _events(t)
    rules = _rules(t, known_rules)
    timeout = t.number("timeout", DEFAULT_TIMEOUT, minimum=1, maximum=300)
    retry_first = t.number("retry_first_seconds", DEFAULT_RETRY_FIRST, above=0, maximum=10)
    retry_max = t.number("retry_max_seconds", DEFAULT_RETRY_MAX, above=0, maximum=3600)
    if retry_max < retry_first:
        t.error("retry_max_seconds", "must be at least retry_first_seconds")
    name = t.string("name", "").strip()
    if name and not _NAME.fullmatch(name):
        t.error("name", f"must be letters, digits, '.', '_' or '-' {t.got('name')}")
    for key in ("secret_file", "headers"):
        if kind != "url" and key in value:
            t.error(key, "only applies to a webhook (url = ...)")
    common: dict[str, Any] = {
        "index": index,
        "events": events,
        "rules": rules,
        "timeout": timeout,
        "retry_first": retry_first,
        "retry_max": retry_max,
    }
    notifier: NotifierConfig | None
    if kind == "url":
        notifier = _webhook(t, base, check_paths, name, common)
    elif kind == "apprise":
        notifier = _apprise(t, name, common)
    else:
        notifier = _command(t, check_paths, name, common)
    if notifier is None or len(report.problems) != before:
        return None
    return notifier


def _events(t: _Table) -> frozenset[str]:
    every = frozenset(EVENT_TYPES)
    names = _string_list(t, "events")
    if names is None:
        return every
    chosen: set[str] = set()
    for name in names:
        if name in every:
            chosen.add(name)
            continue
        hint = _suggest(name, EVENT_TYPES)
        t.error(
            "events",
            f"unknown event {json.dumps(name)}"
            + (f', did you mean "{hint}"?' if hint else f"; events are {', '.join(EVENT_TYPES)}"),
        )
    return frozenset(chosen) or every


def _rules(t: _Table, known: Sequence[str] | None) -> frozenset[str] | None:
    names = _string_list(t, "rules")
    if names is None:
        return None
    for name in names:
        if known is not None and name not in known:
            hint = _suggest(name, [k for k in known if k])
            shown = ", ".join(json.dumps(k) for k in known)
            t.error(
                "rules",
                f"unknown rule {json.dumps(name)}"
                + (f', did you mean "{hint}"?' if hint else f" (the rules are {shown})"),
            )
    return frozenset(names)


def _string_list(t: _Table, key: str) -> list[str] | None:
    if key not in t.data:
        return None
    value = t.data[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        t.error(key, f"must be an array of strings {t.got(key)}")
        return None
    if not value:
        t.error(key, "must not be empty (leave the key out for all)")
        return None
    return list(value)


def _webhook(
    t: _Table, base: Path, check_paths: bool, name: str, common: dict[str, Any]
) -> NotifierConfig | None:
    value = t.data["url"]
    if not isinstance(value, str):
        t.error("url", f"must be a string {_got(value, secret=True)}")
        return None
    url = value.strip()
    parts = http_url(t, "url", url, "https://hooks.example.com/watchd")
    if parts is None:
        return None
    host = parts.hostname or ""
    secret = _signing_secret(t, base, check_paths)
    headers = _headers(t)
    values = [url, secret.reveal() if secret else "", *(f"{k}:{v.reveal()}" for k, v in headers)]
    return NotifierConfig(
        name=name or host,
        kind="webhook",
        url=Secret(url),
        secret=secret,
        headers=headers,
        fingerprint=fingerprint_of("webhook", values),
        **common,
    )


def _signing_secret(t: _Table, base: Path, check_paths: bool) -> Secret | None:
    path = _path_key(t, "secret_file", base, default="")
    if path is None:
        return None
    try:
        secret, loose = read_secret_file(path, "a webhook signing secret")
    except (OSError, ValueError) as e:
        text = f"cannot read {path}: {e.strerror or e}" if isinstance(e, OSError) else str(e)
        # `status` runs as people who may not read the daemon's secrets.
        (t.error if check_paths else t.warn)("secret_file", text)
        return None
    problem = secret_problem(secret.reveal())
    if problem:
        t.error("secret_file", f"{path}: {problem}")
        return None
    if loose:
        t.warn("secret_file", loose)
    return secret


def secret_problem(value: str) -> str | None:
    """Why ``value`` is not a Standard Webhooks secret (``whsec_`` + padded base64), or None."""
    hint = (
        'it must be "whsec_" followed by standard base64, e.g. from: '
        'echo "whsec_$(head -c 32 /dev/urandom | base64)"'
    )
    if not value.startswith("whsec_"):
        return f"not a webhook secret: {hint}"
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return f"not valid base64 after whsec_: {hint}"
    if len(key) < 16:
        return f"the key is {len(key)} bytes; use at least 16 (24 to 64 is usual)"
    return None


def _headers(t: _Table) -> tuple[tuple[str, Secret], ...]:
    sub = t.table("headers")
    if sub is None:
        return ()
    out: list[tuple[str, Secret]] = []
    for key, value in sub.data.items():
        if not _HEADER_NAME.fullmatch(key):
            sub.error(key, "is not a valid HTTP header name")
        elif key.lower() in RESERVED_HEADERS:
            sub.error(key, "is set by watchd itself; leave it out")
        elif not isinstance(value, str):
            sub.error(key, f"must be a string {_got(value, secret=True)}")
        elif "\n" in value or "\r" in value:
            sub.error(key, "must be one line")
        else:
            out.append((key, Secret(value)))
    return tuple(out)


def _apprise(t: _Table, name: str, common: dict[str, Any]) -> NotifierConfig | None:
    value = t.data["apprise"]
    if not isinstance(value, str) or not value.strip():
        t.error("apprise", f"must be an Apprise URL such as slack://... {_got(value, secret=True)}")
        return None
    url = value.strip()
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if not scheme:
        t.error("apprise", "must be an Apprise URL such as slack://..., ntfy://..., mailto://...")
        return None
    if not apprise_available():
        t.error("apprise", f"needs the Apprise library, which is not installed: {INSTALL_APPRISE}")
        return None
    apprise = import_apprise()
    if apprise.Apprise.instantiate(url, suppress_exceptions=True) is None:
        t.error(
            "apprise",
            f'"{scheme}://..." is not a URL Apprise can use (see its list of services)',
        )
        return None
    return NotifierConfig(
        name=name or scheme,
        kind="apprise",
        apprise=Secret(url),
        fingerprint=fingerprint_of("apprise", [url]),
        **common,
    )


def _command(
    t: _Table, check_paths: bool, name: str, common: dict[str, Any]
) -> NotifierConfig | None:
    value = t.data["command"]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        t.error(
            "command",
            'must be a non-empty array of strings, e.g. ["/usr/local/bin/on-event"] '
            + t.got("command"),
        )
        return None
    argv = tuple(value)
    if check_paths:
        program = argv[0]
        found = shutil.which(program) if os.sep not in program else program
        if not found or not os.access(found, os.X_OK) or not os.path.isfile(found):
            t.error("command", f"{program}: not found or not executable")
            return None
    return NotifierConfig(
        name=name or Path(argv[0]).name,
        kind="command",
        command=argv,
        fingerprint=fingerprint_of("command", list(argv)),
        **common,
    )

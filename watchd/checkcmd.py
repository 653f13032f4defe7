"""``watchd check``: is this config good, and does it do what the operator thinks?

Offline it validates the config and shows, for each inbox, where results go and which preset
each folder gets, so a typo in a rule's folder shows up before a file lands in the wrong place.
Online it also logs in, resolves the workspace and checks that every caption style in use is
built in or a template of the workspace (one that is neither is a config error: the API would
refuse it only after the processing was billed); with ``[cluster]`` it first checks the
database (watchd/cluster/check.py). Offline it says what it could not verify.
Exit codes (docs/cli.md): 0 ok, 2 bad config, 3 cannot log in or reach the API (or the
cluster's database).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from watchd import presetcheck
from watchd.carmic.errors import AuthError, CarmicError, NotFound
from watchd.config import (
    CarmicConfig,
    Config,
    ConfigError,
    InboxConfig,
    Preset,
    Rule,
    load_config,
)
from watchd.redact import redact
from watchd.secrets import Secret
from watchd.watching.folders import CREATED_AT_START, missing_folders
from watchd.watching.mounts import fs_type, is_network_type

EXIT_OK = 0
EXIT_CONFIG = 2
EXIT_API = 3
ONLINE_TIMEOUT = 60.0
DATABASE_TIMEOUT = 5.0  # to connect to a [cluster] database: a person waits for the answer

# (carmic config, password) -> an object with CarmicClient's resolve_workspace(),
# caption_templates(), templates() and aclose().
ClientFactory = Callable[[CarmicConfig, Secret], Any]


def check(
    config_path: Path | str,
    offline: bool,
    out: TextIO | None = None,
    *,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    client_factory: ClientFactory | None = None,
    timeout: float = ONLINE_TIMEOUT,
    database_timeout: float = DATABASE_TIMEOUT,
) -> int:
    """Validate ``config_path`` and print what it means; online, also log in.

    The report goes to ``out`` (stdout by default, looked up at call time). Returns 0 when all
    is well, 2 for a bad config (problems go to ``err``, stderr by default), 3 when the API
    refuses the login or cannot be reached. ``client_factory`` builds the API client (tests
    inject one over a mock transport); ``timeout`` bounds the whole online part, and
    ``database_timeout`` the connection to a ``[cluster]`` database.
    """
    out = sys.stdout if out is None else out
    errors = sys.stderr if err is None else err
    try:
        cfg = load_config(config_path, env=env, log_warnings=False)
        password = None if offline else cfg.carmic.require_password()
    except ConfigError as e:
        errors.write(f"bad config {config_path}:\n")
        for problem in e.problems:
            errors.write(f"  {problem}\n")
        return EXIT_CONFIG
    describe(cfg, out)
    if offline:
        database = ", nor the cluster's database" if cfg.cluster is not None else ""
        out.write(
            "\noffline: the login and the workspace were not checked, nor were caption "
            f"styles that are not built in (the workspace's templates){database}\n"
        )
        _write_notes(list(_offline_notes(cfg)), out)
        out.write("config OK\n")
        return EXIT_OK
    assert password is not None
    if cfg.cluster is not None:
        from watchd.cluster.check import check_database

        db = check_database(cfg.cluster, connect_timeout=database_timeout)
        if db.code != EXIT_OK:
            errors.write(db.text + "\n")
            return db.code
        out.write(f"\n{db.text}\n")
    factory = client_factory or build_client
    try:
        code, notes = asyncio.run(_online(cfg, password, factory, out, errors, timeout))
    except TimeoutError:
        errors.write(
            f"no answer from the Carmic API at {cfg.carmic.api_url} within {timeout:g} s\n"
        )
        return EXIT_API
    if code != EXIT_OK:
        return code
    _write_notes(notes, out)
    out.write("config OK, login OK\n")
    return EXIT_OK


# ---- the offline report --------------------------------------------------------------------------


def describe(cfg: Config, out: TextIO) -> None:
    """Print the config as the daemon will use it: connection, daemon settings, warnings, and
    each inbox with its outbox and the folder and preset of every rule."""
    c, d = cfg.carmic, cfg.daemon
    out.write(f"config {cfg.path}\n")
    out.write(f"carmic   {c.api_url} as {c.email}\n")
    out.write(f"         password: {c.password_source or 'none found (needed to run)'}\n")
    workspace = f'"{c.workspace}"' if c.workspace else "the user's first workspace"
    limit = c.max_processing or "from the workspace tier"
    out.write(
        f"         workspace: {workspace}; updates by {c.realtime} (poll every "
        f"{c.poll_seconds:g} s); at most {c.creates_per_minute:g} projects and "
        f"{c.exports_per_minute:g} exports a minute; processing limit {limit}\n"
    )
    if c.ca_file:
        out.write(f"         extra CA bundle: {c.ca_file}\n")
    if cfg.cluster is not None:
        from watchd.cluster.check import describe_cluster

        out.write(describe_cluster(cfg.cluster) + "\n")
    polling = f", poll every {d.poll_interval:g} s" if d.scan == "poll" else ""
    out.write(
        f"daemon   state {d.state_dir}; scan {d.scan} (settle {d.settle_seconds:g} s, rescan "
        f"every {d.rescan_seconds:g} s{polling}); {d.max_uploads} upload(s) at once; "
        f"{d.max_render_retries} render retries; logs {d.log_format}/{d.log_level}; "
        f"metrics {d.metrics or 'off'}\n"
    )
    for warning in cfg.warnings:
        out.write(f"warning: {warning}\n")
    for inbox in cfg.inboxes:
        _describe_inbox(inbox, cfg.daemon.scan, out, named=cfg.cluster is not None)
    from watchd.notify.config import summary

    for n in cfg.notify:
        out.write(f"notify   {summary(n)}\n")
    if cfg.web.enabled:
        from watchd.web.settings import describe

        out.write(f"web      {describe(cfg.web)}\n")


def _describe_inbox(inbox: InboxConfig, scan: str, out: TextIO, *, named: bool = False) -> None:
    out.write(f"\ninbox[{inbox.index}] {inbox.path}{_filesystem(inbox.path, scan)}\n")
    if named:  # [cluster]: jobs are recorded under the name
        out.write(f"  name    {inbox.name} (its identity, the same on every host)\n")
    made = missing_folders(inbox)
    outbox_note = f" ({CREATED_AT_START})" if inbox.outbox in made else ""
    if not inbox.outbox.exists() and not outbox_note:
        outbox_note = f" (MISSING, and so is {inbox.outbox.parent}: nothing can be delivered)"
    out.write(f"  outbox  {inbox.outbox}{outbox_note}\n")
    out.write(
        f"  sources {_disposition('success', inbox.on_success)}; "
        f"{_disposition('failure', inbox.on_failure)}\n"
    )
    width = max(len(_rule_label(r)) for r in inbox.rules)
    for rule in sorted(inbox.rules, key=lambda r: r.name):
        folder = inbox.path / rule.name if rule.name else inbox.path
        where = f"{folder}/"
        if rule.name == "":
            where += " and folders without a rule"
        elif folder in made:
            where += f" ({CREATED_AT_START})"
        results = inbox.outbox / rule.name if rule.name else inbox.outbox
        out.write(f"  {_rule_label(rule):<{width}}  {where}\n")
        out.write(f"  {'':<{width}}  -> {results}/<video name>/\n")
        out.write(f"  {'':<{width}}  {preset_summary(rule.preset)}\n")


def _rule_label(rule: Rule) -> str:
    return f"rule {rule.name}" if rule.name else "root"


def _disposition(outcome: str, action: str) -> str:
    if action == "move":
        folder = "_done" if outcome == "success" else "_failed"
        return f"on {outcome} moved to <inbox>/{folder}/<rule>/"
    return f"on {outcome} {'kept' if action == 'keep' else 'deleted'}"


def _filesystem(path: Path, scan: str) -> str:
    try:
        kind = fs_type(path)
    except OSError:
        return ""
    if not kind:
        return ""
    if is_network_type(kind) and scan == "events":
        return f" ({kind}, a network filesystem: polled, inotify cannot see other machines' writes)"
    return f" ({kind})"


def preset_summary(preset: Preset) -> str:
    """One line: what a file under this preset gets, in the order the pipeline applies it."""
    parts = [f"type {preset.video_type}"]
    parts.append(f"language {preset.language or 'auto'}/{preset.language_mode}")
    if preset.enable_multimodal:
        parts.append("multimodal")
    if preset.custom_instructions:
        text = preset.custom_instructions
        parts.append("instructions " + _json(text if len(text) <= 40 else text[:39] + "…"))
    if preset.trim_start is not None or preset.trim_end is not None:
        parts.append(f"trim {preset.trim_start or 0:g}–{_or_end(preset.trim_end)}")
    parts.append(f"caption style {preset.caption_style or 'as the server sets it'}")
    parts.append(_render_summary(preset))
    parts.append("exports " + (", ".join(preset.exports) if preset.exports else "none"))
    parts.append("SRT captions" if preset.captions else "no SRT")
    if preset.template:
        leaves = ", ".join(f"{k}={_json(v)}" for k, v in _leaves(preset.template))
        parts.append(f"template {leaves}")
    if preset.title:
        parts.append(f"title {_json(preset.title)}")
    return "; ".join(parts)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _or_end(value: float | None) -> str:
    return "end" if value is None else f"{value:g}"


def _render_summary(preset: Preset) -> str:
    r = preset.render
    if r.mode != "best":
        return f"render {r.mode}"
    best = f"the best {r.max_clips}" if r.max_clips else "every clip"
    score = f" with score ≥ {r.min_score:g}" if r.min_score else ""
    return f"render {best}{score}"


def _leaves(table: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path + ".")
        elif isinstance(value, tuple):
            yield path, f"[{len(value)} item(s)]"
        else:
            yield path, value


def _offline_notes(cfg: Config) -> Iterable[str]:
    yield from presetcheck.offline_style_notes(cfg)


def _write_notes(notes: list[str], out: TextIO) -> None:
    for note in notes:
        out.write(f"note: {note}\n")


# ---- online --------------------------------------------------------------------------------------


def build_client(carmic: CarmicConfig, password: Secret, **overrides: Any) -> Any:
    """The CarmicClient `check` uses (``overrides`` go to its constructor: tests pass a mock
    transport and a fake clock)."""
    from watchd.carmic.client import CarmicClient
    from watchd.carmic.retry import RetryPolicy

    # One retry with a short pause: `check` is run by a person waiting for an answer.
    overrides.setdefault("retry", RetryPolicy(attempts=2, base=1.0, max_retry_after=10.0))
    return CarmicClient(
        carmic.api_url,
        carmic.email,
        password,
        workspace=carmic.workspace,
        ca_file=carmic.ca_file,
        **overrides,
    )


async def _online(
    cfg: Config,
    password: Secret,
    factory: ClientFactory,
    out: TextIO,
    errors: TextIO,
    timeout: float,
) -> tuple[int, list[str]]:
    c = cfg.carmic
    try:
        client = factory(c, password)
    except CarmicError as e:  # e.g. an unusable CA bundle
        errors.write(f"cannot set up the Carmic client: {redact(str(e))}\n")
        return EXIT_API, []
    try:
        async with asyncio.timeout(timeout):
            try:
                workspace = await client.resolve_workspace()
            except AuthError as e:
                errors.write(
                    f"cannot log in to {c.api_url} as {c.email} (password from "
                    f"{c.password_source}): {redact(str(e))}\n"
                )
                return EXIT_API, []
            except NotFound as e:
                errors.write(f"cannot use the workspace: {redact(str(e))}\n")
                return EXIT_API, []
            except (CarmicError, OSError) as e:
                errors.write(f"cannot reach the Carmic API at {c.api_url}: {redact(str(e))}\n")
                return EXIT_API, []
            out.write(
                f"\nlogin OK as {c.email}; workspace {_json(workspace.name)} "
                f"({workspace.id}), tier {workspace.tier or 'unknown'}\n"
            )
            return await _template_notes(client, cfg, errors)
    finally:
        await client.aclose()


async def _template_notes(client: Any, cfg: Config, errors: TextIO) -> tuple[int, list[str]]:
    """Caption styles that are neither built in nor among the workspace's templates are
    errors (exit 2): the API would refuse them at the render, after the processing was billed.
    A failure to list templates is a note: the login, which is what `check` vouches for, has
    worked, and the styles are checked again by the daemon before anything is created."""
    if not presetcheck.custom_styles(cfg):
        return EXIT_OK, []
    try:
        known = await presetcheck.workspace_styles(client)
    except CarmicError as e:
        note = f"could not list the workspace's templates: {redact(str(e))}"
        return EXIT_OK, [note, *presetcheck.offline_style_notes(cfg)]
    problems = presetcheck.config_style_problems(cfg, known)
    if problems:
        errors.write(f"bad config {cfg.path}:\n")
        for problem in problems:
            errors.write(f"  {problem}\n")
        return EXIT_CONFIG, []
    return EXIT_OK, []

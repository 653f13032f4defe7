"""watchd.config: loading, every validation message, rule resolution, sidecars, presets."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import pickle
import re
import tomllib
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from watchd import config as config_module
from watchd.config import (
    Config,
    ConfigError,
    FrozenTable,
    InboxConfig,
    Preset,
    RenderChoice,
    Rule,
    default_config_path,
    load_config,
    parse_config,
    resolve_preset,
    sidecar_for,
)

CONTRACT_EXAMPLE = """\
[carmic]
api_url = "https://api.carmic.pro/api"
email = "svc-watchd@example.com"
password_file = "password"
workspace = ""
realtime = "sse"
poll_seconds = 10

[daemon]
state_dir = "state"
settle_seconds = 5
scan = "events"
rescan_seconds = 300
max_uploads = 2

[[inbox]]
path = "inbox"
outbox = "outbox"
on_success = "move"
on_failure = "move"
language = "en"

[inbox.rules.podcasts]
video_type = "podcast"
caption_style = "HORMOZI"
language_mode = "single"
custom_instructions = "Focus on segments where the guest is laughing"
enable_multimodal = false
render = { min_score = 70, max_clips = 5 }
exports = ["premiere", "davinci"]
captions = true
template = { style = { captionFont = "Inter", uppercase = true } }
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder with an inbox and a 0600 password file; the config goes beside them."""
    (tmp_path / "inbox").mkdir()
    secret = tmp_path / "password"
    secret.write_text("Sup3r-secret-pw\n")
    secret.chmod(0o600)
    return tmp_path


def base_doc(site: Path) -> dict[str, Any]:
    return {
        "carmic": {"email": "svc@example.com", "password_file": str(site / "password")},
        "daemon": {"state_dir": str(site / "state")},
        "inbox": [{"path": str(site / "inbox"), "outbox": str(site / "outbox")}],
    }


def write(site: Path, doc: dict[str, Any] | str, name: str = "config.toml") -> Path:
    path = site / name
    path.write_text(doc if isinstance(doc, str) else tomli_w.dumps(doc))
    return path


def load(site: Path, doc: dict[str, Any] | str, **kwargs: Any) -> Config:
    return load_config(write(site, doc), env={}, **kwargs)


def problems(site: Path, doc: dict[str, Any] | str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(site, doc, **kwargs)
    return info.value.problems


def with_(site: Path, section: str, **keys: Any) -> dict[str, Any]:
    doc = base_doc(site)
    if section == "inbox":
        doc["inbox"][0].update(keys)
    elif section == "rule":
        doc["inbox"][0]["rules"] = {"podcasts": keys}
    else:
        doc.setdefault(section, {}).update(keys)
    return doc


# ---- loading -------------------------------------------------------------------------------------


def test_contract_example_loads_with_its_values(site: Path) -> None:
    cfg = load(site, CONTRACT_EXAMPLE)
    assert cfg.path == site / "config.toml"
    assert cfg.carmic.api_url == "https://api.carmic.pro/api"
    assert cfg.carmic.email == "svc-watchd@example.com"
    assert cfg.carmic.password is not None
    assert cfg.carmic.password.reveal() == "Sup3r-secret-pw"
    assert cfg.carmic.password_source == f"password_file {site / 'password'}"
    assert (cfg.carmic.realtime, cfg.carmic.poll_seconds, cfg.carmic.workspace) == ("sse", 10, "")
    d = cfg.daemon
    assert d.state_dir == site / "state"
    assert (d.settle_seconds, d.scan, d.rescan_seconds, d.max_uploads) == (5, "events", 300, 2)
    (inbox,) = cfg.inboxes
    assert (inbox.index, inbox.path, inbox.outbox) == (0, site / "inbox", site / "outbox")
    assert (inbox.on_success, inbox.on_failure) == ("move", "move")
    assert [r.name for r in inbox.rules] == ["", "podcasts"]
    root, pod = inbox.rules
    assert root.preset == Preset(language="en")
    assert pod.preset == Preset(
        video_type="podcast",
        language="en",
        language_mode="single",
        enable_multimodal=False,
        custom_instructions="Focus on segments where the guest is laughing",
        caption_style="HORMOZI",
        render=RenderChoice("best", 70, 5),
        exports=("premiere", "davinci"),
        captions=True,
        template=FrozenTable({"style": {"captionFont": "Inter", "uppercase": True}}),
    )
    assert cfg.warnings == ()


def test_defaults(site: Path) -> None:
    doc = base_doc(site)
    del doc["daemon"]
    cfg = load(site, doc, check_paths=False)
    c, d = cfg.carmic, cfg.daemon
    assert c.api_url == "https://api.carmic.pro/api"
    assert (c.workspace, c.realtime, c.poll_seconds) == ("", "sse", 10)
    assert (c.creates_per_minute, c.exports_per_minute, c.max_processing, c.ca_file) == (
        5,
        5,
        0,
        "",
    )
    assert d.state_dir == Path("/var/lib/carmic-watchd")
    assert (d.settle_seconds, d.scan, d.rescan_seconds, d.max_uploads) == (5, "events", 300, 2)
    assert (d.poll_interval, d.log_format, d.log_level, d.metrics) == (2.0, "auto", "info", "")
    assert (d.max_render_retries, d.hold_seconds) == (2, 600)
    inbox = cfg.inboxes[0]
    assert (inbox.on_success, inbox.on_failure) == ("move", "move")
    assert inbox.rules == (Rule("", Preset()),)
    assert Preset().render == RenderChoice("all")


def test_our_own_keys(site: Path) -> None:
    doc = base_doc(site)
    doc["carmic"].update(
        creates_per_minute=2.5, exports_per_minute=1, max_processing=3, realtime="poll"
    )
    doc["daemon"].update(
        poll_interval=0.5,
        log_format="json",
        log_level="debug",
        metrics="127.0.0.1:9108",
        max_render_retries=0,
        scan="poll",
    )
    cfg = load(site, doc)
    assert (cfg.carmic.creates_per_minute, cfg.carmic.exports_per_minute) == (2.5, 1)
    assert (cfg.carmic.max_processing, cfg.carmic.realtime) == (3, "poll")
    d = cfg.daemon
    assert (d.poll_interval, d.log_format, d.log_level, d.metrics) == (
        0.5,
        "json",
        "debug",
        "127.0.0.1:9108",
    )
    assert (d.max_render_retries, d.scan) == (0, "poll")


def test_relative_paths_are_relative_to_the_config_folder(site: Path, monkeypatch: Any) -> None:
    doc = base_doc(site)
    doc["carmic"]["password_file"] = "password"
    doc["daemon"]["state_dir"] = "var/state"
    doc["inbox"][0].update(path="inbox", outbox="../elsewhere/out")
    elsewhere = site / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(write(site, doc), env={})
    assert cfg.daemon.state_dir == site / "var/state"
    assert cfg.inboxes[0].path == site / "inbox"
    assert cfg.inboxes[0].outbox == site.parent / "elsewhere/out"
    assert cfg.carmic.password is not None


def test_config_objects_are_frozen(site: Path) -> None:
    cfg = load(site, CONTRACT_EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.daemon.max_uploads = 5  # type: ignore[misc]
    preset = cfg.inboxes[0].rules[1].preset
    with pytest.raises(TypeError):
        preset.template["style"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        preset.template["style"]["uppercase"] = False
    assert isinstance(preset.exports, tuple)
    hash(preset)  # usable as a key
    assert copy.deepcopy(cfg) == cfg
    assert dataclasses.asdict(cfg)["daemon"]["max_uploads"] == 2


def test_validation_has_no_side_effects(site: Path) -> None:
    doc = base_doc(site)
    doc["daemon"]["state_dir"] = str(site / "a" / "b" / "state")
    load(site, doc)
    assert not (site / "outbox").exists()
    assert not (site / "a").exists()


def test_parse_config_without_a_file(site: Path, monkeypatch: Any) -> None:
    doc = base_doc(site)
    doc["inbox"][0]["path"] = "inbox"
    monkeypatch.chdir(site)
    cfg = parse_config(doc, env={})
    assert cfg.path is None
    assert cfg.inboxes[0].path == site / "inbox"


def test_default_config_path() -> None:
    assert default_config_path({}) == Path("/etc/carmic-watchd/config.toml")
    assert default_config_path({"WATCHD_CONFIG": ""}) == Path("/etc/carmic-watchd/config.toml")
    assert default_config_path({"WATCHD_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")


# ---- reading errors ------------------------------------------------------------------------------


def test_toml_syntax_error_gives_file_and_line(site: Path) -> None:
    text = CONTRACT_EXAMPLE.replace('scan = "events"', "scan = events")
    (problem,) = problems(site, text)
    line = text.splitlines().index("scan = events") + 1
    assert problem.startswith(f"{site / 'config.toml'}:{line}:")
    assert "TOML syntax error" in problem


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml", env={})
    assert str(tmp_path / "nope.toml") in str(info.value)
    assert "cannot read" in str(info.value)


def test_not_utf8(site: Path) -> None:
    path = site / "config.toml"
    path.write_bytes(b'[carmic]\nemail = "a@b"\n# \xff\n')
    with pytest.raises(ConfigError, match=r"config.toml:3: not UTF-8"):
        load_config(path, env={})


# ---- every validation message --------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], str]] = [
    # unknown keys, with and without a suggestion
    ("top", {"inboxes": []}, "inboxes: unknown key, did you mean inbox?"),
    ("carmic", {"realtme": "sse"}, "carmic.realtme: unknown key, did you mean realtime?"),
    ("carmic", {"zzz": 1}, "carmic.zzz: unknown key"),
    (
        "daemon",
        {"setle_seconds": 1},
        "daemon.setle_seconds: unknown key, did you mean settle_seconds?",
    ),
    ("inbox", {"outbx": "x"}, "inbox[0].outbx: unknown key, did you mean outbox?"),
    ("inbox", {"captoins": True}, "inbox[0].captoins: unknown key, did you mean captions?"),
    (
        "rule",
        {"caption_styel": "HORMOZI"},
        "inbox[0].rules.podcasts.caption_styel: unknown key, did you mean caption_style?",
    ),
    (
        "rule",
        {"render": {"min_score": 1, "max_clip": 2}},
        "inbox[0].rules.podcasts.render.max_clip: unknown key, did you mean max_clips?",
    ),
    # enums
    (
        "carmic",
        {"realtime": "push"},
        'carmic.realtime: must be one of "sse", "poll" (got string "push")',
    ),
    ("daemon", {"scan": "inotify"}, 'daemon.scan: must be one of "events", "poll"'),
    (
        "daemon",
        {"log_format": "xml"},
        'daemon.log_format: must be one of "auto", "text", "json", "journal"',
    ),
    (
        "daemon",
        {"log_level": "trace"},
        'daemon.log_level: must be one of "debug", "info", "warning", "error"',
    ),
    (
        "inbox",
        {"on_success": "archive"},
        'inbox[0].on_success: must be one of "move", "keep", "delete"',
    ),
    ("inbox", {"on_failure": "delete"}, 'inbox[0].on_failure: must be one of "move", "keep"'),
    (
        "rule",
        {"language_mode": "dual"},
        'inbox[0].rules.podcasts.language_mode: must be one of "single", "multi"',
    ),
    ("rule", {"render": "best"}, 'inbox[0].rules.podcasts.render: must be "all", "none" or'),
    (
        "rule",
        {"exports": ["avid"]},
        'inbox[0].rules.podcasts.exports[0]: must be one of "premiere", "davinci", "fcpx", '
        '"after_effects" (got string "avid")',
    ),
    (
        "rule",
        {"exports": ["fcpx", "fcpx"]},
        'inbox[0].rules.podcasts.exports[1]: "fcpx" is listed twice',
    ),
    (
        "rule",
        {"template": {"layout": {"layoutType": "grid"}}},
        "inbox[0].rules.podcasts.template.layout.layoutType: "
        'must be one of "face-track", "fit", "split"',
    ),
    (
        "rule",
        {"template": {"style": {"captionPosition": "left"}}},
        "inbox[0].rules.podcasts.template.style.captionPosition: "
        'must be one of "top", "middle", "bottom", "custom"',
    ),
    (
        "rule",
        {"template": {"style": {"linesPerScreen": 0}}},
        'inbox[0].rules.podcasts.template.style.linesPerScreen: must be an integer ≥ 1 or "auto"',
    ),
    (
        "rule",
        {"template": {"style": {"linesPerScreen": "two"}}},
        "inbox[0].rules.podcasts.template.style.linesPerScreen: must be an integer",
    ),
    # ranges
    ("daemon", {"settle_seconds": -1}, "daemon.settle_seconds: must be ≥ 0 (got integer -1)"),
    ("daemon", {"rescan_seconds": 0}, "daemon.rescan_seconds: must be > 0"),
    ("daemon", {"max_uploads": 0}, "daemon.max_uploads: must be ≥ 1"),
    ("daemon", {"poll_interval": 0}, "daemon.poll_interval: must be > 0"),
    ("daemon", {"max_render_retries": -1}, "daemon.max_render_retries: must be ≥ 0"),
    ("daemon", {"hold_seconds": -5}, "daemon.hold_seconds: must be ≥ 0"),
    ("daemon", {"settle_seconds": float("inf")}, "daemon.settle_seconds: must be a finite number"),
    ("carmic", {"poll_seconds": 0}, "carmic.poll_seconds: must be > 0"),
    ("carmic", {"creates_per_minute": 0}, "carmic.creates_per_minute: must be > 0"),
    ("carmic", {"exports_per_minute": -1}, "carmic.exports_per_minute: must be > 0"),
    ("carmic", {"max_processing": -1}, "carmic.max_processing: must be ≥ 0"),
    (
        "rule",
        {"render": {"min_score": 101}},
        "inbox[0].rules.podcasts.render.min_score: must be ≤ 100",
    ),
    (
        "rule",
        {"render": {"min_score": -1}},
        "inbox[0].rules.podcasts.render.min_score: must be ≥ 0",
    ),
    ("rule", {"render": {"max_clips": 0}}, "inbox[0].rules.podcasts.render.max_clips: must be ≥ 1"),
    (
        "rule",
        {"custom_instructions": "x" * 2001},
        "inbox[0].rules.podcasts.custom_instructions: must be at most 2000 characters (got 2001)",
    ),
    # types name the expected type
    ("daemon", {"max_uploads": "2"}, 'daemon.max_uploads: must be an integer (got string "2")'),
    ("daemon", {"max_uploads": 2.5}, "daemon.max_uploads: must be an integer (got float 2.5)"),
    ("daemon", {"max_uploads": True}, "daemon.max_uploads: must be an integer (got boolean True)"),
    (
        "daemon",
        {"settle_seconds": "5s"},
        'daemon.settle_seconds: must be a number (got string "5s")',
    ),
    ("daemon", {"state_dir": 5}, "daemon.state_dir: must be a string (got integer 5)"),
    ("carmic", {"email": ["a@b"]}, "carmic.email: must be a string (got array)"),
    (
        "rule",
        {"captions": "yes"},
        'inbox[0].rules.podcasts.captions: must be a boolean (true or false) (got string "yes")',
    ),
    (
        "rule",
        {"enable_multimodal": 1},
        "inbox[0].rules.podcasts.enable_multimodal: must be a boolean",
    ),
    ("rule", {"exports": "premiere"}, "inbox[0].rules.podcasts.exports: must be an array of"),
    (
        "rule",
        {"template": "bold"},
        'inbox[0].rules.podcasts.template: must be a table (got string "bold")',
    ),
    (
        "rule",
        {"template": {"style": "bold"}},
        "inbox[0].rules.podcasts.template.style: must be a table",
    ),
    ("rule", {"render": 5}, "inbox[0].rules.podcasts.render: must be a table (got integer 5)"),
    ("top", {"daemon": "x"}, 'daemon: must be a table (got string "x")'),
    # strings
    (
        "carmic",
        {"email": "not-an-email"},
        'carmic.email: must be an email address (got string "not-an-email")',
    ),
    ("carmic", {"email": " "}, "carmic.email: must not be empty"),
    (
        "rule",
        {"video_type": "pod cast"},
        'inbox[0].rules.podcasts.video_type: must be a word such as "podcast"',
    ),
    ("rule", {"video_type": ""}, "inbox[0].rules.podcasts.video_type: must not be empty"),
    ("rule", {"caption_style": ""}, "inbox[0].rules.podcasts.caption_style: must not be empty"),
    (
        "rule",
        {"language": "EN"},
        'inbox[0].rules.podcasts.language: must be a two-letter ISO 639-1 code such as "en", '
        'or "auto" (got string "EN"), did you mean "en"?',
    ),
    (
        "rule",
        {"language": "eng"},
        "inbox[0].rules.podcasts.language: must be a two-letter ISO 639-1 code",
    ),
    ("rule", {"language": 1}, "inbox[0].rules.podcasts.language: must be a string"),
    # api_url and metrics
    ("carmic", {"api_url": "ftp://x/api"}, "carmic.api_url: must be an http(s) URL"),
    ("carmic", {"api_url": "https://[::1/api"}, "carmic.api_url: is not a valid URL"),
    ("carmic", {"api_url": "https://api.carmic.pro/api/v1"}, "carmic.api_url: must not end in /v1"),
    (
        "carmic",
        {"api_url": "https://u:p@api.carmic.pro/api"},
        "carmic.api_url: must not contain a user or password",
    ),
    (
        "carmic",
        {"api_url": "https://api.carmic.pro/api?x=1"},
        "carmic.api_url: must not have a query string",
    ),
    (
        "daemon",
        {"metrics": "localhost"},
        "daemon.metrics: metrics address 'localhost': expected HOST:PORT",
    ),
    (
        "daemon",
        {"metrics": "127.0.0.1:99999"},
        "daemon.metrics: metrics address '127.0.0.1:99999': the port must be 0-65535",
    ),
    (
        "daemon",
        {"metrics": "metrics.example.com:9108"},
        "daemon.metrics: host 'metrics.example.com' must be an IP address",
    ),
    # sidecar-only keys in the config
    ("rule", {"title": "x"}, "inbox[0].rules.podcasts.title: only allowed in a per-file sidecar"),
    ("inbox", {"trim_start": 1}, "inbox[0].trim_start: only allowed in a per-file sidecar"),
    # required
    ("inbox", {"path": ""}, "inbox[0].path: must not be empty"),
]


@pytest.mark.parametrize(("section", "keys", "expected"), CASES, ids=[c[2][:60] for c in CASES])
def test_each_problem_names_its_key(
    site: Path, section: str, keys: dict[str, Any], expected: str
) -> None:
    if section == "top":
        doc = base_doc(site)
        doc.update(keys)
    else:
        doc = with_(site, section, **keys)
    found = problems(site, doc)
    assert any(p.startswith(expected) for p in found), found


def test_template_dates_are_refused(site: Path) -> None:
    doc = base_doc(site)
    text = write(site, doc).read_text() + (
        "[inbox.rules.podcasts.template.elements.hookTitle]\nat = 2024-01-01T00:00:00Z\n"
    )
    found = problems(site, text)
    assert found == [
        "inbox[0].rules.podcasts.template.elements.hookTitle.at: dates and times are not "
        "allowed in a template (JSON values only)"
    ]


def test_required_keys_and_tables(site: Path) -> None:
    assert problems(site, {"carmic": {"email": "a@b.c"}}) == [
        "inbox: at least one [[inbox]] is required"
    ]
    assert problems(site, {"carmic": {"email": "a@b.c"}, "inbox": []}) == [
        "inbox: at least one [[inbox]] is required"
    ]
    doc = base_doc(site)
    doc["inbox"] = doc["inbox"][0]
    assert problems(site, doc) == ["inbox: must be an array of tables: write [[inbox]] (got table)"]
    doc = base_doc(site)
    del doc["carmic"]["email"]
    del doc["inbox"][0]["outbox"]
    assert problems(site, doc) == ["carmic.email: is required", "inbox[0].outbox: is required"]
    doc = base_doc(site)
    doc["carmic"] = "x"
    assert problems(site, doc) == ['carmic: must be a table (got string "x")']


def test_all_problems_are_collected_into_one_error(site: Path) -> None:
    doc = base_doc(site)
    doc["carmic"]["realtime"] = "push"
    doc["daemon"].update(settle_seconds=-1, scan="x")
    doc["inbox"][0]["rules"] = {"a": {"caption_styel": "X"}, "b": {"render": "some"}}
    with pytest.raises(ConfigError) as info:
        load(site, doc)
    assert len(info.value.problems) == 5
    text = str(info.value)
    assert text.startswith("5 problems: ")
    assert "\n" not in text
    for p in info.value.problems:
        assert p in text
    single = ConfigError(["x.y: bad"])
    assert str(single) == "x.y: bad"
    assert pickle.loads(pickle.dumps(single)).problems == ["x.y: bad"]


def test_rule_names(site: Path) -> None:
    doc = base_doc(site)
    doc["inbox"][0]["rules"] = {
        "": {},
        "/abs": {},
        "a/../b": {},
        "a//b": {},
        "_done": {},
        "x/.hidden": {},
        "@eaDir": {},
        "win\\style": {},
        "video_type": "podcast",
        "podcasts": {},
        "podcasts/": {},
    }
    found = problems(site, doc)
    r = "inbox[0].rules."
    assert sorted(found) == sorted(
        [
            f'{r}"": the inbox root has no rule of its own: put its keys directly under [[inbox]]',
            f'{r}"/abs": a rule\'s name is a folder relative to the inbox (no leading /)',
            f'{r}"a/../b": a rule\'s folder must not contain empty, . or .. components',
            f'{r}"a//b": a rule\'s folder must not contain empty, . or .. components',
            f'{r}_done: "_done": folders starting with _ or . are never taken as input',
            f'{r}"x/.hidden": ".hidden": folders starting with _ or . are never taken as input',
            f'{r}"@eaDir": "@eaDir": that folder is on the ignore list and never taken as input',
            f'{r}"win\\\\style": use / between folders',
            f"{r}video_type: must be a table [inbox.rules.<folder>] of rule keys (got string "
            '"podcast"); inbox-wide defaults go directly under [[inbox]]',
            f'{r}"podcasts/": the same folder as the rule inbox[0].rules.podcasts',
        ]
    )


def test_nested_rule_tables_get_a_hint(site: Path) -> None:
    text = write(site, base_doc(site)).read_text() + (
        '[inbox.rules.clients.acme]\nvideo_type = "interview"\n'
    )
    assert problems(site, text) == [
        "inbox[0].rules.clients.acme: unknown key; for the folder clients/acme write "
        '[inbox.rules."clients/acme"]'
    ]


# ---- paths ---------------------------------------------------------------------------------------


def test_inbox_must_exist_and_be_a_folder(site: Path) -> None:
    doc = with_(site, "inbox", path=str(site / "missing"))
    # check (an error) and run (a warning) say the same: run waits for it, paused.
    assert problems(site, doc) == [
        f"inbox[0].path: {site / 'missing'} does not exist: {config_module.MISSING_INBOX}"
    ]
    (site / "file").write_text("x")
    doc = with_(site, "inbox", path=str(site / "file"))
    assert problems(site, doc) == [f"inbox[0].path: {site / 'file'} is not a folder"]
    # status/check without paths: the NAS may be away
    assert load(site, with_(site, "inbox", path=str(site / "missing")), check_paths=False)
    # the daemon may start with a share that is not mounted yet: that inbox waits, paused
    cfg = load(site, with_(site, "inbox", path=str(site / "missing")), allow_missing_inboxes=True)
    assert cfg.warnings == (
        f"inbox[0].path: {site / 'missing'} does not exist (yet): {config_module.MISSING_INBOX}",
    )


def deny(monkeypatch: Any, denied: Path, mode: int = os.W_OK) -> None:
    """Permission checks fail for ``denied`` (tests may run as root, who may do anything)."""
    real = config_module._access

    def access(path: Path, want: int) -> bool:
        return not (Path(path) == denied and want & mode) and real(path, want)

    monkeypatch.setattr(config_module, "_access", access)


def test_unwritable_inbox_with_move(site: Path, monkeypatch: Any) -> None:
    deny(monkeypatch, site / "inbox")
    user = config_module._user()
    assert problems(site, with_(site, "inbox", on_failure="keep")) == [
        f"inbox[0].path: {site / 'inbox'} is not writable by user {user}, which "
        'on_success = "move" needs (or set them to "keep")'
    ]
    (problem,) = problems(site, with_(site, "inbox", on_success="delete"))
    assert 'which on_success = "delete" and on_failure = "move" needs' in problem
    assert load(site, with_(site, "inbox", on_success="keep", on_failure="keep"))


def test_unreadable_inbox(site: Path, monkeypatch: Any) -> None:
    deny(monkeypatch, site / "inbox", os.R_OK)
    assert problems(site, base_doc(site)) == [
        f"inbox[0].path: {site / 'inbox'} is not readable by user {config_module._user()}"
    ]


def test_outbox_and_state_dir_must_be_creatable(site: Path) -> None:
    (site / "file").write_text("x")
    doc = with_(site, "inbox", outbox=str(site / "file" / "out"))
    doc["daemon"]["state_dir"] = str(site / "file")
    assert problems(site, doc) == [
        f"inbox[0].outbox: {site / 'file' / 'out'} cannot be created: {site / 'file'} is not a "
        "folder",
        f"daemon.state_dir: {site / 'file'} exists and is not a folder",
    ]


def test_outbox_parent_not_writable(site: Path, monkeypatch: Any) -> None:
    locked = site / "locked"
    locked.mkdir()
    deny(monkeypatch, locked)
    user = config_module._user()
    doc = with_(site, "inbox", outbox=str(locked / "a" / "out"))
    assert problems(site, doc) == [
        f"inbox[0].outbox: {locked / 'a' / 'out'} cannot be created: {locked} is not writable "
        f"by user {user}"
    ]
    doc = with_(site, "inbox", outbox=str(locked))
    assert problems(site, doc) == [f"inbox[0].outbox: {locked} is not writable by user {user}"]


def test_inboxes_may_not_overlap(site: Path) -> None:
    (site / "inbox" / "sub").mkdir()
    (site / "link").symlink_to(site / "inbox")
    doc = base_doc(site)
    doc["inbox"] += [
        {"path": str(site / "inbox" / "sub"), "outbox": str(site / "out2")},
        {"path": str(site / "link"), "outbox": str(site / "out3")},
    ]
    assert problems(site, doc) == [
        "inbox[1].path: inbox[1].path is inside inbox[0].path; inboxes may not overlap",
        "inbox[2].path: the same folder as inbox[0].path",
        "inbox[2].path: inbox[1].path is inside inbox[2].path; inboxes may not overlap",
    ]


def test_outbox_and_state_dir_not_inside_an_inbox(site: Path) -> None:
    (site / "inbox2").mkdir()
    doc = base_doc(site)
    doc["inbox"][0]["outbox"] = str(site / "inbox2" / "results")
    doc["inbox"].append({"path": str(site / "inbox2"), "outbox": str(site / "inbox2")})
    doc["daemon"]["state_dir"] = str(site / "inbox" / "_state")
    assert problems(site, doc) == [
        "inbox[0].outbox: inside inbox[1].path; results would be taken as input",
        "inbox[1].outbox: inside inbox[1].path; results would be taken as input",
        "daemon.state_dir: inside inbox[0].path",
    ]


def test_inbox_inside_an_outbox_is_a_warning(site: Path) -> None:
    doc = with_(site, "inbox", outbox=str(site))
    cfg = load(site, doc)
    assert cfg.warnings == ("inbox[0].path: inside inbox[0].outbox; keep inputs and results apart",)


def test_state_dir_on_a_network_filesystem(site: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(config_module, "fs_type", lambda path: "nfs4")
    (problem,) = problems(site, base_doc(site))
    assert problem == (
        f"daemon.state_dir: {site / 'state'} is on a network filesystem (nfs4); the ledger "
        "needs a local disk"
    )


def test_ca_file(site: Path) -> None:
    (site / "ca.pem").write_text("not a certificate\n")
    doc = with_(site, "carmic", ca_file="ca.pem")
    (problem,) = problems(site, doc)
    assert problem.startswith(f"carmic.ca_file: cannot load {site / 'ca.pem'} as a PEM CA bundle")
    assert load(site, doc, check_paths=False).carmic.ca_file == str(site / "ca.pem")


# ---- warnings ------------------------------------------------------------------------------------


def test_warnings_are_kept_and_logged(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    doc = base_doc(site)
    doc["carmic"].update(api_url="http://carmic.example.com/api", creates_per_minute=10)
    doc["daemon"]["metrics"] = "0.0.0.0:9108"
    doc["inbox"][0]["language"] = "xx"
    doc["inbox"][0]["template"] = {"styles": {}, "style": {"captionFnt": "Inter"}}
    with caplog.at_level(logging.WARNING, logger="watchd.config"):
        cfg = load(site, doc)
    assert cfg.warnings == (
        "carmic.api_url: plain http: the password and tokens would cross the network unencrypted",
        "carmic.creates_per_minute: above the API's 5 per minute per workspace: expect 429 answers",
        "daemon.metrics: 0.0.0.0 is not loopback: /metrics and /healthz have no authentication",
        'inbox[0].language: "xx" is not an ISO 639-1 code this version knows',
        "inbox[0].template.styles: not a TemplateConfig key the API reference lists (sent as it "
        "is); did you mean style?",
        "inbox[0].template.style.captionFnt: not a TemplateConfig key the API reference lists "
        "(sent as it is); did you mean captionFont?",
    )
    assert [r.getMessage() for r in caplog.records] == [f"config: {w}" for w in cfg.warnings]
    caplog.clear()
    load(site, doc, log_warnings=False)
    assert caplog.records == []


def test_metrics_addresses(site: Path) -> None:
    for given_, expected in (
        ("", ""),
        ("9108", "127.0.0.1:9108"),
        ("127.0.0.1:9108", "127.0.0.1:9108"),
        ("localhost:0", "localhost:0"),
        ("[::1]:9108", "[::1]:9108"),
    ):
        cfg = load(site, with_(site, "daemon", metrics=given_))
        assert cfg.daemon.metrics == expected
        assert cfg.warnings == ()


def test_local_http_api_is_fine(site: Path) -> None:
    cfg = load(site, with_(site, "carmic", api_url="http://127.0.0.1:8765/api/"))
    assert cfg.carmic.api_url == "http://127.0.0.1:8765/api"
    assert cfg.warnings == ()


# ---- rules ---------------------------------------------------------------------------------------


def _inbox(*names: str) -> InboxConfig:
    rules = tuple(Rule(n, Preset(video_type=f"t{i}")) for i, n in enumerate(("", *names)))
    return InboxConfig(0, Path("/in"), Path("/out"), "move", "move", rules)


def test_rule_for_longest_component_prefix() -> None:
    inbox = _inbox("podcasts", "clients", "clients/acme", "pod")
    cases = {
        "": "",
        ".": "",
        "podcasts": "podcasts",
        "podcasts/season1": "podcasts",
        "pod": "pod",
        "pod/x": "pod",
        "podcast": "",
        "podcasts2": "",
        "clients": "clients",
        "clients/acme": "clients/acme",
        "clients/acme/raw/2024": "clients/acme",
        "clients/acme2": "clients",
        "other/podcasts": "",
    }
    for folder, rule in cases.items():
        assert inbox.rule_for(PurePosixPath(folder)).name == rule, folder
        assert inbox.rule_for(folder).name == rule, folder
    assert inbox.root_rule.name == ""
    with pytest.raises(ValueError):
        inbox.rule_for("/podcasts")
    with pytest.raises(ValueError):
        inbox.rule_for("podcasts/../clients")


def test_rule_names_and_folders_compare_in_nfc(site: Path) -> None:
    nfd = unicodedata.normalize("NFD", "vidéos")
    doc = with_(site, "inbox", rules={nfd: {"video_type": "tutorial"}})
    inbox = load(site, doc).inboxes[0]
    assert inbox.rules[1].name == unicodedata.normalize("NFC", "vidéos")
    assert inbox.rule_for(nfd + "/x").name == inbox.rules[1].name


@given(
    rules=st.sets(
        st.lists(st.sampled_from(["a", "b", "ab", "c"]), min_size=1, max_size=3).map("/".join),
        max_size=6,
    ),
    folder=st.lists(st.sampled_from(["a", "b", "ab", "c", "d"]), max_size=4),
)
def test_rule_for_matches_a_brute_force_search(rules: set[str], folder: list[str]) -> None:
    inbox = _inbox(*sorted(rules))
    matches = [n for n in rules if folder[: len(n.split("/"))] == n.split("/")]
    expected = max(matches, key=lambda n: len(n.split("/")), default="")
    assert inbox.rule_for("/".join(folder)).name == expected


def test_inbox_keys_are_defaults_for_every_rule(site: Path) -> None:
    doc = with_(
        site,
        "inbox",
        language="de",
        exports=["fcpx"],
        captions=False,
        template={"style": {"captionFont": "Inter", "fontSize": 60}, "layout": {"padding": 0}},
        rules={
            "a": {"exports": [], "template": {"style": {"fontSize": 80}}},
            "b": {"language": "auto", "render": "none"},
        },
    )
    root, a, b = load(site, doc).inboxes[0].rules
    assert root.preset.language == "de"
    assert a.preset.language == "de"
    assert a.preset.exports == ()  # replaced, not merged
    assert a.preset.captions is False
    assert a.preset.template == {
        "style": {"captionFont": "Inter", "fontSize": 80},
        "layout": {"padding": 0},
    }
    assert b.preset.language is None  # "auto"
    assert b.preset.render == RenderChoice("none")
    assert b.preset.exports == ("fcpx",)


# ---- sidecars ------------------------------------------------------------------------------------


@pytest.fixture
def inbox(site: Path) -> InboxConfig:
    doc = with_(
        site,
        "inbox",
        language="en",
        rules={
            "podcasts": {
                "video_type": "podcast",
                "caption_style": "HORMOZI",
                "exports": ["premiere"],
                "template": {"style": {"captionFont": "Inter", "uppercase": True}},
            }
        },
    )
    return load(site, doc).inboxes[0]


def test_resolve_without_sidecar(inbox: InboxConfig) -> None:
    rule, preset = resolve_preset(inbox, PurePosixPath("podcasts/ep12.mp4"), None)
    assert rule.name == "podcasts"
    assert preset is rule.preset
    rule, preset = resolve_preset(inbox, "ep1.mp4")
    assert rule.name == ""
    assert preset.language == "en"
    rule, _ = resolve_preset(inbox, "podcasts.mp4")  # a file, not the folder
    assert rule.name == ""


def test_sidecar_merges_on_top(inbox: InboxConfig, site: Path) -> None:
    video = site / "inbox" / "podcasts" / "ep12.mp4"
    assert sidecar_for(video) == site / "inbox" / "podcasts" / "ep12.mp4.toml"
    sidecar = sidecar_for(video)
    sidecar.parent.mkdir()
    sidecar.write_text(
        'title = "Episode 12"\ntrim_start = 60\ntrim_end = 1740.5\nlanguage = "auto"\n'
        'exports = ["davinci"]\nrender = { max_clips = 3 }\n'
        "[template.style]\nuppercase = false\n"
    )
    rule, preset = resolve_preset(inbox, "podcasts/ep12.mp4", sidecar)
    assert rule.name == "podcasts"
    assert preset == dataclasses.replace(
        rule.preset,
        title="Episode 12",
        trim_start=60,
        trim_end=1740.5,
        language=None,
        exports=("davinci",),
        render=RenderChoice("best", 0, 3),
        template=FrozenTable({"style": {"captionFont": "Inter", "uppercase": False}}),
    )
    assert rule.preset.template["style"]["uppercase"] is True  # the rule is untouched


def test_sidecar_errors_name_the_file_and_key(inbox: InboxConfig, site: Path) -> None:
    sidecar = site / "inbox" / "ep.mp4.toml"
    sidecar.write_text(
        'caption_styel = "X"\ntrim_start = 30\ntrim_end = 20\nrender = "some"\npath = "x"\n'
    )
    with pytest.raises(ConfigError) as info:
        resolve_preset(inbox, "ep.mp4", sidecar)
    assert info.value.problems == [
        f"{sidecar}: caption_styel: unknown key, did you mean caption_style?",
        f"{sidecar}: path: unknown key",
        f'{sidecar}: render: must be "all", "none" or {{ min_score, max_clips }} (got string '
        '"some")',
        f"{sidecar}: trim_end: must be greater than trim_start (20 ≤ 30)",
    ]
    sidecar.write_text("trim_start = -1\ntitle = 5\n")
    with pytest.raises(ConfigError) as info:
        resolve_preset(inbox, "ep.mp4", sidecar)
    assert info.value.problems == [
        f"{sidecar}: title: must be a string (got integer 5)",
        f"{sidecar}: trim_start: must be ≥ 0 (got integer -1)",
    ]


def test_sidecar_syntax_error_and_missing_file(inbox: InboxConfig, site: Path) -> None:
    sidecar = site / "inbox" / "ep.mp4.toml"
    sidecar.write_text('title = "a"\ntrim_start = = 1\n')
    with pytest.raises(ConfigError, match=rf"^{sidecar}:2:\d+: TOML syntax error"):
        resolve_preset(inbox, "ep.mp4", sidecar)
    with pytest.raises(ConfigError, match="cannot read"):
        resolve_preset(inbox, "ep.mp4", site / "inbox" / "gone.mp4.toml")


def test_sidecar_warnings_are_logged(
    inbox: InboxConfig, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sidecar = site / "inbox" / "ep.mp4.toml"
    sidecar.write_text('language = "qq"\n')
    with caplog.at_level(logging.WARNING, logger="watchd.config"):
        _, preset = resolve_preset(inbox, "ep.mp4", sidecar)
    assert preset.language == "qq"
    assert [r.getMessage() for r in caplog.records] == [
        f'sidecar {sidecar}: language: "qq" is not an ISO 639-1 code this version knows'
    ]


# ---- presets as JSON -----------------------------------------------------------------------------


def test_preset_json_round_trip(inbox: InboxConfig) -> None:
    preset = dataclasses.replace(
        inbox.rules[1].preset, render=RenderChoice("best", 70, 5), title="T", trim_start=1.5
    )
    data = preset.to_json()
    text = json.dumps(data)
    assert Preset.from_json(json.loads(text)) == preset
    assert data["render"] == {"mode": "best", "min_score": 70, "max_clips": 5}
    assert data["template"] == {"style": {"captionFont": "Inter", "uppercase": True}}
    assert data["exports"] == ["premiere"]
    for render in (RenderChoice("all"), RenderChoice("none"), RenderChoice("best", 10, None)):
        assert RenderChoice.from_json(render.to_json()) == render


def test_preset_from_json_tolerates_extra_and_missing_keys() -> None:
    assert Preset.from_json({}) == Preset()
    assert Preset.from_json({"_delivery": {"inbox": "/x"}, "language": "fr"}) == Preset(
        language="fr"
    )


def test_stored_render_round_trips() -> None:
    """The pipeline reads the stored preset's render with RenderChoice.from_json."""
    for render in (
        RenderChoice("all"),
        RenderChoice("none"),
        RenderChoice("best", 70, 5),
        RenderChoice("best", 0, None),
    ):
        assert RenderChoice.from_json(render.to_json()) == render


def test_merge_tables() -> None:
    base = FrozenTable({"style": {"font": "A", "size": 1}, "b_roll": [1], "x": {"y": 1}})
    merged = config_module.merge_tables(base, {"style": {"size": 2}, "b_roll": [2], "x": 5})
    assert merged == {"style": {"font": "A", "size": 2}, "b_roll": (2,), "x": 5}
    assert base["style"]["size"] == 1


def test_frozen_table_pickles_and_copies() -> None:
    table = FrozenTable({"a": {"b": [1, {"c": 2}]}})
    assert table["a"]["b"][1]["c"] == 2
    assert isinstance(table["a"]["b"], tuple)
    assert pickle.loads(pickle.dumps(table)) == table
    assert copy.deepcopy(table) is table
    assert hash(table) == hash(FrozenTable({"a": {"b": [1, {"c": 2}]}}))
    assert repr(table).startswith("FrozenTable(")


def test_render_choice_checks_its_mode() -> None:
    with pytest.raises(ValueError):
        RenderChoice("some")
    with pytest.raises(ValueError):
        RenderChoice.from_json(5)


# ---- config.example.toml -------------------------------------------------------------------------

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"


def example_doc(site: Path) -> dict[str, Any]:
    """The example, with its machine paths pointed into ``site``."""
    doc = tomllib.loads(EXAMPLE.read_text())
    doc["carmic"]["password_file"] = str(site / "password")
    doc["daemon"]["state_dir"] = str(site / "state")
    for i, inbox in enumerate(doc["inbox"]):
        inbox["path"] = str(site / f"inbox{i}")
        inbox["outbox"] = str(site / f"outbox{i}")
        (site / f"inbox{i}").mkdir()
    return doc


def test_example_config_loads(site: Path) -> None:
    cfg = parse_config(example_doc(site), path=site / "config.toml", env={})
    assert cfg.warnings == ()
    assert cfg.carmic.password is not None
    (inbox,) = cfg.inboxes
    assert [r.name for r in inbox.rules] == ["", "podcasts", "clients/acme"]
    assert inbox.rule_for("podcasts/season1").preset.render == RenderChoice("best", 70, 5)
    acme = inbox.rule_for("clients/acme").preset
    assert (acme.language, acme.render, acme.exports) == (None, RenderChoice("none"), ("fcpx",))
    assert acme.template == {
        "layout": {"layoutType": "fit"},
        "style": {"captionPosition": "bottom", "linesPerScreen": 2},
    }
    assert inbox.root_rule.preset == Preset(language="en")


def test_example_config_as_shipped(caplog: pytest.LogCaptureFixture) -> None:
    """As it is in the tree (its paths are not on this machine): valid, no warnings, and no
    password source set, so the systemd credential is what the daemon finds."""
    with caplog.at_level(logging.WARNING):
        cfg = load_config(EXAMPLE, env={}, check_paths=False)
    assert cfg.warnings == ()
    assert caplog.records == []
    assert cfg.carmic.password is None
    assert cfg.inboxes[0].path == Path("/srv/nas/carmic/inbox")


def test_example_config_shows_the_defaults(site: Path) -> None:
    """Keys the example does not call examples carry their default value."""
    doc = example_doc(site)
    example = parse_config(doc, path=site / "config.toml", env={})
    bare = {
        "carmic": {"email": doc["carmic"]["email"]},
        "inbox": [{"path": doc["inbox"][0]["path"], "outbox": doc["inbox"][0]["outbox"]}],
    }
    defaults = parse_config(bare, path=site / "config.toml", env={}, check_paths=False)
    for key in config_module.DAEMON_KEYS:
        if key != "state_dir":
            assert getattr(example.daemon, key) == getattr(defaults.daemon, key), key
    for key in config_module.CARMIC_KEYS:
        if key not in ("email", "password_file", "password"):
            assert getattr(example.carmic, key) == getattr(defaults.carmic, key), key
    assert example.daemon.state_dir != defaults.daemon.state_dir  # pointed into the test folder
    assert tomllib.loads(EXAMPLE.read_text())["daemon"]["state_dir"] == "/var/lib/carmic-watchd"
    for key in ("on_success", "on_failure"):
        assert getattr(example.inboxes[0], key) == getattr(defaults.inboxes[0], key)


def test_example_config_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    keys = (
        *config_module.CARMIC_KEYS,
        *config_module.DAEMON_KEYS,
        *config_module.INBOX_KEYS,
        *config_module.RULE_KEYS,
        *config_module.SIDECAR_ONLY_KEYS,
        *config_module.RENDER_KEYS,
    )
    missing = [
        key
        for key in keys
        if not re.search(rf"(^|[\s{{#.\[]){key}\s*=", text, re.M) and f"[inbox.{key}." not in text
    ]
    assert missing == []
    for section in ("[carmic]", "[daemon]", "[[inbox]]", "[inbox.rules."):
        assert section in text
    for source in ("password_file", "WATCHD_CARMIC_PASSWORD", "carmic-password"):
        assert source in text

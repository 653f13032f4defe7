"""The user documentation stands alone and stays true to the code: every command and option of
the parser is in docs/cli.md, every configuration key in docs/configuration.md and
config.example.toml, every job state and failure code in docs/states.md, and the README and
docs link only to files in the repository (like sqlite-utils' test that every CLI command is
documented)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from watchd.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def sections(text: str, level: str = "## ") -> dict[str, str]:
    """The text under each heading of ``level``, by its heading line (without the hashes)."""
    out: dict[str, str] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith(level):
            title = line[len(level) :].strip()
            out[title] = ""
        elif title:
            out[title] += line + "\n"
    return out


# ---- docs/cli.md -----------------------------------------------------------------------------


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string (``-c``, ``--config``, ...) and positional name (``ID``)."""
    out: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            out.extend(action.option_strings)
        else:
            out.append(action.metavar if isinstance(action.metavar, str) else action.dest)
    return out


CLI = (DOCS / "cli.md").read_text()
CLI_SECTIONS = sections(CLI)


def test_every_command_has_its_section() -> None:
    documented = {t.strip("`").split()[1] for t in CLI_SECTIONS if t.startswith("`watchd ")}
    assert documented == set(subcommands())


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_every_option_of_a_command_is_documented_in_its_section(command: str) -> None:
    text = CLI_SECTIONS[f"`watchd {command}`"]
    for option in options(subcommands()[command]):
        if option in ("-h", "--help"):  # documented once, at the top
            continue
        assert f"`{option}" in text, f"watchd {command} {option} is not in docs/cli.md"
    # The usage line as `watchd COMMAND --help` prints it, option for option.
    usage = subcommands()[command].format_usage()
    for flag in re.findall(r"\[(-[-\w]+)", usage):
        assert flag in text, flag


def test_the_top_level_options_and_exit_codes_are_documented() -> None:
    for option in options(build_parser()):
        assert f"`{option}`" in CLI, option
    codes = sections(CLI)["Common to every command"]
    for code in ("0", "1", "2", "3"):
        assert re.search(rf"^\| {code} \|", codes, re.M), f"exit code {code}"
    # Every exit code the help names is in the table.
    for code in re.findall(r"(\d) [a-z]", build_parser().epilog or ""):
        assert re.search(rf"^\| {code} \|", codes, re.M), code


# ---- docs/configuration.md and config.example.toml ----------------------------------------------

CONFIGURATION = (DOCS / "configuration.md").read_text()
EXAMPLE = (REPO / "config.example.toml").read_text()
# Where each key set of the loader is documented: the section of docs/configuration.md whose
# table lists it. A key set added later (any tuple named *_KEYS in watchd/config.py) must at
# least appear in a table somewhere on the page and in the example config.
KEY_SECTIONS = {
    "TOP_KEYS": "The file has these tables",
    "CARMIC_KEYS": "`[carmic]`",
    "DAEMON_KEYS": "`[daemon]`",
    "INBOX_KEYS": "`[[inbox]]`",
    "RULE_KEYS": "Rule keys",
    "RENDER_KEYS": "Rule keys",
    "SIDECAR_ONLY_KEYS": "Sidecars",
    "TEMPLATE_KEYS": "`template`",
    "WEB_KEYS": "`[web]`",
}
NOT_IN_EXAMPLE = {"TEMPLATE_KEYS"}  # the example shows a template, not every TemplateConfig key


def key_sets() -> dict[str, tuple[str, ...]]:
    import watchd.config as config

    return {
        name: value
        for name, value in vars(config).items()
        if name.endswith("_KEYS") and isinstance(value, tuple) and value
    }


def section_text(title: str) -> str:
    if title == "The file has these tables":
        return CONFIGURATION.split("## ", 1)[0]
    for level in ("## ", "### "):
        found = sections(CONFIGURATION, level)
        if title in found:
            return found[title]
    raise AssertionError(f"docs/configuration.md has no section {title!r}")


def table_keys(text: str) -> set[str]:
    """The first cell of every table row: ``| `key` | ...`` (``[carmic]``, ``[[inbox]]`` too)."""
    keys = set()
    for cell in re.findall(r"^\| `([^`]+)` \|", text, re.M):
        keys.add(cell.strip("[]").split(".")[0])
    return keys


def test_the_loader_knows_the_key_sets_this_test_maps() -> None:
    assert set(KEY_SECTIONS) <= set(key_sets())


@pytest.mark.parametrize("name", sorted(key_sets()))
def test_every_config_key_is_documented_in_its_section(name: str) -> None:
    where = KEY_SECTIONS.get(name)
    text = section_text(where) if where else CONFIGURATION
    documented = table_keys(text)
    if name == "TEMPLATE_KEYS":  # the sections and the keys inside them, as they are written
        documented |= set(re.findall(r"`(\w+)`", text))
    missing = [key for key in key_sets()[name] if key not in documented]
    assert not missing, f"{name}: {missing} not in docs/configuration.md ({where or 'anywhere'})"


def test_every_template_section_key_is_documented() -> None:
    import watchd.config as config

    text = section_text("`template`")
    for section, keys in config.TEMPLATE_SECTIONS.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{section}` |"))
        for key in keys:
            assert f"`{key}`" in row, f"template.{section}.{key}"


def in_example(key: str) -> bool:
    """``key = ...`` (also commented out, or inline in a table), or ``[key]`` / ``[[key]]`` /
    ``[inbox.key....]`` as a table header."""
    pattern = rf"(?<![\w.-]){re.escape(key)}\s*=|\[\[?{re.escape(key)}[\].]|\.{re.escape(key)}\."
    return re.search(pattern, EXAMPLE) is not None


@pytest.mark.parametrize("name", sorted(set(key_sets()) - NOT_IN_EXAMPLE))
def test_every_config_key_is_in_the_example_config(name: str) -> None:
    missing = [key for key in key_sets()[name] if not in_example(key)]
    assert not missing, f"{name}: {missing} not in config.example.toml"


def test_documented_defaults_are_the_loaders() -> None:
    """The default column of [carmic] and [daemon] is what an empty table loads as."""
    from watchd.config import parse_config

    cfg = parse_config(
        {"carmic": {"email": "a@b.c"}, "inbox": [{"path": "/in", "outbox": "/out"}]},
        env={},
        check_paths=False,
        log_warnings=False,
    )
    for table, values in (("`[carmic]`", cfg.carmic), ("`[daemon]`", cfg.daemon)):
        rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| `([^`]*)` \|", section_text(table), re.M)
        assert rows, table
        for key, shown in rows:
            value = getattr(values, key)
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, str):
                assert shown == f'"{value}"', (key, shown, value)
            else:
                assert float(shown) == float(value), (key, shown, value)


# ---- docs/states.md -------------------------------------------------------------------------

STATES = (DOCS / "states.md").read_text()


def test_every_stage_is_documented() -> None:
    from watchd.ledger.states import Stage

    documented = set(re.findall(r"^\| `(\w+)` \|", sections(STATES)["States"], re.M))
    assert documented == {stage.value for stage in Stage}


def failure_codes() -> set[str]:
    """Every failure code the code can produce: the literal codes of ``Fail(...)``, the probe's
    codes (``probe_<code>``; a timeout is retried, never a failure), Carmic's failure statuses
    the daemon knows (lower-cased) and the refusals that fail a job (the error's class name)."""
    from typing import get_args

    from watchd.carmic import errors
    from watchd.failures import FAILURES
    from watchd.probe import ProbeCode

    codes: set[str] = set()
    for path in (REPO / "watchd").rglob("*.py"):
        codes |= set(re.findall(r"\bFail\(\s*\"(\w+)\"", path.read_text()))
    codes |= {f"probe_{code}" for code in get_args(ProbeCode) if code != "timeout"}
    codes |= set(FAILURES)  # the failure table (watchd/failures.py), Carmic's statuses included
    handled_apart = (errors.AuthError, errors.UrlExpired, errors.SourceChanged)
    for cls in vars(errors).values():
        if not (isinstance(cls, type) and issubclass(cls, errors.CarmicError)):
            continue
        if issubclass(cls, errors.PermanentError | errors.TransferError) and not issubclass(
            cls, handled_apart
        ):
            codes.add(cls.__name__)
    return codes


def test_every_failure_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", STATES.split("## Failure codes", 1)[1], re.M))
    codes = failure_codes()
    assert {"probe_empty", "no_clips", "render_failed", "BadRequest"} <= codes  # the scan works
    assert not codes - documented, f"not in docs/states.md: {sorted(codes - documented)}"


# ---- docs/outbox.md -------------------------------------------------------------------------

OUTBOX = (DOCS / "outbox.md").read_text()


def outbox_example() -> dict[str, object]:
    import json

    block = re.search(r"^```json\n(\{.*?)^```", OUTBOX, re.M | re.S)
    assert block, "docs/outbox.md has no manifest example"
    doc = json.loads(block.group(1))
    assert isinstance(doc, dict)
    return doc


def test_the_manifest_example_has_the_written_shape() -> None:
    from watchd.outbox import manifest

    doc = outbox_example()
    assert list(doc) == [*manifest.TOP_KEYS, "watchd_version", "job_id", "preset"]
    clips = doc["clips"]
    assert isinstance(clips, list)
    assert list(clips[0]) == [*manifest.CLIP_KEYS, "thumbnail"]
    assert manifest.path_problems(doc) == []
    assert doc["status"] in manifest.STATUSES


def test_every_manifest_field_is_documented() -> None:
    from watchd.outbox import manifest

    fields = sections(OUTBOX, "### ")["Fields"]
    documented = set(re.findall(r"`(\w+)`", fields))
    for key in (*manifest.TOP_KEYS, *manifest.CLIP_KEYS, "watchd_version", "job_id", "preset"):
        assert key in documented, key
    for status in manifest.STATUSES:
        assert f'`"{status}"`' in fields, status


def test_the_manifest_example_follows_the_published_schema() -> None:
    import json

    schema_file = DOCS / "manifest.schema.json"
    if not schema_file.exists():
        pytest.skip("docs/manifest.schema.json is not in this checkout")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(outbox_example(), json.loads(schema_file.read_text()))


# ---- the docs stand alone --------------------------------------------------------------------

USER_DOCS = [
    REPO / "README.md",
    *sorted(DOCS.glob("*.md")),
    REPO / "systemd" / "README.md",
]
USER_FILES = [
    *USER_DOCS,
    REPO / "config.example.toml",
    *sorted((REPO / "systemd").glob("*.*")),
    *sorted((REPO / "examples").glob("*")),
    *sorted((REPO / "watchd").rglob("*.py")),
]
OUTSIDE = ("CONTRACT.md", "carmic-api.md", "shared docs", "../shared", "CONTRACT §")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m) for m in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}


@pytest.mark.parametrize("path", USER_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_points_outside_the_repository(path: Path) -> None:
    text = path.read_text()
    for needle in OUTSIDE:
        assert needle not in text, f"{path.relative_to(REPO)} mentions {needle}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_lead_to_files_in_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("https://", "http://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        assert dest.is_relative_to(REPO), f"{doc.name}: {target} leaves the repository"
        assert dest.exists(), f"{doc.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{doc.name}: {target}: no such heading"


def test_job_ids_in_the_docs_look_like_real_ones() -> None:
    from watchd.ledger.db import new_job_id

    assert re.fullmatch(r"j[0-9a-f]{10}", new_job_id())
    for doc in USER_DOCS:
        text = doc.read_text()
        assert not re.search(r"\bj-\w", text), f"{doc.name}: a job id like j-ab12"
        for token in re.findall(r"\bj[0-9a-f]{4,}\w*", text):
            assert re.fullmatch(r"j[0-9a-f]{10}", token), f"{doc.name}: job id {token}"


def test_the_readme_quickstart_is_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S)
    assert block
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]


def test_the_readme_walkthrough_config_loads(tmp_path: Path) -> None:
    """The first real config of the README, in the folders its steps make, is a valid config
    whose podcasts rule has the preset the README describes."""
    from watchd.config import load_config

    readme = (REPO / "README.md").read_text()
    walk = readme.split("## Your first real config", 1)[1].split("\n## ", 1)[0]
    assert "mkdir -p ~/carmic/inbox/podcasts" in walk
    assert "install -m 600 /dev/null ~/carmic/password" in walk
    for command in ("watchd check --offline -c", "watchd check -c", "watchd run -c"):
        assert f"{command} ~/carmic/config.toml" in walk, command
    toml = re.search(r"```toml\n(.*?)```", walk, re.S)
    assert toml
    home = tmp_path / "carmic"
    (home / "inbox" / "podcasts").mkdir(parents=True)
    (home / "password").write_text("secret-password\n")
    (home / "password").chmod(0o600)
    (home / "config.toml").write_text(toml.group(1))
    cfg = load_config(home / "config.toml", env={}, log_warnings=False)
    assert cfg.warnings == ()
    assert cfg.daemon.state_dir == home / "state"
    (inbox,) = cfg.inboxes
    assert inbox.outbox == home / "outbox"
    preset = inbox.rule_for("podcasts").preset
    assert (preset.video_type, preset.caption_style, preset.language) == (
        "podcast",
        "HORMOZI",
        "en",
    )

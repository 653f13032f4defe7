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

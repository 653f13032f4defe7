import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlite_utils

from watchd.cli import COMMANDS, build_parser
from watchd.ledger.db import MIGRATIONS

REPO = Path(__file__).resolve().parents[1]


def test_every_contract_command_is_in_help() -> None:
    help_text = build_parser().format_help()
    for cmd in ("run", "check", "status", "retry", "forget", "emulator", "demo"):
        assert cmd in help_text
    assert set(COMMANDS) == {
        "run",
        "check",
        "status",
        "retry",
        "forget",
        "notify",
        "ledger",
        "emulator",
        "demo",
    }


def test_readme_documents_every_command_and_the_two_quickstart_commands() -> None:
    readme = (REPO / "README.md").read_text()
    for cmd in COMMANDS:
        assert re.search(rf"`watchd {cmd}\b", readme), cmd
    quick = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick


def test_contract_flags_parse() -> None:
    p = build_parser()
    assert p.parse_args(["status", "-c", "x.toml", "--json"]).json
    assert p.parse_args(["check", "--offline"]).offline
    assert p.parse_args(["retry", "a", "b"]).ids == ["a", "b"]
    assert p.parse_args(["run", "--debug"]).debug
    assert p.parse_args(["ledger", "rebuild", "-c", "x.toml"]).ledger_command == "rebuild"
    args = p.parse_args(
        [
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--email",
            "e@x",
            "--password",
            "Pw-12345",
        ]
    )
    assert args.port == 0


def test_status_without_ledger_prints_empty_json(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    (tmp_path / "in").mkdir()
    cfg.write_text(
        f'[carmic]\napi_url = "http://127.0.0.1:1/api"\nemail = "a@b.c"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[inbox]]\npath = "{tmp_path / "in"}"\noutbox = "{tmp_path / "out"}"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "watchd", "status", "--json", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    r = subprocess.run(
        [sys.executable, "-m", "watchd", "retry", "jnope", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "unknown job" in r.stderr


@pytest.mark.parametrize("migrated", [0, 2], ids=["no-tables", "half-migrated"])
def test_status_while_the_daemon_creates_its_ledger(tmp_path: Path, migrated: int) -> None:
    """The file exists, its tables (or its last columns) do not yet (the daemon is starting,
    one migration after the other): not a traceback."""
    cfg = tmp_path / "c.toml"
    (tmp_path / "in").mkdir()
    (tmp_path / "state").mkdir()
    db = sqlite_utils.Database(tmp_path / "state" / "ledger.db")
    for number, migration in enumerate(MIGRATIONS[:migrated], start=1):
        migration(db)
        db.execute(f"PRAGMA user_version = {number}")
    db.close()
    cfg.write_text(
        f'[carmic]\napi_url = "http://127.0.0.1:1/api"\nemail = "a@b.c"\n'
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[inbox]]\npath = "{tmp_path / "in"}"\noutbox = "{tmp_path / "out"}"\n'
    )
    for extra in (["--json"], []):
        r = subprocess.run(
            [sys.executable, "-m", "watchd", "status", *extra, "-c", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.strip() in ("[]", "no ledger yet: the daemon has not run with this config")


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[carmic]\nrealtime = 'push'\n")
    r = subprocess.run(
        [sys.executable, "-m", "watchd", "run", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    assert "carmic.realtime" in r.stderr


def test_a_damaged_ledger_is_one_line_for_every_command_that_reads_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    (tmp_path / "in").mkdir()
    state = tmp_path / "state"
    state.mkdir()
    db = state / "ledger.db"
    db.write_bytes(b"not a database " * 300)
    cfg.write_text(
        f'[carmic]\napi_url = "http://127.0.0.1:1/api"\nemail = "a@b.c"\n'
        f'[daemon]\nstate_dir = "{state}"\n'
        f'[[inbox]]\npath = "{tmp_path / "in"}"\noutbox = "{tmp_path / "out"}"\n'
    )
    for args in (["status"], ["retry", "j1"], ["forget", "j1"], ["ledger", "rebuild"]):
        r = subprocess.run(
            [sys.executable, "-m", "watchd", *args, "-c", str(cfg)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if "WARNING" not in line]
        assert len(errors) == 1 and f"{db} is damaged" in errors[0], (args, r.stderr)

"""Helpers for the systemd tests: read unit files, run systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "carmic-watchd.service"
DROPIN = REPO / "systemd" / "nas-paths.conf"
MAX_EXPOSURE = 2.0


def entries(text: str) -> list[tuple[str, str, str]]:
    """``(section, key, value)`` for every assignment, in order (systemd allows repeats)."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def values(text: str, section: str, key: str) -> list[str]:
    return [v for s, k, v in entries(text) if s == section and k == key]


def systemd_analyze() -> str:
    """The path of systemd-analyze; the tests fail (not skip) without it: `make test` installs
    the Debian package `systemd`, and a missing tool must not pass for a verified unit."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: install the Debian package 'systemd' (make setup)")
    return path


def run_analyze(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def exposure(output: str) -> float:
    """The overall exposure from `systemd-analyze security` output."""
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no exposure line in:\n{output}"
    return float(match.group(1))


def stub_executable(directory: Path) -> Path:
    """An executable that stands in for /opt/carmic-watchd/bin/watchd (verify wants one)."""
    directory.mkdir(parents=True, exist_ok=True)
    stub = directory / "watchd"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return stub


def relocated_unit(dest_dir: Path, executable: Path) -> Path:
    """A copy of the unit whose ExecStart runs ``executable`` instead of the install path."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    text = UNIT.read_text().replace("/opt/carmic-watchd/bin/watchd", str(executable))
    path = dest_dir / UNIT.name
    path.write_text(text)
    return path

"""PyAV and the rest of the daemon's stack under the unit's seccomp restrictions.

The unit sets MemoryDenyWriteExecute=yes; FFmpeg builds with JIT code or text relocations
would die under it. CI has no systemd to start the unit with, so sandbox_probe.py loads the same
seccomp filters systemd would build from the unit's SystemCallFilter=, MemoryDenyWriteExecute=
and RestrictAddressFamilies= lines, proves they bite, and runs a workload. The namespace
settings (ProtectSystem=, PrivateTmp=, ...) are mounts, not syscall filters: they are covered
by systemd-analyze in test_unit.py and argued in docs/install.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.service.unitfile import REPO, UNIT, run_analyze, values

PROBE = Path(__file__).with_name("sandbox_probe.py")


@cache
def expand(group: str) -> frozenset[str]:
    """The syscalls in a systemd syscall group (nested groups expanded)."""
    if not group.startswith("@"):
        return frozenset({group})
    result = run_analyze("syscall-filter", "--no-pager", group)
    assert result.returncode == 0, result.stderr
    names: set[str] = set()
    for line in result.stdout.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= expand(item)
    return frozenset(names)


def allowed_syscalls(unit_text: str) -> set[str]:
    """SystemCallFilter= as systemd reads it: the first line sets an allow-list (or a deny-list
    with ~); later lines add to it, or with ~ take away from it."""
    lines = values(unit_text, "Service", "SystemCallFilter")
    assert lines and not lines[0].startswith("~"), "the unit should use an allow-list"
    allowed: set[str] = set()
    for line in lines:
        deny = line.startswith("~")
        for item in line.removeprefix("~").split():
            if deny:
                allowed -= expand(item)
            else:
                allowed |= expand(item)
    return allowed


def address_families(unit_text: str) -> list[int]:
    (line,) = values(unit_text, "Service", "RestrictAddressFamilies")
    return [int(getattr(socket, name)) for name in line.split()]


def test_the_unit_sets_what_the_probe_emulates() -> None:
    text = UNIT.read_text()
    assert values(text, "Service", "MemoryDenyWriteExecute") == ["yes"]
    assert values(text, "Service", "SystemCallErrorNumber") == ["EPERM"]
    assert set(address_families(text)) == {socket.AF_UNIX, socket.AF_INET, socket.AF_INET6}


def test_allow_list_expansion() -> None:
    allowed = allowed_syscalls(UNIT.read_text())
    assert {"read", "mmap", "inotify_add_watch", "socket", "clone3"} <= allowed
    assert not {"setuid", "sched_setaffinity", "acct", "mount", "reboot"} & allowed


def test_daemon_stack_runs_under_the_units_seccomp_filters(tmp_path: Path) -> None:
    text = UNIT.read_text()
    spec = {"allow": sorted(allowed_syscalls(text)), "families": address_families(text)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(PROBE), json.dumps(spec), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
        check=False,
    )
    if result.returncode == 3:
        pytest.skip(f"seccomp is not available here: {result.stderr.strip()}")
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    out = result.stdout
    for step in (
        "ok control: W+X mmap",
        "ok control: AF_NETLINK socket",
        "ok control: sched_setaffinity",
        "ok av ",
        "ok sqlite WAL",
        "ok inotify observer",
        "ok asyncio TCP",
        "ok httpx client",
        "ok sd_notify over AF_UNIX",
        "ok threads",
    ):
        assert step in out, f"missing {step!r} in:\n{out}"
